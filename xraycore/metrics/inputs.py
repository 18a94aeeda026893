"""The conventions every metric follows, and the input checks that hold them: labels, scores, probabilities.

A module of its own so that classification, ranking, calibration and bootstrap refuse the same bad input with
the same sentence, and none of them reaches into another's private helpers.

Conventions (scikit-learn style): ``y_true`` holds integer labels, ``y_pred`` hard predictions,
``y_score`` / ``y_prob`` a score for the positive class (label 1) or, for multi-class functions,
an ``(n, n_classes)`` probability matrix. A score counts as positive when it reaches the threshold
(:func:`xraycore.metrics.decision.is_positive`, the one rule Diagnose, the worklist and every metric share).

Undefined values, one rule for every public metric function:

* A ratio of confusion counts whose denominator is zero (precision when nothing is called positive,
  PPV/NPV at another prevalence, ...) is 0.0, scikit-learn's ``zero_division=0``: sweeps and bootstrap
  resamples stay plain float arrays, and ``predictive_values`` at the validation prevalence equals
  ``binary_report``'s precision and NPV even then.
* A value that does not exist for the data (AUROC or AUPRC, or their interval, with one class present;
  a macro AUROC without any defined class) is None, never NaN: reports are written as JSON, where None
  is ``null`` and NaN is not JSON at all (``json.dumps`` writes a bare ``NaN`` that strict readers and
  browsers refuse); every caller already shows None as "n/a" or a dash, and formatting it with ``:.3f``
  fails loudly instead of printing "nan" into a model card.
* Inside arrays (threshold sweeps, reliability bins, bootstrap samples) a missing entry is NaN, the only
  float that can stand for it; plots draw it as a gap.

Nothing in ``xraycore.metrics`` keeps state, reads files or imports torch, so the app, the trainer and the
CLI all get identical numbers from the same arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def check_labels(y: Any, name: str = "y_true") -> np.ndarray:
    """Integer label vector; refuses anything that is not 1-D or not whole numbers."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype.kind == "f" and not np.all(array == np.round(array)):
        raise ValueError(f"{name} must hold integer labels")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array.astype(np.int64)


def check_binary_labels(y: Any, name: str = "y_true") -> np.ndarray:
    """:func:`check_labels`, and only 0 and 1 in it."""
    array = check_labels(y, name)
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must only contain 0 and 1")
    return array


def check_scores(y_score: Any, n: int, name: str = "y_score") -> np.ndarray:
    """A float vector of ``n`` finite scores."""
    array = np.asarray(y_score, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_label_pair(y_true: Any, y_pred: Any, binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checked (truth, prediction) label vectors of equal length; 0/1 only when ``binary``."""
    check = check_binary_labels if binary else check_labels
    truth = check(y_true)
    pred = check(y_pred, "y_pred")
    if pred.shape != truth.shape:
        raise ValueError(f"y_true and y_pred differ in length: {truth.size} vs {pred.size}")
    return truth, pred


def check_probability_matrix(probs: Any, n: int, n_classes: int) -> np.ndarray:
    """A float ``(n, n_classes)`` matrix of class probabilities."""
    array = np.asarray(probs, dtype=np.float64)
    if array.shape != (n, n_classes):
        raise ValueError(f"probs must have shape ({n}, {n_classes}), got {array.shape}")
    return array


def has_both_classes(y_true: np.ndarray) -> bool:
    """Whether a 0/1 label vector holds at least one of each class (ranking metrics need both)."""
    return bool(0 < y_true.sum() < y_true.size)
