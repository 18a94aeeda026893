"""How sure a metric is: percentile bootstrap intervals, stratified, for any metric or the standard set at once.

Split out as its own module because resampling is a job of its own: which rows each resample takes
(:func:`bootstrap_indices`, also used by the clinical room's refit-in-every-resample intervals), how an interval
is read from the samples, and a vectorised path (:func:`bootstrap_report`) that evaluates every resample as
one matrix with the same formulas as :mod:`xraycore.metrics.classification`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from xraycore.metrics.classification import binary_report, confusion_counts, rates_from_counts
from xraycore.metrics.decision import is_positive
from xraycore.metrics.inputs import check_binary_labels, check_labels, check_scores
from xraycore.metrics.ranking import roc_auc


def bootstrap_indices(
    y_true: np.ndarray, n_resamples: int, seed: int, stratified: bool
) -> np.ndarray:
    """(n_resamples, n) row indices. Stratified resampling keeps each class's count fixed, so
    prevalence-dependent metrics (and AUROC) stay defined in every resample.

    Hand-written because scipy.stats.bootstrap has no stratified mode.
    """
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, y_true.size, size=(n_resamples, y_true.size))
    groups = [np.flatnonzero(y_true == label) for label in np.unique(y_true)]
    return np.concatenate(
        [group[rng.integers(0, group.size, size=(n_resamples, group.size))] for group in groups],
        axis=1,
    )


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The central ``confidence`` interval of the defined (non-NaN) samples; None when none is defined."""
    samples = np.asarray(samples, dtype=np.float64)
    if np.isnan(samples).all():
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def _with_interval(point: float | None, samples: np.ndarray, confidence: float) -> tuple[float, float, float] | None:
    interval = _percentile_interval(samples, confidence)
    return None if point is None or interval is None else (float(point), *interval)


def bootstrap_ci(
    y_true: Any,
    y_score: Any,
    metric: Callable[[np.ndarray, np.ndarray], float | None],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[float, float, float] | None:
    """(point, low, high): ``metric`` on all data and its percentile bootstrap interval.

    Works with any metric(y_true, y_score) but calls it once per resample; for the standard set
    :func:`bootstrap_report` is vectorised and much faster. Resamples where the metric is undefined
    (None or NaN) are ignored; None when it is undefined on all data or in every resample.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    truth = check_labels(y_true)
    scores = np.asarray(y_score)
    if scores.shape[0] != truth.size:
        raise ValueError("y_true and y_score differ in length")
    indices = bootstrap_indices(truth, n_resamples, seed, stratified)
    samples = np.array([metric(truth[rows], scores[rows]) for rows in indices], dtype=np.float64)  # None -> NaN
    point = metric(truth, scores)
    return _with_interval(None if point is None or np.isnan(point) else point, samples, confidence)


def _auroc_rows(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """AUROC of every row at once via the Mann-Whitney rank statistic (ties count one half)."""
    ranks = stats.rankdata(y_score, axis=1)
    n_pos = y_true.sum(axis=1)
    n_neg = y_true.shape[1] - n_pos
    rank_sum = np.sum(ranks * y_true, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auroc, np.nan)


def bootstrap_report(
    y_true: Any,
    y_score: Any,
    threshold: float,
    beta: float = 2.0,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> dict[str, tuple[float, float, float] | None]:
    """(point, low, high) for accuracy, precision, recall, specificity, f1, fbeta and auroc.

    All resamples are evaluated as one matrix; with the same seed the intervals equal
    :func:`bootstrap_ci` metric by metric. ``auroc`` is None when only one class is present.
    """
    truth = check_binary_labels(y_true)
    scores = check_scores(y_score, truth.size)
    indices = bootstrap_indices(truth, n_resamples, seed, stratified)
    sampled_truth, sampled_scores = truth[indices], scores[indices]

    point = rates_from_counts(*confusion_counts(truth, is_positive(scores, threshold)), beta)
    sampled = rates_from_counts(*confusion_counts(sampled_truth, is_positive(sampled_scores, threshold), axis=1), beta)
    names = ("accuracy", "precision", "recall", "specificity", "f1", "fbeta")
    report = {name: _with_interval(point[name], sampled[name], confidence) for name in names}
    auroc = roc_auc(truth, scores)
    report["auroc"] = None if auroc is None else _with_interval(auroc, _auroc_rows(sampled_truth, sampled_scores),
                                                                 confidence)
    return report


def report_with_ci(
    y_true: Any, y_score: Any, threshold: float, beta: float = 2.0, n_resamples: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], dict[str, tuple[float, float, float] | None]]:
    """(:func:`binary_report`, :func:`bootstrap_report`) at one operating point: the one place a report and
    its intervals are made together, so they always share threshold, beta and data."""
    return (binary_report(y_true, y_score, threshold, beta),
            bootstrap_report(y_true, y_score, threshold, beta, n_resamples=n_resamples, seed=seed,
                             confidence=confidence))
