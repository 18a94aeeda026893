"""What a stream of scored films is compared with: the scores the active operating point was fitted on.

A Reference holds those films' logits (positive minus negative, before the temperature, as the store keeps
them), their labels where known, and the point's temperature and threshold, so the reference's positive rate
and its score distribution among positives and negatives are computed the way the stream's are. Where it comes
from, and how it is kept beside the model so a reading-room install (no torch) can monitor, is
:mod:`xraycore.monitoring.reference_files`; this module is the plain numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraycore.metrics import drift
from xraycore.metrics.decision import is_positive


@dataclass(frozen=True)
class Reference:
    """The reference films' scores; ``labels`` 1 for the positive class, 0 otherwise, None when unknown."""

    logits: np.ndarray
    labels: np.ndarray | None
    temperature: float
    threshold: float
    positive_class: str
    source: str  # in words: "site profile kermany-site (held-fold films)", "internal validation", ...
    ood_rate: float | None = None

    def __post_init__(self) -> None:
        if np.asarray(self.logits).size < 20:
            raise ValueError(f"The reference ({self.source}) holds {np.asarray(self.logits).size} films: at least 20 "
                             "are needed to compare a distribution with it.")

    @property
    def probabilities(self) -> np.ndarray:
        return probability_of(self.logits, self.temperature)

    @property
    def positive_rate(self) -> float:
        return float(np.mean(is_positive(self.probabilities, self.threshold)))

    @property
    def edges(self) -> np.ndarray:
        return drift.quantile_edges(self.logits)

    def class_shares(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The share of the reference's negatives and of its positives in each PSI bin (None without labels)."""
        if self.labels is None or not 0 < int(np.sum(self.labels)) < self.labels.size:
            return None
        labels = np.asarray(self.labels, dtype=bool)
        return (drift.bin_shares(self.logits[~labels], self.edges), drift.bin_shares(self.logits[labels], self.edges))


def probability_of(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The calibrated positive-class probability of positive-minus-negative logits: the two-class softmax."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))
