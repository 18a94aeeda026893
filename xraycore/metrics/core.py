"""Evaluation metrics, confidence intervals and calibration as pure functions over numpy arrays.

Conventions (scikit-learn style): ``y_true`` holds integer labels, ``y_pred`` hard predictions,
``y_score`` / ``y_prob`` a score for the positive class (label 1) or, for multi-class functions,
an ``(n, n_classes)`` probability matrix. A score counts as positive when it reaches the threshold
(:func:`xraycore.operating.is_positive`, the one rule Diagnose, the worklist and every metric share).

Undefined values, one rule for every public function:

* A ratio of confusion counts whose denominator is zero (precision when nothing is called positive,
  PPV/NPV at another prevalence, ...) is 0.0, scikit-learn's ``zero_division=0``: sweeps and bootstrap
  resamples stay plain float arrays, and :func:`predictive_values` at the validation prevalence equals
  :func:`binary_report`'s precision and NPV even then.
* A value that does not exist for the data (AUROC or AUPRC, or their interval, with one class present;
  a macro AUROC without any defined class) is None, never NaN: reports are written as JSON, where None
  is ``null`` and NaN is not JSON at all (``json.dumps`` writes a bare ``NaN`` that strict readers and
  browsers refuse); every caller already shows None as "n/a" or a dash, and formatting it with ``:.3f``
  fails loudly instead of printing "nan" into a model card.
* Inside arrays (threshold sweeps, reliability bins, bootstrap samples) a missing entry is NaN, the only
  float that can stand for it; plots draw it as a gap.

Nothing here keeps state, reads files or imports torch, so the app, the trainer and the CLI all get
identical numbers from the same arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import numpy as np
from scipy import optimize, special, stats
from sklearn import metrics as skm

from xraycore.clinical.operating_points import is_positive

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Range searched by :func:`fit_temperature`; beyond it a model is broken, not miscalibrated."""


# ----------------------------------------------------------------------------- input checking


def _labels(y: Any, name: str = "y_true") -> np.ndarray:
    """Integer label vector; refuses anything that is not 1-D or not whole numbers."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype.kind == "f" and not np.all(array == np.round(array)):
        raise ValueError(f"{name} must hold integer labels")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array.astype(np.int64)


def _binary_labels(y: Any, name: str = "y_true") -> np.ndarray:
    array = _labels(y, name)
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must only contain 0 and 1")
    return array


def _scores(y_score: Any, n: int, name: str = "y_score") -> np.ndarray:
    array = np.asarray(y_score, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _label_pair(y_true: Any, y_pred: Any, binary: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checked (truth, prediction) label vectors of equal length; 0/1 only when ``binary``."""
    check = _binary_labels if binary else _labels
    truth = check(y_true)
    pred = check(y_pred, "y_pred")
    if pred.shape != truth.shape:
        raise ValueError(f"y_true and y_pred differ in length: {truth.size} vs {pred.size}")
    return truth, pred


def _has_both_classes(y_true: np.ndarray) -> bool:
    return bool(0 < y_true.sum() < y_true.size)


# ----------------------------------------------------------------------------- counts -> rates


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0.0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _rates(tn, fp, fn, tp, beta: float) -> dict[str, np.ndarray]:
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


