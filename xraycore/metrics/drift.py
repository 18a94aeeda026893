"""Has the score distribution moved, and what accuracy should we expect without labels: PSI, normalised Wasserstein
distance and confidence-based performance estimation (CBPE), pure numpy.

Apart from :mod:`~xraycore.metrics.classification` because these compare two samples of scores (a reference and a
window of scored films) or estimate rates from probabilities alone, where every other metric needs labels. Numpy
only (no scipy): the reading-room install, which has neither scipy nor torch, monitors its own scored films too.

The limits follow Evidently: a population stability index over 0.1 is worth a look and over 0.2 is a shift; a
Wasserstein distance over 0.1 reference standard deviations likewise. CBPE follows NannyML: each film's calibrated
probability is the chance its call is right, so the mean over a window is the accuracy to expect. It assumes the
probabilities are still calibrated on the new films (calibration holds) and that the relation between image and
truth has not changed (no concept shift); an out-of-domain film breaks the first, which is why drift and the
out-of-domain rate are watched beside it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xraycore.metrics.decision import is_positive

PSI_BINS = 10
PSI_EPSILON = 1e-4  # the share given to an empty bin, so the log stays finite (Evidently uses the same order)
PSI_WARN, PSI_ALERT = 0.1, 0.2
WASSERSTEIN_ALERT = 0.1


def _sample(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def quantile_edges(reference: Any, bins: int = PSI_BINS) -> np.ndarray:
    """The ``bins - 1`` inner edges splitting ``reference`` into equal-count bins (the outer bins are open)."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    return np.quantile(_sample(reference, "reference"), np.linspace(0.0, 1.0, bins + 1)[1:-1])


def bin_shares(values: Any, edges: np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """The share of ``values`` in each bin of ``edges`` (right-closed, open ends), an empty bin given ``epsilon``."""
    counts = np.bincount(np.searchsorted(edges, _sample(values, "values"), side="left"), minlength=len(edges) + 1)
    shares = counts / counts.sum()
    shares = np.where(shares > 0, shares, epsilon)
    return shares / shares.sum()


def psi(reference: Any, current: Any, bins: int = PSI_BINS, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``current`` against ``reference`` over ``bins`` quantile bins of the reference.

    sum((current share - reference share) * ln(current share / reference share)); 0 when alike. Give it logits,
    not probabilities: probabilities pile up near 0 and 1, where quantile bins of the reference collapse.
    """
    edges = quantile_edges(reference, bins)
    expected, actual = bin_shares(reference, edges, epsilon), bin_shares(current, edges, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def wasserstein(reference: Any, current: Any) -> float:
    """The first Wasserstein (earth mover's) distance between the two samples, in reference standard deviations.

    Computed as the area between the two empirical distribution functions (what scipy.stats.wasserstein_distance
    computes), divided by the reference's standard deviation; a reference without spread divides by 1.
    """
    first, second = np.sort(_sample(reference, "reference")), np.sort(_sample(current, "current"))
    points = np.concatenate([first, second])
    points.sort(kind="mergesort")
    widths = np.diff(points)
    cdf_first = np.searchsorted(first, points[:-1], side="right") / first.size
    cdf_second = np.searchsorted(second, points[:-1], side="right") / second.size
    distance = float(np.sum(np.abs(cdf_first - cdf_second) * widths))
    spread = float(np.std(first))
    return distance / spread if spread > 0 else distance


def expected_rates(y_prob: Any, threshold: float) -> dict[str, float | None]:
    """CBPE: the accuracy, sensitivity and specificity to expect from calibrated positive-class probabilities.

    A film called positive (probability >= threshold) is right with probability p, one called negative with
    1 - p; expected true positives are the sum of p over positive calls, expected positives the sum of p, and so
    on. Valid while calibration holds and there is no concept shift (see the module docstring). None where a
    rate has no expected denominator (no expected positives, say).
    """
    probability = _sample(y_prob, "y_prob")
    if ((probability < 0) | (probability > 1)).any():
        raise ValueError("y_prob must lie in [0, 1]")
    called = is_positive(probability, threshold)
    expected_positive, expected_negative = probability.sum(), (1 - probability).sum()
    true_positive = probability[called].sum()
    true_negative = (1 - probability[~called]).sum()
    return {
        "expected_accuracy": float((true_positive + true_negative) / probability.size),
        "expected_sensitivity": float(true_positive / expected_positive) if expected_positive > 0 else None,
        "expected_specificity": float(true_negative / expected_negative) if expected_negative > 0 else None,
    }
