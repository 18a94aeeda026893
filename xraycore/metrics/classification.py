"""Metrics of a call: confusion counts, the rates made from them, F-beta, threshold sweeps and reports.

Split out as scikit-learn splits its ``_classification`` module: everything here looks at hard calls (a score
at a threshold, or an arg-max class), with one formula (:func:`rates_from_counts`) for single calls, threshold
sweeps and bootstrap resamples, so they always agree. Threshold-free areas come from
:mod:`xraycore.metrics.ranking`; the rule that makes a call from a score from :mod:`xraycore.metrics.decision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
from sklearn import metrics as skm

from xraycore.metrics.decision import is_positive
from xraycore.metrics.inputs import (check_binary_labels, check_label_pair, check_labels, check_probability_matrix,
                                     check_scores)
from xraycore.metrics.ranking import average_precision, roc_auc


# ----------------------------------------------------------------------------- counts -> rates


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0.0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def rates_from_counts(tn: Any, fp: Any, fn: Any, tp: Any, beta: float) -> dict[str, np.ndarray]:
    """Every threshold metric from confusion counts; works elementwise on arrays of counts.

    One formula for single calls, threshold sweeps and bootstrap resamples keeps them consistent.
    """
    tn, fp, fn, tp = (np.asarray(c, dtype=np.float64) for c in (tn, fp, fn, tp))
    beta2 = beta * beta
    return {
        "accuracy": _safe_divide(tp + tn, tn + fp + fn + tp),
        "precision": _safe_divide(tp, tp + fp),
        "recall": _safe_divide(tp, tp + fn),
        "specificity": _safe_divide(tn, tn + fp),
        "npv": _safe_divide(tn, tn + fn),
        "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
        "fbeta": _safe_divide((1 + beta2) * tp, (1 + beta2) * tp + beta2 * fn + fp),
    }


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> tuple[Any, Any, Any, Any]:
    """tn, fp, fn, tp of 0/1 arrays, summed along ``axis`` (so a stack of resamples works too)."""
    truth = y_true.astype(bool)
    pred = y_pred.astype(bool)
    tp = np.sum(truth & pred, axis=axis)
    fp = np.sum(~truth & pred, axis=axis)
    fn = np.sum(truth & ~pred, axis=axis)
    tn = np.sum(~truth & ~pred, axis=axis)
    return tn, fp, fn, tp


def _binary_rate(name: str, y_true: Any, y_pred: Any, beta: float = 1.0) -> float:
    truth, pred = check_label_pair(y_true, y_pred, binary=True)
    return float(rates_from_counts(*confusion_counts(truth, pred), beta=beta)[name])


# ----------------------------------------------------------------------------- hard predictions


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class; binary gives [[tn, fp], [fn, tp]].

    ``n_classes`` fixes the size so a class missing from a small batch still gets its row/column.
    """
    truth = check_labels(y_true)
    pred = check_labels(y_pred, "y_pred")
    if n_classes is None:
        n_classes = max(2, int(max(truth.max(), pred.max())) + 1)
    return skm.confusion_matrix(truth, pred, labels=np.arange(n_classes))


def binary_counts(y_true: Any, y_score: Any, threshold: float) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) when every score >= ``threshold`` is called positive."""
    truth = check_binary_labels(y_true)
    scores = check_scores(y_score, truth.size)
    return tuple(int(c) for c in confusion_counts(truth, is_positive(scores, threshold)))  # type: ignore[return-value]


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of exact matches; also valid for multi-class labels."""
    truth, pred = check_label_pair(y_true, y_pred)
    return float(np.mean(truth == pred))


def precision(y_true: Any, y_pred: Any) -> float:
    """tp / (tp + fp): of the scans called pneumonia, the fraction that were."""
    return _binary_rate("precision", y_true, y_pred)


def recall(y_true: Any, y_pred: Any) -> float:
    """tp / (tp + fn), a.k.a. sensitivity: the fraction of pneumonia cases caught."""
    return _binary_rate("recall", y_true, y_pred)


def specificity(y_true: Any, y_pred: Any) -> float:
    """tn / (tn + fp): the fraction of normal scans left alone."""
    return _binary_rate("specificity", y_true, y_pred)


def f1(y_true: Any, y_pred: Any) -> float:
    """Harmonic mean of precision and recall."""
    return _binary_rate("f1", y_true, y_pred)


