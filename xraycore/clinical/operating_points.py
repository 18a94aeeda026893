"""Named operating points of a model directory: which temperature and threshold make the call.

A model ships with the ``internal`` point its training chose on the validation split. A hospital
validates locally before go-live: ``calibrate`` fits temperature and threshold on its own labelled
sample and stores them as a named point beside the internal one; the Operating point page can save
a hand-picked one. Exactly one point is active: Diagnose, ``predict`` and ``evaluate`` use it unless
told otherwise, and say which one answered.

Storage: ``operating_points.json`` in the model directory ({"active", "points", "history"}), written
atomically. Without that file the model's ``operating_point.json`` is the internal point, so every
older run keeps working. ``operating_point.json`` itself is never rewritten here.

The *shipped* point is the one that was active when the model directory shipped: ``shipped_active`` in
``operating_points.json``, written when a bundle is made (:func:`mark_shipped`). A directory without it
records, at its first change, the point active before that change (until then what lies there is what
shipped); without a points file it is ``internal``. "Reset" makes the shipped point active again, with its
threshold and temperature: no point may be saved under its name, so its values cannot drift.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.runs import directory as runs
from xraycore.metrics.decision import is_positive, softmax  # numpy only: the serving install loads this module
from xraycore.common.files import atomic_write_json
from xraycore.common.timestamps import utc_timestamp
from xraycore.clinical import site_profiles
from xraycore.clinical.site_profiles import PROFILE_KIND

POINTS_FILE = "operating_points.json"
INTERNAL = "internal"
SHIPPED_KEY = "shipped_active"
SITE_KIND = "site calibration"
MIN_SAMPLE_PER_CLASS = 50  # below this a site calibration's threshold and its CI are too loose to trust
NAME_MAX_LENGTH = 64




def _check_name(name: str) -> str:
    name = str(name).strip()
    if not name or len(name) > NAME_MAX_LENGTH or not all(c.isalnum() or c in "-_. " for c in name):
        raise ValueError(f"An operating point name is 1-{NAME_MAX_LENGTH} letters, digits, spaces, '-', '_' or '.'.")
    return name


def load(model_dir: str | Path) -> dict[str, Any]:
    """{"active", "shipped", "points": {name: point}, "history": [...]} of a model directory."""
    run = runs.Run(Path(model_dir))
    stored = run.read_json(POINTS_FILE, None)
    internal = {**run.read_json(runs.OPERATING_POINT_FILE, {}), "kind": "internal"}
    if not isinstance(stored, dict):
        return {"active": INTERNAL, "shipped": INTERNAL, "points": {INTERNAL: internal}, "history": []}
    points = dict(stored.get("points", {}))
    points[INTERNAL] = internal  # always the shipped value, never an edited copy
    active = stored.get("active") if stored.get("active") in points else INTERNAL
    named = stored.get(SHIPPED_KEY)
    shipped = named if named in points else active if named is None else INTERNAL
    return {"active": active, "shipped": shipped, "points": points, "history": list(stored.get("history", []))}


def names(model_dir: str | Path) -> list[str]:
    """Operating point names, the internal one first."""
    return list(load(model_dir)["points"])


def active_name(model_dir: str | Path) -> str:
    return load(model_dir)["active"]


def shipped_name(model_dir: str | Path) -> str:
    """The point that was active when the model directory shipped: what :func:`reset` restores."""
    return load(model_dir)["shipped"]


def get(model_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """The named (default: active) point, with its name under "name"."""
    state = load(model_dir)
    chosen = state["active"] if name is None else name
    if chosen not in state["points"]:
        raise ValueError(f"This model has no operating point named {chosen!r}; it has: {', '.join(state['points'])}.")
    return {**state["points"][chosen], "name": chosen}


def _write(model_dir: Path, state: dict[str, Any]) -> None:
    points = {k: v for k, v in state["points"].items() if k != INTERNAL}
    atomic_write_json(model_dir / POINTS_FILE, {"active": state["active"], SHIPPED_KEY: state["shipped"],
                                               "points": points, "history": state["history"]})


def _named(name: str | None, point: dict[str, Any] | None) -> dict[str, Any]:
    """A point as the audit line and the history keep it: its name and the numbers that make the call."""
    return {"name": name, **_values(point)}


def _history_entry(action: str, name: str, old: dict, new: dict, user: str) -> dict[str, Any]:
    """``old`` and ``new``: the point in use before and after the change (:func:`_named`)."""
    return {"time": utc_timestamp(), "user": user, "action": action, "name": name, "old": old, "new": new}


def mark_shipped(model_dir: str | Path, *, identity: access.Identity | None = None) -> str:
    """Record the active point as the shipped one, what :func:`reset` restores (a bundle is marked when made;
    a bundle calibrated before it ships is marked again). Admin only, one audit line. Returns its name."""
    with access.guarded("operating_point.mark_shipped", identity, access.CHANGE_OPERATING_POINT,
                       model=audit.model_info(model_dir)) as line:
        model_dir = Path(model_dir)
        state = load(model_dir)
        line.note(old={"name": state["shipped"]}, new={"name": state["active"]})
        state["shipped"] = state["active"]
        _write(model_dir, state)
        return state["shipped"]


def save(model_dir: str | Path, name: str, point: dict[str, Any], *, activate: bool = True,
         user: str | None = None, identity: access.Identity | None = None) -> dict[str, Any]:
    """Store ``point`` under ``name`` (never over the internal or the shipped one) and optionally make it active.

    A shared clinical setting: ``identity`` must hold the admin permission (see :mod:`access`); the
    attempt, allowed or refused, is one audit line, whose ``old`` is the point in use before.
    """
    with access.guarded("operating_point.save", identity, access.CHANGE_OPERATING_POINT,
                       model=audit.model_info(model_dir), operating_point=str(name)) as line:
        return _save(model_dir, name, point, activate=activate, user=user or line.identity.user, line=line)


def _save(model_dir: str | Path, name: str, point: dict[str, Any], *, activate: bool, user: str,
          line: Any = None) -> dict[str, Any]:
    name = _check_name(name)
    model_dir = Path(model_dir)
    state = load(model_dir)
    if name in (INTERNAL, state["shipped"]):
        raise ValueError(f"{name!r} is a point this model shipped with and cannot be overwritten; "
                         "save under another name.")
    for key in ("threshold", "temperature"):
        if key in point and not (np.isfinite(point[key]) and (point[key] > 0 or key == "threshold")):
            raise ValueError(f"{key} must be a finite positive number")
    if "threshold" in point and not 0.0 <= float(point["threshold"]) <= 1.0:
        raise ValueError("threshold must be between 0 and 1")
    internal = state["points"][INTERNAL]
    stored = {**{k: internal[k] for k in ("positive_class", "positive_index") if k in internal}, **point,
              "saved": utc_timestamp(), "saved_by": user}
    if refusal := site_refusal(stored):
        raise ValueError(refusal)
    before = state["active"]
    old, replaced = _named(before, state["points"][before]), state["points"].get(name)
    state["history"].append({**_history_entry("save", name, old, _named(name, stored), user),
                             **({"replaced": _values(replaced)} if replaced else {})})
    state["points"][name] = stored
    if activate:
        state["active"] = name
    _write(model_dir, state)
    if line is not None:
        line.note(old=old, new=_named(name, stored), detail=f"active: {before} -> {state['active']}")
    return {**stored, "name": name}


def activate(model_dir: str | Path, name: str, *, user: str | None = None,
             identity: access.Identity | None = None) -> None:
    """Make ``name`` the point every reader's call uses (admin only; one audit line)."""
    _activate(model_dir, name, user, identity, "operating_point.activate")


