"""Named operating points of a model directory: which temperature and threshold make the call.

A model ships with the ``internal`` point its training chose on the validation split. A hospital
validates locally before go-live: ``calibrate`` fits temperature and threshold on its own labelled
sample and stores them as a named point beside the internal one; the Operating point page can save
a hand-picked one. Exactly one point is active: Diagnose, ``predict`` and ``evaluate`` use it unless
told otherwise, and say which one answered.

Storage: ``operating_points.json`` in the model directory ({"active", "points", "history"}), written
atomically. Without that file the model's ``operating_point.json`` is the internal point, so every
older run keeps working. ``operating_point.json`` itself is never rewritten here: it stays the
value the model was shipped with, which is what "reset to the shipped value" goes back to.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import access, audit, runs

POINTS_FILE = "operating_points.json"
INTERNAL = "internal"
MIN_SAMPLE_PER_CLASS = 50  # below this a site calibration's threshold and its CI are too loose to trust
NAME_MAX_LENGTH = 64


def is_positive(scores: float | np.ndarray, threshold: float) -> np.bool_ | np.ndarray:
    """The call at an operating point: positive when the score reaches the threshold (``score >= threshold``).

    The one rule for Diagnose, the worklist and every metric (numpy only: serving installs use it too).
    A score equal to the threshold is positive, so an F-beta threshold chosen at an observed score
    (metrics.best_fbeta_threshold) calls that very image positive, as its F-beta assumed.
    """
    return np.greater_equal(scores, threshold)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_name(name: str) -> str:
    name = str(name).strip()
    if not name or len(name) > NAME_MAX_LENGTH or not all(c.isalnum() or c in "-_. " for c in name):
        raise ValueError(f"An operating point name is 1-{NAME_MAX_LENGTH} letters, digits, spaces, '-', '_' or '.'.")
    return name


def load(model_dir: str | Path) -> dict[str, Any]:
    """{"active": name, "points": {name: point}, "history": [...]} of a model directory."""
    run = runs.Run(Path(model_dir))
    stored = run.read_json(POINTS_FILE, None)
    internal = {**run.read_json(runs.OPERATING_POINT_FILE, {}), "kind": "internal"}
    if not isinstance(stored, dict):
        return {"active": INTERNAL, "points": {INTERNAL: internal}, "history": []}
    points = dict(stored.get("points", {}))
    points[INTERNAL] = internal  # always the shipped value, never an edited copy
    active = stored.get("active") if stored.get("active") in points else INTERNAL
    return {"active": active, "points": points, "history": list(stored.get("history", []))}


def names(model_dir: str | Path) -> list[str]:
    """Operating point names, the internal one first."""
    return list(load(model_dir)["points"])


def active_name(model_dir: str | Path) -> str:
    return load(model_dir)["active"]


def get(model_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """The named (default: active) point, with its name under "name"."""
    state = load(model_dir)
    chosen = state["active"] if name is None else name
    if chosen not in state["points"]:
        raise ValueError(f"This model has no operating point named {chosen!r}; it has: {', '.join(state['points'])}.")
    return {**state["points"][chosen], "name": chosen}


def _write(model_dir: Path, state: dict[str, Any]) -> None:
    points = {k: v for k, v in state["points"].items() if k != INTERNAL}
    runs.atomic_write_json(model_dir / POINTS_FILE, {"active": state["active"], "points": points,
                                                    "history": state["history"]})


def _history_entry(action: str, name: str, old: dict | None, new: dict | None, user: str) -> dict[str, Any]:
    keep = ("threshold", "temperature", "beta")
    return {"time": _now(), "user": user, "action": action, "name": name,
            "old": {k: old.get(k) for k in keep} if old else None,
            "new": {k: new.get(k) for k in keep} if new else None}


def save(model_dir: str | Path, name: str, point: dict[str, Any], *, activate: bool = True,
         user: str | None = None, identity: access.Identity | None = None) -> dict[str, Any]:
    """Store ``point`` under ``name`` (never over the internal one) and optionally make it active.

    A shared clinical setting: ``identity`` must hold the admin permission (see :mod:`access`); the
    attempt, allowed or refused, is one audit line.
    """
    with audit.guarded("operating_point.save", identity, access.CHANGE_OPERATING_POINT,
                       model=audit.model_info(model_dir), operating_point=str(name)) as line:
        state_before = load(model_dir)
        stored = _save(model_dir, name, point, activate=activate, user=user or line.identity.user)
        line.note(old=_values(state_before["points"].get(stored["name"])), new=_values(stored),
                  detail=f"active: {state_before['active']} -> {load(model_dir)['active']}")
        return stored


def _save(model_dir: str | Path, name: str, point: dict[str, Any], *, activate: bool, user: str) -> dict[str, Any]:
    name = _check_name(name)
    if name == INTERNAL:
        raise ValueError("The internal operating point is the shipped value and cannot be overwritten; "
                         "save under another name.")
    model_dir = Path(model_dir)
    state = load(model_dir)
    for key in ("threshold", "temperature"):
        if key in point and not (np.isfinite(point[key]) and (point[key] > 0 or key == "threshold")):
            raise ValueError(f"{key} must be a finite positive number")
    if "threshold" in point and not 0.0 <= float(point["threshold"]) <= 1.0:
        raise ValueError("threshold must be between 0 and 1")
    internal = state["points"][INTERNAL]
    stored = {**{k: internal[k] for k in ("positive_class", "positive_index") if k in internal}, **point,
              "saved": _now(), "saved_by": user}
    state["history"].append(_history_entry("save", name, state["points"].get(name), stored, user))
    state["points"][name] = stored
    if activate:
        state["active"] = name
    _write(model_dir, state)
    return {**stored, "name": name}


def activate(model_dir: str | Path, name: str, *, user: str | None = None,
             identity: access.Identity | None = None) -> None:
    """Make ``name`` the point every reader's call uses (admin only; one audit line)."""
    _activate(model_dir, name, user, identity, "operating_point.activate")


