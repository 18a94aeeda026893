"""From logits to a call: the softmax and the one threshold rule, numpy only.

These two are the decision every part of the product shares: training's validation report, the metrics,
site calibration, the Predictor behind Diagnose and ``predict``, and the worklist. They live in a module of
their own, apart from :mod:`~xraycore.metrics.classification` (scikit-learn) and
:mod:`~xraycore.metrics.calibration` (scipy), because the reading-room install (``requirements-serve.txt``,
held by ``tests/inference/test_serving_install.py``) has neither scipy nor scikit-learn, and its Predictor
must still turn logits into the same probabilities and calls as the full install: one implementation each,
importable everywhere.
"""
from __future__ import annotations

import numpy as np


def is_positive(scores: float | np.ndarray, threshold: float) -> np.bool_ | np.ndarray:
    """The call at an operating point: positive when the score reaches the threshold (``score >= threshold``).

    The one rule for Diagnose, the worklist and every metric (numpy only: serving installs use it too).
    A score equal to the threshold is positive, so an F-beta threshold chosen at an observed score
    (:func:`~xraycore.metrics.classification.best_fbeta_threshold`) calls that very image positive, as its
    F-beta assumed.
    """
    return np.greater_equal(scores, threshold)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of ``logits / temperature``, numerically stable (the maximum is subtracted).

    Written with numpy rather than ``scipy.special.softmax`` so that the serving install computes it too.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    exponentials = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
