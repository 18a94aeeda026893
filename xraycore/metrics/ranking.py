"""Threshold-free metrics of a score's ranking: ROC and precision-recall curves, AUROC and AUPRC.

Split out as scikit-learn splits its ``_ranking`` module: these look at the order of the scores only, not at
a call, so they answer "how well does the model separate the classes" before any threshold is chosen.
Undefined areas (one class present) are None, as :mod:`xraycore.metrics.inputs` explains.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import metrics as skm

from xraycore.metrics.inputs import check_binary_labels, check_scores, has_both_classes


def roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as in sklearn; thresholds[0] is +inf (nothing called positive)."""
    truth = check_binary_labels(y_true)
    return skm.roc_curve(truth, check_scores(y_score, truth.size))


def pr_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as in sklearn; the last point (P=1, R=0) has no threshold."""
    truth = check_binary_labels(y_true)
    return skm.precision_recall_curve(truth, check_scores(y_score, truth.size))


def _ranking_area(sklearn_score: Callable[[np.ndarray, np.ndarray], float], y_true: Any,
                  y_score: Any) -> float | None:
    """A threshold-free sklearn score, None when only one class is present (undefined, not an error)."""
    truth = check_binary_labels(y_true)
    scores = check_scores(y_score, truth.size)
    if not has_both_classes(truth):
        return None
    return float(sklearn_score(truth, scores))


def roc_auc(y_true: Any, y_score: Any) -> float | None:
    """Area under the ROC curve; None when only one class is present (it is undefined then)."""
    return _ranking_area(skm.roc_auc_score, y_true, y_score)


def average_precision(y_true: Any, y_score: Any) -> float | None:
    """Area under the precision-recall curve (step-wise, as sklearn); None with one class only."""
    return _ranking_area(skm.average_precision_score, y_true, y_score)