def reset(model_dir: str | Path, *, user: str | None = None, identity: access.Identity | None = None) -> None:
    """Back to the shipped (internal) operating point; saved points are kept (admin only; one audit line)."""
    _activate(model_dir, INTERNAL, user, identity, "operating_point.reset")


def _activate(model_dir: str | Path, name: str, user: str | None, identity: access.Identity | None,
              action: str) -> None:
    with audit.guarded(action, identity, access.CHANGE_OPERATING_POINT, model=audit.model_info(model_dir),
                       operating_point=str(name)) as line:
        model_dir = Path(model_dir)
        state = load(model_dir)
        if name not in state["points"]:
            raise ValueError(f"This model has no operating point named {name!r}.")
        who = user or line.identity.user
        old = state["points"].get(state["active"])
        state["history"].append(_history_entry("activate", name, old, state["points"][name], who))
        line.note(old={"name": state["active"], **_values(old)}, new={"name": name, **_values(state["points"][name])})
        state["active"] = name
        _write(model_dir, state)


def save_threshold(model_dir: str | Path, *, identity: access.Identity | None = None, **fields: Any) -> None:
    """The Operating point page's Save: merge ``fields`` (threshold, beta, source) into the model's own
    operating_point.json. A shared clinical setting like :func:`save`: admin only, one audit line."""
    with audit.guarded("operating_point.save", identity, access.CHANGE_OPERATING_POINT,
                       model=audit.model_info(model_dir), operating_point=INTERNAL) as line:
        run = runs.Run(Path(model_dir))
        old = dict(run.operating_point)
        if "threshold" in fields and not 0.0 <= float(fields["threshold"]) <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        run.save_operating_point(**fields)
        line.note(old=_values(old), new=_values(run.operating_point))


def _values(point: dict[str, Any] | None) -> dict[str, Any]:
    """What an audit line keeps of a point: the numbers that make the call."""
    return {k: point.get(k) for k in ("threshold", "temperature", "beta") if k in point} if point else {}


# ------------------------------------------------------------------------------ site calibration


def fingerprint(content_digests: Sequence[str]) -> str:
    """One sha256 for a set of images, from their contents' sha256 (order and names do not matter)."""
    return hashlib.sha256("\n".join(sorted(content_digests)).encode()).hexdigest()


