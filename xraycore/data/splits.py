"""Train / validation splits that never share a patient, k folds, class weights, minority growth, subsets.

scikit-learn is imported only when folds are dealt (serving never splits data).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from xraycore.data.folders import Sample


def _labels_and_groups(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.label for s in samples]), np.array([s.patient for s in samples])


def _stratified_group_folds(samples: Sequence[Sample], k: int, seed: int) -> list[np.ndarray]:
    """Validation indices of k folds, stratified by label and grouped by patient."""
    labels, groups = _labels_and_groups(samples)
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: serving never splits data

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [val for _, val in splitter.split(np.zeros(len(samples)), labels, groups)]


def split_by_ratio(samples: Sequence[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, val) with about `val_fraction` of the samples in val, stratified and patient-grouped.

    val_fraction is written as a fraction n/k with k <= 20 (0.2 = 1/5, 0.3 = 3/10, 0.15 = 3/20); the
    samples are dealt into k stratified, patient-grouped folds and n of them form the validation side.
    The fewest folds that express the fraction keep this fast on large sets.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    n_patients = len({s.patient for s in samples})
    if n_patients < 2:
        raise ValueError("a split needs samples from at least two patients")
    largest_class = max(Counter(s.label for s in samples).values())
    max_folds = min(20, n_patients, largest_class)  # StratifiedGroupKFold's limits
    fraction = Fraction(val_fraction).limit_denominator(max_folds)
    if not 0 < fraction < 1:  # too close to 0 or 1 for max_folds: take the nearest reachable fraction
        fraction = Fraction(1 if fraction == 0 else max_folds - 1, max_folds)
    folds = _stratified_group_folds(samples, fraction.denominator, seed)
    n_val_folds = fraction.numerator
    val_indices = set(np.concatenate(folds[:n_val_folds]).tolist())
    train = [s for i, s in enumerate(samples) if i not in val_indices]
    val = [s for i, s in enumerate(samples) if i in val_indices]
    return train, val


def kfold_splits(samples: Sequence[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k (train, val) pairs, stratified and patient-grouped; every sample is in exactly one val fold."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    splits = []
    for val_indices in _stratified_group_folds(samples, k, seed):
        in_val = set(val_indices.tolist())
        splits.append(
            ([s for i, s in enumerate(samples) if i not in in_val], [s for i, s in enumerate(samples) if i in in_val])
        )
    return splits


def class_weights(samples: Sequence[Sample], n_classes: int) -> np.ndarray:
    """"Balanced" loss weights n / (n_classes * count_c) from the samples given (pass the training split).

    For two classes with P positives and N negatives this is w+ = (P+N)/(2P), w- = (P+N)/(2N): the
    same ratio w+/w- = N/P as study 000's w+ = N/(P+N), w- = P/(P+N), up to a common scale factor,
    which the loss optimum does not depend on. A class with no samples gets weight 0.
    """
    counts = np.bincount([s.label for s in samples], minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = counts.sum() / (n_classes * counts[present])
    return weights


def _by_label(samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_label[sample.label].append(sample)
    return by_label


def grow_minority(samples: Sequence[Sample], percent: float, seed: int = 0) -> list[Sample]:
    """`samples` plus round(count * percent / 100) repeated samples of every class smaller than the largest.

    The copies are only references to the same files; they become new images because the training
    transform is random (study 001 grows minority classes by +10/20/30% this way).
    """
    if percent <= 0:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_label = _by_label(samples)
    largest = max(len(group) for group in by_label.values())
    grown = list(samples)
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) == largest:
            continue
        extra = round(len(group) * percent / 100)
        picks = rng.choice(len(group), size=extra, replace=extra > len(group))
        grown.extend(group[i] for i in picks)
    return grown


def subsample(samples: Sequence[Sample], per_class: int, seed: int = 0) -> list[Sample]:
    """At most `per_class` random samples of each class, in their original order (for smoke runs)."""
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    indices_by_label: dict[int, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        indices_by_label[sample.label].append(i)
    for label in sorted(indices_by_label):
        indices = indices_by_label[label]
        keep.update(rng.choice(indices, size=min(per_class, len(indices)), replace=False).tolist())
    return [s for i, s in enumerate(samples) if i in keep]
