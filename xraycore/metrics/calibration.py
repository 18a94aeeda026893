"""Whether the probabilities mean what they say: reliability bins, expected calibration error, temperature.

Split out as scikit-learn keeps ``calibration`` apart from its metrics: these judge and fix the probability
itself (temperature scaling: softmax(logits / T) with T fitted on held-out logits), not the call made from it.
The softmax itself is :func:`xraycore.metrics.decision.softmax` (numpy only, so serving installs share it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import optimize, special

from xraycore.metrics.inputs import check_binary_labels, check_labels, check_probability_matrix, check_scores

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Range searched by :func:`fit_temperature`; beyond it a model is broken, not miscalibrated."""


def _confidence_and_outcome(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binary: (P(positive), label). Multi-class (n, k) probs: (top probability, was it right)."""
    truth = check_labels(y_true)
    probs = np.asarray(y_prob, dtype=np.float64)
    if probs.ndim == 2:
        probs = check_probability_matrix(probs, truth.size, probs.shape[1])
        return probs.max(axis=1), (probs.argmax(axis=1) == truth).astype(np.float64)
    return check_scores(probs, truth.size, "y_prob"), check_binary_labels(truth).astype(np.float64)


def reliability_bins(y_true: Any, y_prob: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins over [0, 1]: edges, mean_predicted, observed_frequency and count.

    Bins are (left, right] with 0.0 in the first, matching sklearn.calibration.calibration_curve;
    empty bins hold NaN means and count 0 (sklearn drops them, a plot wants fixed positions).
    A 2-D ``y_prob`` is read as multi-class: top-label confidence against accuracy.
    """
    confidence, outcome = _confidence_and_outcome(y_true, y_prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bin_of, minlength=n_bins)
    predicted_sum = np.bincount(bin_of, weights=confidence, minlength=n_bins)
    observed_sum = np.bincount(bin_of, weights=outcome, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_predicted = np.where(count > 0, predicted_sum / count, np.nan)
        observed_frequency = np.where(count > 0, observed_sum / count, np.nan)
    return {
        "edges": edges,
        "mean_predicted": mean_predicted,
        "observed_frequency": observed_frequency,
        "count": count,
    }


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 10) -> float:
    """Count-weighted mean |observed frequency - mean predicted| over the reliability bins."""
    bins = reliability_bins(y_true, y_prob, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["observed_frequency"][filled] - bins["mean_predicted"][filled])
    return float(np.sum(gaps * bins["count"][filled]) / bins["count"].sum())


def temperature_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / T): what
    :func:`fit_temperature` minimises, and what a caller compares to tell a fit stopped at a search bound."""
    log_probs = special.log_softmax(logits / temperature, axis=1)
    return float(-np.mean(log_probs[np.arange(y_true.size), y_true]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) on held-out data.

    Searched over log T within :data:`TEMPERATURE_BOUNDS` (scipy's bounded scalar minimiser).
    T > 1 softens an overconfident model; the arg-max call never changes. Needs (n, k) logits,
    k >= 2 (a binary model gives two logits).
    """
    truth = check_labels(y_true)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != truth.size or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape ({truth.size}, k>=2), got {logits.shape}")
    if truth.min() < 0 or truth.max() >= logits.shape[1]:
        raise ValueError("y_true holds a class index outside the logits' columns")
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(
        lambda log_t: temperature_nll(logits, truth, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
