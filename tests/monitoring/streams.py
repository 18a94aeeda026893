"""Simulated streams of scored films for the monitoring tests: synthetic logits, never real films.

The model's logit x of a film of class y is normal around -2 (normal) or +2 (pneumonia) with sd 1.4, so the
calibrated probability is sigmoid(x / T) with T = 1.4**2 / 4 at equal prevalence.
"""
from __future__ import annotations

import numpy as np

from xraycore.monitoring.figures import ScoredColumns
from xraycore.monitoring.reference import Reference

MEAN, SD = 2.0, 1.4
TEMPERATURE = SD ** 2 / (2 * MEAN)
START = 1_780_000_000.0  # seconds since the epoch


def logits_of(labels: np.ndarray, rng: np.random.Generator, shift: float = 0.0, spread: float = 1.0) -> np.ndarray:
    return np.where(labels == 1, MEAN, -MEAN) + shift + rng.normal(0, SD * spread, labels.size)


def reference(rng: np.random.Generator, n: int = 400) -> Reference:
    labels = (rng.random(n) < 0.5).astype(int)
    return Reference(logits_of(labels, rng), labels, TEMPERATURE, 0.5, "PNEUMONIA", "simulated validation", 0.02)


def stream(labels: np.ndarray, logits: np.ndarray, ood: np.ndarray, start: float = START) -> tuple[ScoredColumns, dict]:
    """Columns of films scored one a minute, and truth by film (every film read)."""
    probability = 1 / (1 + np.exp(-logits / TEMPERATURE))
    films = np.array([f"film{start:.0f}-{i}" for i in range(labels.size)], dtype=object)
    columns = ScoredColumns(created=start + 60.0 * np.arange(labels.size), logit=logits, probability=probability,
                            called=np.ones(labels.size, bool), positive=probability >= 0.5, ood_flag=ood,
                            guard=np.zeros(labels.size, bool), film=films)
    return columns, dict(zip(films, labels.tolist()))


def concatenate(first: ScoredColumns, second: ScoredColumns) -> ScoredColumns:
    return ScoredColumns(*(np.concatenate([getattr(first, name), getattr(second, name)])
                           for name in ("created", "logit", "probability", "called", "positive", "ood_flag", "guard",
                                        "film")))