def fit_site_point(y_true: np.ndarray, logits: np.ndarray, positive_index: int, beta: float = 2.0) -> dict[str, Any]:
    """Temperature (NLL on the site's logits) and the F-beta-optimal threshold on the recalibrated
    probabilities. Pure: arrays in, point out."""
    y_true = np.asarray(y_true, dtype=int)
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.where(y_true == 1, positive_index, 1 - positive_index) if logits.shape[1] == 2 else None
    if labels is None:
        raise ValueError("site calibration needs a two-class model")
    from . import metrics  # lazy: scipy and scikit-learn, which a serving install (and Diagnose) never needs

    temperature = metrics.fit_temperature(logits, labels)
    probability = metrics.softmax(logits, temperature)[:, positive_index]
    threshold, _ = metrics.best_fbeta_threshold(y_true, probability, beta)
    return {"temperature": temperature, "threshold": threshold, "beta": beta}


def cross_fitted_rates(y_true: np.ndarray, logits: np.ndarray, positive_index: int, beta: float = 2.0,
                       groups: Sequence[str] | None = None, folds: int = 5, repeats: int = 10) -> dict[str, Any] | None:
    """What site calibration gives on patients it was not fitted on: a point fitted (:func:`fit_site_point`) on
    all folds but one of the sample (stratified; grouped by patient when ``groups`` says who is who) calls the
    fold left out, every fold in turn; the mean accuracy, sensitivity and specificity over ``repeats`` shuffles,
    with the accuracy's spread. The figures a calibration's own sample gives at its own point are optimistic;
    these are not. None when a class has fewer images than ``folds``. Pure: arrays in, rates out."""
    from sklearn.model_selection import StratifiedGroupKFold  # lazy, as in fit_site_point

    from . import metrics

    y_true = np.asarray(y_true, dtype=int)
    logits = np.asarray(logits, dtype=np.float64)
    if min(int(y_true.sum()), int((1 - y_true).sum())) < folds:
        return None
    groups = list(groups) if groups is not None else [str(i) for i in range(len(y_true))]
    each = []
    for seed in range(repeats):
        calls = np.zeros_like(y_true)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fit, held in splitter.split(logits, y_true, groups):
            point = fit_site_point(y_true[fit], logits[fit], positive_index, beta)
            probability = metrics.softmax(logits[held], point["temperature"])[:, positive_index]
            calls[held] = is_positive(probability, point["threshold"])
        tp, tn = int(((calls == 1) & (y_true == 1)).sum()), int(((calls == 0) & (y_true == 0)).sum())
        each.append((float((tp + tn) / y_true.size), tp / int(y_true.sum()), tn / int((1 - y_true).sum())))
    accuracy, sensitivity, specificity = (float(np.mean(column)) for column in zip(*each))
    return {"accuracy": accuracy, "sensitivity": sensitivity, "specificity": specificity,
            "accuracy_sd": float(np.std([row[0] for row in each])), "folds": folds, "repeats": repeats}


def describe_cross_fit(crossed: dict[str, Any] | None) -> str:
    """:func:`cross_fitted_rates` as the sentence the CLI prints and the Operating point page shows."""
    if not crossed:
        return "Too few images per class for an estimate on patients the point was not fitted on."
    return (f"On patients it was not fitted on (fitted on {crossed['folds'] - 1}/{crossed['folds']} of the sample, "
            f"measured on the rest, mean of {crossed['repeats']} shuffles): accuracy {crossed['accuracy']:.3f} "
            f"± {crossed['accuracy_sd']:.3f}, sensitivity {crossed['sensitivity']:.3f}, specificity "
            f"{crossed['specificity']:.3f}.")


def sample_warning(n_positive: int, n_negative: int) -> str | None:
    """A plain sentence when the sample is too small for the threshold it implies, else None."""
    smallest = min(n_positive, n_negative)
    if smallest >= MIN_SAMPLE_PER_CLASS:
        return None
    return (f"Only {smallest} images of the smaller class: the threshold and the sensitivity/specificity it "
            f"implies are uncertain (95% intervals several points wide). Use at least {MIN_SAMPLE_PER_CLASS} "
            "images of each class.")