def fbeta(y_true: Any, y_pred: Any, beta: float) -> float:
    """F-beta; beta > 1 weighs recall beta times as much as precision (missed cases cost more)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    return _binary_rate("fbeta", y_true, y_pred, beta=beta)


def threshold_sweep(
    y_true: Any, y_score: Any, thresholds: Any = None, beta: float = 2.0
) -> dict[str, np.ndarray]:
    """Every threshold metric at every threshold, in one vectorised pass.

    Default thresholds are the unique scores plus 0 and 1, ascending: between two neighbouring
    scores nothing changes, so these cover every distinct operating point. Besides the rates the
    result holds the counts ``tn``, ``fp``, ``fn``, ``tp``.
    """
    truth = check_binary_labels(y_true)
    scores = check_scores(y_score, truth.size)
    if thresholds is None:
        thresholds = np.union1d(scores, [0.0, 1.0])
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()

    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    positives_below = np.concatenate([[0], np.cumsum(truth[order])])  # positives among the k lowest
    n_below = np.searchsorted(sorted_scores, thresholds, side="left")  # scores < threshold: is_positive's rule
    n_pos, n = int(truth.sum()), truth.size

    fn = positives_below[n_below]
    tn = n_below - fn
    tp = n_pos - fn
    fp = (n - n_pos) - tn
    return {"threshold": thresholds, "tn": tn, "fp": fp, "fn": fn, "tp": tp} | {
        name: values
        for name, values in rates_from_counts(tn, fp, fn, tp, beta).items()
        if name != "npv"
    }


def best_fbeta_threshold(y_true: Any, y_score: Any, beta: float = 2.0) -> tuple[float, float]:
    """(threshold, F-beta) for the threshold that maximises F-beta over :func:`threshold_sweep`.

    Ties go to the HIGHEST threshold: for the same F-beta it raises fewer alarms. The threshold is
    always one of the observed scores (or 0/1), i.e. the top of its flat interval.
    """
    sweep = threshold_sweep(y_true, y_score, beta=beta)
    fbetas = sweep["fbeta"]
    best = np.flatnonzero(fbetas == fbetas.max())[-1]  # thresholds ascend, so last = highest
    return float(sweep["threshold"][best]), float(fbetas[best])


# ----------------------------------------------------------------------------- reports


def binary_report(
    y_true: Any, y_score: Any, threshold: float = 0.5, beta: float = 2.0
) -> dict[str, Any]:
    """All numbers for one operating point, as plain Python values ready for JSON.

    ``auroc``/``auprc`` are None when only one class is present.
    :func:`~xraycore.metrics.bootstrap.report_with_ci` adds intervals.
    """
    truth = check_binary_labels(y_true)
    scores = check_scores(y_score, truth.size)
    tn, fp, fn, tp = confusion_counts(truth, is_positive(scores, threshold))
    rates = rates_from_counts(tn, fp, fn, tp, beta)
    return {
        "n": int(truth.size),
        "prevalence": float(truth.mean()),
        "threshold": float(threshold),
        "beta": float(beta),
        **{name: float(value) for name, value in rates.items()},
        "auroc": roc_auc(truth, scores),
        "auprc": average_precision(truth, scores),
        "brier": float(np.mean((scores - truth) ** 2)),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> dict[str, float]:
    """Precision (PPV) and NPV at another prevalence, by Bayes' rule from sensitivity and specificity.

    Validation sets rarely have the prevalence of the ward the model will serve (Kermany's is 74%
    pneumonia), and precision moves with prevalence while sensitivity and specificity do not.
    A zero denominator (nothing called positive, say) gives 0.0, as :func:`binary_report` does.
    """
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must lie in [0, 1], got {prevalence}")
    true_pos, false_pos = sensitivity * prevalence, (1.0 - specificity) * (1.0 - prevalence)
    true_neg, false_neg = specificity * (1.0 - prevalence), (1.0 - sensitivity) * prevalence
    return {"prevalence": float(prevalence),
            "ppv": float(_safe_divide(true_pos, true_pos + false_pos)),
            "npv": float(_safe_divide(true_neg, true_neg + false_neg))}


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """sklearn's per-class precision/recall/f1/support plus accuracy, macro and weighted averages.

    Class ``i`` is ``class_names[i]``; supports are ints; every class appears even if absent.
    """
    truth = check_labels(y_true)
    pred = check_labels(y_pred, "y_pred")
    report = skm.classification_report(
        truth,
        pred,
        labels=np.arange(len(class_names)),
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    return _plain(report)


def multiclass_report(y_true: Any, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, confusion matrix, per-class report and one-vs-rest AUROC from a probability matrix.

    The call is the arg-max class. A class's AUROC is None when it is absent (or alone) in
    ``y_true``; ``macro_auroc`` averages the defined ones (None if there are none).
    """
    truth = check_labels(y_true)
    probs = check_probability_matrix(probs, truth.size, len(class_names))
    pred = probs.argmax(axis=1)
    per_class: dict[str, float | None] = {}
    for index, name in enumerate(class_names):
        is_class, score = one_vs_rest(truth, probs, index)
        per_class[name] = roc_auc(is_class, score)
    defined = [value for value in per_class.values() if value is not None]
    return {
        "n": int(truth.size),
        "accuracy": accuracy(truth, pred),
        "confusion_matrix": confusion_matrix(truth, pred, len(class_names)).tolist(),
        "classification_report": classification_report(truth, pred, class_names),
        "auroc": per_class,
        "macro_auroc": float(np.mean(defined)) if defined else None,
    }


def one_vs_rest(y_true: Any, probs: np.ndarray, positive: int) -> tuple[np.ndarray, np.ndarray]:
    """(binary labels, scores) treating class ``positive`` as 1 and every other class as 0."""
    truth = check_labels(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != truth.size:
        raise ValueError(f"probs must have shape ({truth.size}, n_classes), got {probs.shape}")
    return (truth == positive).astype(np.int64), probs[:, positive]


def _plain(value: Any) -> Any:
    """Nested dicts of numpy/sklearn numbers -> built-in floats; ``support`` counts -> int."""
    if isinstance(value, dict):
        return {
            key: int(item) if key == "support" else _plain(item) for key, item in value.items()
        }
    return float(value)


def mean_std(values: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Across folds: ``{key: {"mean", "std"}}`` for every key that is a number in every dict.

    ``std`` is the sample standard deviation (ddof=1), 0.0 for a single fold. Booleans, None,
    strings and nested values are skipped, so a fold with an undefined AUROC drops that key.
    """
    if not values:
        return {}

    def is_number(item: Any) -> bool:
        return isinstance(item, Real) and not isinstance(item, bool)

    keys = [key for key in values[0] if all(is_number(fold.get(key)) for fold in values)]
    summary = {}
    for key in keys:
        column = np.array([fold[key] for fold in values], dtype=np.float64)
        std = float(np.std(column, ddof=1)) if column.size > 1 else 0.0
        summary[key] = {"mean": float(column.mean()), "std": std}
    return summary
