"""Agreement between two readers of the same films: Cohen's kappa, numpy only.

For the reads statistics (issue 29): how far two radiologists agree beyond chance. Equal to
``sklearn.metrics.cohen_kappa_score`` without weights (the test holds it to that); NaN where chance
agreement is total (both readers gave one and the same label to every film), where kappa is undefined.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two equally long label sequences (any hashable labels)."""
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError("the two readers' labels must be equally long")
    if not first:
        return float("nan")
    labels = sorted(set(first) | set(second), key=str)
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)), dtype=np.float64)
    np.add.at(table, ([index[a] for a in first], [index[b] for b in second]), 1.0)
    total = table.sum()
    observed = np.trace(table) / total
    expected = float(table.sum(axis=1) @ table.sum(axis=0)) / total ** 2
    if expected >= 1.0:
        return float("nan")
    return float((observed - expected) / (1.0 - expected))