def reset(model_dir: str | Path, *, user: str | None = None, identity: access.Identity | None = None) -> str:
    """Back to the shipped point (:func:`shipped_name`), with its threshold and temperature; saved points are
    kept (admin only; one audit line). Returns its name."""
    shipped = shipped_name(model_dir)
    _activate(model_dir, shipped, user, identity, "operating_point.reset")
    return shipped


def _activate(model_dir: str | Path, name: str, user: str | None, identity: access.Identity | None,
              action: str) -> None:
    with access.guarded(action, identity, access.CHANGE_OPERATING_POINT, model=audit.model_info(model_dir),
                       operating_point=str(name)) as line:
        model_dir = Path(model_dir)
        state = load(model_dir)
        if name not in state["points"]:
            raise ValueError(f"This model has no operating point named {name!r}.")
        if name != state["shipped"] and (refusal := site_refusal(state["points"][name])):
            raise ValueError(refusal)
        if site_profiles.is_profile_point(state["points"][name]):  # its weights must be there to answer
            site_profiles.load_profile(model_dir, state["points"][name]["profile"])
        who = user or line.identity.user
        old, new = _named(state["active"], state["points"][state["active"]]), _named(name, state["points"][name])
        state["history"].append(_history_entry("activate", name, old, new, who))
        line.note(old=old, new=new)
        state["active"] = name
        _write(model_dir, state)


