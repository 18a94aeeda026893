"""Confidence intervals for a site calibration that can show how uncertain a small sample is.

A percentile bootstrap of the rates at one fixed threshold (:func:`metrics.bootstrap_report`) answers
1.000–1.000 whenever the sample happens to be called all right: 10 + 10 separable films then look certain,
although the threshold itself was fitted on those very films. Here the whole procedure is resampled: each
stratified resample refits temperature and threshold (:func:`operating.fit_site_point`) and calls the films it
left out (out of bag), so the fitted threshold's own uncertainty shows. Each rate's interval is then widened
to at least the Wilson score interval of the sample's own count, the binomial floor a bootstrap cannot see
below when every film is called right (10 of 10 pneumonias found: 0.72–1.00, not 1.00–1.00).

A module of its own because :mod:`metrics` (pure, fixed-threshold metrics) is already long.
"""
from __future__ import annotations


import numpy as np

from xraycore import metrics
from xraycore.clinical import operating_points as operating

RATES = ("accuracy", "precision", "recall", "specificity", "f1", "fbeta")
Interval = tuple[float, float, float]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion: never empty at 0 or n successes (None for 0 trials)."""
    if trials <= 0:
        return None
    from scipy import stats  # lazy, as metrics' own imports: the full install only

    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def _counts(truth: np.ndarray, called: np.ndarray) -> dict[str, tuple[int, int]]:
    """(successes, trials) behind each binomial rate at one call."""
    tp, tn = int(((called == 1) & (truth == 1)).sum()), int(((called == 0) & (truth == 0)).sum())
    positives, negatives = int(truth.sum()), int((1 - truth).sum())
    return {"accuracy": (tp + tn, truth.size), "recall": (tp, positives), "specificity": (tn, negatives),
            "precision": (tp, int(called.sum()))}


def _rates(truth: np.ndarray, called: np.ndarray, beta: float) -> dict[str, float]:
    """The rates of one call, NaN where a rate is undefined (no positive film, nothing called positive, ...):
    an out-of-bag set can lack a class, and a 0 there would pull the interval down for no reason."""
    tp, fp = float(((called == 1) & (truth == 1)).sum()), float(((called == 1) & (truth == 0)).sum())
    fn, tn = float(((called == 0) & (truth == 1)).sum()), float(((called == 0) & (truth == 0)).sum())

    def share(part: float, whole: float) -> float:
        return part / whole if whole else np.nan

    b2 = beta * beta
    return {"accuracy": share(tp + tn, truth.size), "precision": share(tp, tp + fp), "recall": share(tp, tp + fn),
            "specificity": share(tn, tn + fp), "f1": share(2 * tp, 2 * tp + fp + fn),
            "fbeta": share((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)}


def _hull(point: float | None, samples: np.ndarray, floor: tuple[float, float] | None,
          confidence: float) -> Interval | None:
    """(point, low, high): the percentile interval of ``samples`` widened to hold the point and ``floor``."""
    if point is None or np.isnan(point):
        return None
    bounds = [float(point)]
    defined = samples[~np.isnan(samples)]
    if defined.size:
        tail = (1.0 - confidence) / 2.0 * 100.0
        bounds += [float(v) for v in np.percentile(defined, [tail, 100.0 - tail])]
    if floor is not None:
        bounds += list(floor)
    return float(point), min(bounds), max(bounds)


def widened_to_counts(report_ci: dict[str, Interval | None], truth: np.ndarray, called: np.ndarray,
                      confidence: float = 0.95) -> dict[str, Interval | None]:
    """A percentile bootstrap's (point, low, high) per rate, each widened to the Wilson interval of its count:
    on a handful of films every resample can agree, and 4 of 4 right must not read as 1.000-1.000."""
    floors = {name: wilson_interval(*count, confidence) for name, count in _counts(truth, called).items()}
    widened = dict(report_ci)
    for name, floor in floors.items():
        interval = report_ci.get(name)
        if interval is not None and floor is not None:
            widened[name] = (interval[0], min(interval[1], floor[0]), max(interval[2], floor[1]))
    return widened


def procedure_intervals(y_true: np.ndarray, logits: np.ndarray, positive_index: int, beta: float = 2.0,
                        n_resamples: int = 200, seed: int = 0, confidence: float = 0.95) -> dict[str, Interval | None]:
    """(point, low, high) for every rate, the AUROC and the threshold of a site calibration of these films.

    The point is the rate on the sample at the point fitted on all of it (optimistic); the interval is the
    out-of-bag bootstrap of the fit described above, widened to the Wilson interval of the sample's count. The
    AUROC does not depend on the fit (a temperature keeps the ranking): its stratified percentile bootstrap,
    widened to the Wilson interval with the smaller class's size as n, its effective sample size at most.
    """
    truth = np.asarray(y_true, dtype=int)
    logits = np.asarray(logits, dtype=np.float64)
    fitted = operating.fit_site_point(truth, logits, positive_index, beta)
    score = metrics.softmax(logits, fitted["temperature"])[:, positive_index]
    report = metrics.binary_report(truth, score, fitted["threshold"], beta)
    rows = metrics.bootstrap_indices(truth, n_resamples, seed, stratified=True)
    sampled = {name: np.full(n_resamples, np.nan) for name in (*RATES, "threshold")}
    for row, indices in enumerate(rows):
        out_of_bag = np.setdiff1d(np.arange(truth.size), indices)
        point = operating.fit_site_point(truth[indices], logits[indices], positive_index, beta)
        sampled["threshold"][row] = point["threshold"]
        if out_of_bag.size:
            held = metrics.softmax(logits[out_of_bag], point["temperature"])[:, positive_index]
            rates = _rates(truth[out_of_bag], metrics.is_positive(held, point["threshold"]).astype(int), beta)
            for name in RATES:
                sampled[name][row] = rates[name]
    called = metrics.is_positive(score, fitted["threshold"]).astype(int)
    floors = {name: wilson_interval(*count, confidence) for name, count in _counts(truth, called).items()}
    intervals = {name: _hull(report[name], sampled[name], floors.get(name), confidence) for name in RATES}
    intervals["threshold"] = _hull(fitted["threshold"], sampled["threshold"], None, confidence)
    auroc = metrics.bootstrap_report(truth, score, fitted["threshold"], beta, n_resamples=n_resamples,
                                     seed=seed, confidence=confidence)["auroc"]
    smaller = int(min(truth.sum(), (1 - truth).sum()))
    intervals["auroc"] = None if auroc is None else _hull(
        auroc[0], np.array(auroc[1:]), wilson_interval(round(auroc[0] * smaller), smaller, confidence), confidence)
    return intervals