def _counts(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> tuple[Any, Any, Any, Any]:
    """tn, fp, fn, tp of 0/1 arrays, summed along ``axis`` (so a stack of resamples works too)."""
    truth = y_true.astype(bool)
    pred = y_pred.astype(bool)
    tp = np.sum(truth & pred, axis=axis)
    fp = np.sum(~truth & pred, axis=axis)
    fn = np.sum(truth & ~pred, axis=axis)
    tn = np.sum(~truth & ~pred, axis=axis)
    return tn, fp, fn, tp


def _binary_rate(name: str, y_true: Any, y_pred: Any, beta: float = 1.0) -> float:
    truth, pred = _label_pair(y_true, y_pred, binary=True)
    return float(_rates(*_counts(truth, pred), beta=beta)[name])


# ----------------------------------------------------------------------------- hard predictions


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class; binary gives [[tn, fp], [fn, tp]].

    ``n_classes`` fixes the size so a class missing from a small batch still gets its row/column.
    """
    truth = _labels(y_true)
    pred = _labels(y_pred, "y_pred")
    if n_classes is None:
        n_classes = max(2, int(max(truth.max(), pred.max())) + 1)
    return skm.confusion_matrix(truth, pred, labels=np.arange(n_classes))


def binary_counts(y_true: Any, y_score: Any, threshold: float) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) when every score >= ``threshold`` is called positive."""
    truth = _binary_labels(y_true)
    scores = _scores(y_score, truth.size)
    return tuple(int(c) for c in _counts(truth, is_positive(scores, threshold)))  # type: ignore[return-value]


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of exact matches; also valid for multi-class labels."""
    truth, pred = _label_pair(y_true, y_pred)
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


# ----------------------------------------------------------------------------- scores and curves


def roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as in sklearn; thresholds[0] is +inf (nothing called positive)."""
    truth = _binary_labels(y_true)
    return skm.roc_curve(truth, _scores(y_score, truth.size))


def pr_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as in sklearn; the last point (P=1, R=0) has no threshold."""
    truth = _binary_labels(y_true)
    return skm.precision_recall_curve(truth, _scores(y_score, truth.size))


def _ranking_area(sklearn_score: Callable[[np.ndarray, np.ndarray], float], y_true: Any,
                  y_score: Any) -> float | None:
    """A threshold-free sklearn score, None when only one class is present (undefined, not an error)."""
    truth = _binary_labels(y_true)
    scores = _scores(y_score, truth.size)
    if not _has_both_classes(truth):
        return None
    return float(sklearn_score(truth, scores))


def roc_auc(y_true: Any, y_score: Any) -> float | None:
    """Area under the ROC curve; None when only one class is present (it is undefined then)."""
    return _ranking_area(skm.roc_auc_score, y_true, y_score)


def average_precision(y_true: Any, y_score: Any) -> float | None:
    """Area under the precision-recall curve (step-wise, as sklearn); None with one class only."""
    return _ranking_area(skm.average_precision_score, y_true, y_score)


def threshold_sweep(
    y_true: Any, y_score: Any, thresholds: Any = None, beta: float = 2.0
) -> dict[str, np.ndarray]:
    """Every threshold metric at every threshold, in one vectorised pass.

    Default thresholds are the unique scores plus 0 and 1, ascending: between two neighbouring
    scores nothing changes, so these cover every distinct operating point. Besides the rates the
    result holds the counts ``tn``, ``fp``, ``fn``, ``tp``.
    """
    truth = _binary_labels(y_true)
    scores = _scores(y_score, truth.size)
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
        for name, values in _rates(tn, fp, fn, tp, beta).items()
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

    ``auroc``/``auprc`` are None when only one class is present. :func:`report_with_ci` adds intervals.
    """
    truth = _binary_labels(y_true)
    scores = _scores(y_score, truth.size)
    tn, fp, fn, tp = _counts(truth, is_positive(scores, threshold))
    rates = _rates(tn, fp, fn, tp, beta)
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
    truth = _labels(y_true)
    pred = _labels(y_pred, "y_pred")
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
    truth = _labels(y_true)
    probs = _probability_matrix(probs, truth.size, len(class_names))
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
    truth = _labels(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != truth.size:
        raise ValueError(f"probs must have shape ({truth.size}, n_classes), got {probs.shape}")
    return (truth == positive).astype(np.int64), probs[:, positive]


def _probability_matrix(probs: Any, n: int, n_classes: int) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float64)
    if array.shape != (n, n_classes):
        raise ValueError(f"probs must have shape ({n}, {n_classes}), got {array.shape}")
    return array


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


# ----------------------------------------------------------------------------- bootstrap


def _bootstrap_indices(
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
    truth = _labels(y_true)
    scores = np.asarray(y_score)
    if scores.shape[0] != truth.size:
        raise ValueError("y_true and y_score differ in length")
    indices = _bootstrap_indices(truth, n_resamples, seed, stratified)
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
    truth = _binary_labels(y_true)
    scores = _scores(y_score, truth.size)
    indices = _bootstrap_indices(truth, n_resamples, seed, stratified)
    sampled_truth, sampled_scores = truth[indices], scores[indices]

    point = _rates(*_counts(truth, is_positive(scores, threshold)), beta)
    sampled = _rates(*_counts(sampled_truth, is_positive(sampled_scores, threshold), axis=1), beta)
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


# ----------------------------------------------------------------------------- calibration


def _confidence_and_outcome(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binary: (P(positive), label). Multi-class (n, k) probs: (top probability, was it right)."""
    truth = _labels(y_true)
    probs = np.asarray(y_prob, dtype=np.float64)
    if probs.ndim == 2:
        probs = _probability_matrix(probs, truth.size, probs.shape[1])
        return probs.max(axis=1), (probs.argmax(axis=1) == truth).astype(np.float64)
    return _scores(probs, truth.size, "y_prob"), _binary_labels(truth).astype(np.float64)


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


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of ``logits / temperature`` (numerically stable, via scipy)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return special.softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


def _nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    log_probs = special.log_softmax(logits / temperature, axis=1)
    return float(-np.mean(log_probs[np.arange(y_true.size), y_true]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) on held-out data.

    Searched over log T within :data:`TEMPERATURE_BOUNDS` (scipy's bounded scalar minimiser).
    T > 1 softens an overconfident model; the arg-max call never changes. Needs (n, k) logits,
    k >= 2 (a binary model gives two logits).
    """
    truth = _labels(y_true)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != truth.size or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape ({truth.size}, k>=2), got {logits.shape}")
    if truth.min() < 0 or truth.max() >= logits.shape[1]:
        raise ValueError("y_true holds a class index outside the logits' columns")
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(
        lambda log_t: _nll(logits, truth, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