def rename(model_dir: str | Path, old_name: str, new_name: str, *, identity: access.Identity | None = None) -> None:
    """Give a saved point another name, keeping its values, whether it is active or shipped, and the history (one
    "rename" entry added). Admin only, one audit line. The internal point keeps its name."""
    with access.guarded("operating_point.rename", identity, access.CHANGE_OPERATING_POINT,
                       model=audit.model_info(model_dir), operating_point=str(old_name)) as line:
        model_dir, new_name = Path(model_dir), _check_name(new_name)
        state = load(model_dir)
        if old_name == INTERNAL or old_name not in state["points"]:
            raise ValueError(f"This model has no saved operating point named {old_name!r} that can be renamed.")
        if new_name in state["points"]:
            raise ValueError(f"This model already has an operating point named {new_name!r}.")
        state["points"] = {new_name if key == old_name else key: value for key, value in state["points"].items()}
        state["active"] = new_name if state["active"] == old_name else state["active"]
        state["shipped"] = new_name if state["shipped"] == old_name else state["shipped"]
        values = _named(new_name, state["points"][new_name])
        state["history"].append({**_history_entry("rename", new_name, {**values, "name": old_name}, values,
                                                  line.identity.user)})
        line.note(old={"name": old_name}, new={"name": new_name})
        _write(model_dir, state)


def remove(model_dir: str | Path, name: str, *, identity: access.Identity | None = None) -> None:
    """Retire a saved point or site profile nobody uses: its entry goes, and a profile's folder of changed weights
    with it when no other point names that profile. Never the internal, the active or the shipped point. The history
    keeps a "remove" entry with the removed values (the point in use is unchanged, so roll back ignores it). Admin
    only, one audit line."""
    with access.guarded("operating_point.remove", identity, access.CHANGE_OPERATING_POINT,
                       model=audit.model_info(model_dir), operating_point=str(name)) as line:
        model_dir = Path(model_dir)
        state = load(model_dir)
        if name not in state["points"]:
            raise ValueError(f"This model has no operating point named {name!r}.")
        if name in (INTERNAL, state["shipped"]):
            raise ValueError(f"{name!r} is a point this model shipped with and cannot be removed.")
        if name == state["active"]:
            raise ValueError(f"{name!r} is in use; activate another point before removing it.")
        removed = state["points"].pop(name)
        in_use = _named(state["active"], state["points"][state["active"]])
        state["history"].append({**_history_entry("remove", name, in_use, in_use, line.identity.user),
                                 "removed": _values(removed)})
        line.note(old=_named(name, removed), new={"name": None})
        _write(model_dir, state)  # first: a kill before the folder goes leaves a folder no point names
        profile = removed.get("profile") if site_profiles.is_profile_point(removed) else None
        if profile and not any(point.get("profile") == profile for point in state["points"].values()):
            shutil.rmtree(site_profiles.profile_dir(model_dir, profile), ignore_errors=True)


