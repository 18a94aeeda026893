"""Where a model's monitoring reference comes from, and how it is kept beside the model.

The reference is what the answering operating point was fitted on: the site profile's held-fold (cross-fitted)
films, kept in the profile itself (``sites/NAME/profile.json``: how the adapted networks score films they never
saw), or the site calibration's films, whose logits are written to ``monitoring_reference.json`` in the model
directory when the point is fitted (:func:`save_reference`), else internal validation (``val_predictions.csv``,
which every model directory carries). A plain JSON file of numbers, so a reading-room install (no torch, no
scipy) monitors without scoring anything again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xraycore.clinical import operating_points as operating
from xraycore.clinical import site_profiles
from xraycore.common.files import atomic_write_json, read_json_file
from xraycore.monitoring.reference import Reference
from xraycore.runs.predictions_csv import read_predictions_csv

REFERENCE_FILE = "monitoring_reference.json"
VALIDATION = "internal validation"


def save_reference(model_dir: str | Path, point: str, logits: Any, labels: Sequence[int], positive_index: int,
                   source: str, ood_flags: Sequence[bool] | None = None) -> None:
    """Keep the films a point was fitted on as its monitoring reference: (n, 2) logits or positive-minus-negative
    ones, labels as class indices; replaces that point's earlier reference, atomically."""
    scores = np.asarray(logits, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[:, positive_index] - scores[:, 1 - positive_index]
    path = Path(model_dir) / REFERENCE_FILE
    stored = read_json_file(path, {}) or {}
    points = dict(stored.get("points", {}))
    points[point] = {"source": source, "logits": [round(float(x), 6) for x in scores],
                     "labels": [int(label == positive_index) for label in labels],
                     "ood_rate": None if ood_flags is None else float(np.mean(ood_flags))}
    atomic_write_json(path, {"points": points})


def _validation(model_dir: Path, positive_class: str) -> tuple[np.ndarray, np.ndarray, str]:
    predictions = read_predictions_csv(model_dir / "val_predictions.csv")
    if predictions is None or predictions.get("logits") is None:
        raise ValueError(f"{model_dir.name} keeps no reference scores for monitoring: neither {REFERENCE_FILE} nor "
                         "val_predictions.csv with logits.")
    positive = list(predictions["class_names"]).index(positive_class)
    logits = np.asarray(predictions["logits"], dtype=np.float64)
    return (logits[:, positive] - logits[:, 1 - positive], (np.asarray(predictions["label"]) == positive).astype(int),
            VALIDATION)


def load_reference(model_dir: str | Path, reference: str | None = None, answering: str | None = None) -> Reference:
    """The reference of operating point ``reference`` (default: the point that answers), judged at the answering
    point's temperature and threshold; a point with no kept films falls back to internal validation.
    ValueError with one sentence when the model keeps no scores at all or names no such point."""
    model_dir = Path(model_dir)
    point = operating.get(model_dir, answering)
    positive_class = point.get("positive_class") or _positive_class(model_dir)
    name = point["name"] if reference is None else reference
    if reference is not None and reference != operating.INTERNAL and reference != VALIDATION:
        operating.get(model_dir, reference)  # ValueError naming the points it has
    kept = (read_json_file(model_dir / REFERENCE_FILE, {}) or {}).get("points", {}).get(name) \
        or _profile_reference(model_dir, name)
    if kept:
        logits, labels = np.asarray(kept["logits"], dtype=np.float64), np.asarray(kept["labels"], dtype=int)
        source, ood_rate = f"{name}: {kept.get('source', 'fitted films')}", kept.get("ood_rate")
    else:
        logits, labels, source = _validation(model_dir, positive_class)
        ood_rate = None
    return Reference(logits, labels, float(point.get("temperature", 1.0)), float(point.get("threshold", 0.5)),
                     positive_class, source, ood_rate)


def _positive_class(model_dir: Path) -> str:
    config = read_json_file(model_dir / "config.json", {}) or {}
    classes = list(config.get("class_names") or [])
    positive = config.get("positive_class")
    if positive in classes:
        return str(positive)
    if len(classes) == 2:
        return str(classes[1])
    raise ValueError(f"{model_dir.name} is not a two-class model: monitoring needs a positive class.")


def _profile_reference(model_dir: Path, name: str) -> dict[str, Any] | None:
    """A site profile's held-fold films as a kept reference (None when ``name`` is not a profile's point)."""
    if name in (operating.INTERNAL, VALIDATION) or name not in operating.names(model_dir):
        return None
    point = operating.get(model_dir, name)
    if not site_profiles.is_profile_point(point):
        return None
    profile = site_profiles.load_profile(model_dir, point["profile"])
    held = profile.get("held_out") or {}
    if not held.get("logits"):
        return None
    logits, positive = np.asarray(held["logits"], dtype=np.float64), int(held.get("positive_index", 1))
    scores = logits[:, positive] - logits[:, 1 - positive] if logits.ndim == 2 else logits
    scored = int(profile.get("n") or len(scores)) + int(profile.get("n_out_of_domain") or 0)
    return {"logits": scores.tolist(), "labels": [int(truth == positive) for truth in held["truth"]],
            "source": f"the {len(scores)} site films the profile was adapted on, cross-fitted",
            "ood_rate": int(profile.get("n_out_of_domain") or 0) / max(scored, 1)}