def save_threshold(model_dir: str | Path, *, identity: access.Identity | None = None, **fields: Any) -> None:
    """The Operating point page's Save: merge ``fields`` (threshold, beta, source) into the model's own
    operating_point.json. A shared clinical setting like :func:`save`: admin only, one audit line."""
    with access.guarded("operating_point.save", identity, access.CHANGE_OPERATING_POINT,
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
    # lazy: scipy and scikit-learn, which a serving install (and Diagnose) never needs
    from xraycore.metrics.calibration import fit_temperature
    from xraycore.metrics.classification import best_fbeta_threshold

    temperature = fit_temperature(logits, labels)
    probability = softmax(logits, temperature)[:, positive_index]
    threshold, _ = best_fbeta_threshold(y_true, probability, beta)
    return {"temperature": temperature, "threshold": threshold, "beta": beta}


def cross_fitted_rates(y_true: np.ndarray, logits: np.ndarray, positive_index: int, beta: float = 2.0,
                       groups: Sequence[str] | None = None, folds: int = 5, repeats: int = 10) -> dict[str, Any] | None:
    """What site calibration gives on patients it was not fitted on: a point fitted (:func:`fit_site_point`) on
    all folds but one of the sample (stratified; grouped by patient when ``groups`` says who is who) calls the
    fold left out, every fold in turn; the mean accuracy, sensitivity and specificity over ``repeats`` shuffles,
    with the accuracy's spread. The figures a calibration's own sample gives at its own point are optimistic;
    these are not. None when a class has fewer images than ``folds``. Pure: arrays in, rates out."""
    from sklearn.model_selection import StratifiedGroupKFold  # lazy, as in fit_site_point

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
            probability = softmax(logits[held], point["temperature"])[:, positive_index]
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
    """A plain sentence when the sample is too small for a site calibration to be saved, else None."""
    smallest = min(n_positive, n_negative)
    if smallest >= MIN_SAMPLE_PER_CLASS:
        return None
    return (f"Only {smallest} images of the smaller class: this fit is a preview only (its threshold and the "
            f"sensitivity/specificity it implies are too uncertain); saving or activating a site calibration "
            f"needs at least {MIN_SAMPLE_PER_CLASS} images of each class.")


def temperature_at_bound(point: dict[str, Any]) -> bool:
    """Whether a fitted temperature ran into an end of the interval it was searched in: as the fit recorded it
    (``temperature_at_bound``: the likelihood no better inside than at the bound, often perfectly separated films
    whose scores saturate), or lying within 1% of a recorded bound (``temperature_bounds``)."""
    bounds, temperature = point.get("temperature_bounds") or (), point.get("temperature")
    near = temperature is not None and any(abs(np.log(float(temperature)) - np.log(float(bound))) < 0.01
                                           for bound in bounds)
    return bool(point.get("temperature_at_bound")) or near


def site_refusal(point: dict[str, Any]) -> str | None:
    """Why a site calibration or site profile may not be saved or activated (a preview only), in one sentence;
    None for any other point or a sound one. Checked by :func:`save` and :func:`activate` themselves, whoever
    calls them."""
    if point.get("kind") == PROFILE_KIND and (refusal := site_profiles.profile_refusal(point)):
        return refusal
    if point.get("kind") not in (SITE_KIND, PROFILE_KIND):
        return None
    counts = point.get("n_positive"), point.get("n_negative")
    if not all(isinstance(count, int) for count in counts):
        return "This site calibration does not record how many films of each class it was fitted on."
    if warning := sample_warning(*counts):
        return warning
    return fit_failure(point)


def fit_failure(point: dict[str, Any]) -> str | None:
    """The sentence that says a site calibration's fit failed (:func:`temperature_at_bound`), else None."""
    if temperature_at_bound(point):
        searched = " to ".join(f"{bound:g}" for bound in point.get("temperature_bounds") or ())
        return (f"The fit failed: its temperature ({point['temperature']:.3f}) ran into an end of its search range"
                f"{' (' + searched + ')' if searched else ''}: the scores saturate (as when every film is called "
                "right) or barely tell the classes apart, so its threshold means nothing; it cannot be saved.")
    return None
