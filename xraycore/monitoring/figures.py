"""Per-window figures of a stream of scored films: volume, positive rate (95% Wilson interval), out-of-domain and
guard rates, PSI and normalised Wasserstein distance against the reference, CBPE expected rates, realised rates
where reads exist, and the alerts.

Pure numpy over columns (never row objects), so the CLI, the Monitor page, the tests' simulated streams and the
benchmark's 100,000 rows all go through the same function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from xraycore.clinical.fit_bootstrap import wilson_interval
from xraycore.metrics import drift
from xraycore.monitoring import rules
from xraycore.monitoring.reference import Reference
from xraycore.monitoring.windows import Window, split

KEYS = ("start", "end", "n", "positive_rate", "positive_rate_ci95", "ood_rate", "guard_rate", "psi", "wasserstein",
        "expected_accuracy", "expected_sensitivity", "expected_specificity", "realised_n", "realised_accuracy",
        "realised_sensitivity", "realised_specificity", "alerts")


@dataclass
class ScoredColumns:
    """The scored films, sorted by time: one array per column. ``logit``/``probability`` NaN where absent;
    ``called`` a film got a call, ``positive`` that call was the positive class; ``film`` the pixel sha256."""

    created: np.ndarray  # seconds since the epoch, UTC
    logit: np.ndarray
    probability: np.ndarray
    called: np.ndarray
    positive: np.ndarray
    ood_flag: np.ndarray
    guard: np.ndarray
    film: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.created.size)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _drift(logits: np.ndarray, called_positive: np.ndarray, reference: Reference) -> tuple[float | None, float | None, bool]:
    """PSI, normalised Wasserstein and whether a mixture of the reference's classes explains the window."""
    if logits.size == 0:
        return None, None, False
    edges = reference.edges
    psi = drift.psi(reference.logits, logits)
    shares = reference.class_shares()
    if shares is not None:
        explained = rules.mixture_psi(drift.bin_shares(logits, edges), *shares) <= rules.PSI_LIMIT
    else:  # no labels: compare the films called negative with the reference's
        negatives = logits[~called_positive]
        reference_negatives = reference.logits[reference.probabilities < reference.threshold]
        explained = (negatives.size >= 20 and reference_negatives.size >= 20
                     and drift.psi(reference_negatives, negatives) <= rules.PSI_LIMIT)
    return psi, drift.wasserstein(reference.logits, logits), explained


def _realised(called_positive: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Accuracy, sensitivity and specificity of the calls on the films that have a read (truth -1: none)."""
    read = truth >= 0
    calls, labels = called_positive[read], truth[read] == 1
    rate = lambda hits, total: _round(hits / total) if total else None  # noqa: E731
    return {"realised_n": int(read.sum()), "realised_accuracy": rate(np.sum(calls == labels), labels.size),
            "realised_sensitivity": rate(np.sum(calls & labels), labels.sum()),
            "realised_specificity": rate(np.sum(~calls & ~labels), (~labels).sum())}


def one_window(columns: ScoredColumns, window: Window, reference: Reference, truth: np.ndarray
               ) -> tuple[dict[str, Any], rules.WindowState]:
    """The figures of one window (alerts left empty) and its state for the alert rule."""
    part = slice(window.first, window.stop)
    n = window.stop - window.first
    called, positive = columns.called[part], columns.positive[part] & columns.called[part]
    n_called, n_positive = int(called.sum()), int(positive.sum())
    positive_rate = n_positive / n_called if n_called else None
    logits = columns.logit[part][called & np.isfinite(columns.logit[part])]
    probabilities = columns.probability[part][called & np.isfinite(columns.probability[part])]
    psi, distance, explained = _drift(logits, positive[called & np.isfinite(columns.logit[part])], reference)
    ood_rate = float(np.mean(columns.ood_flag[part])) if n else 0.0
    expected = (drift.expected_rates(probabilities, reference.threshold) if probabilities.size
                else dict.fromkeys(("expected_accuracy", "expected_sensitivity", "expected_specificity")))
    interval = wilson_interval(n_positive, n_called) if n_called else None
    figures = {
        "start": window.start.isoformat(timespec="seconds"), "end": window.end.isoformat(timespec="seconds"),
        "n": int(n), "positive_rate": _round(positive_rate),
        "positive_rate_ci95": None if interval is None else [_round(interval[0]), _round(interval[1])],
        "ood_rate": _round(ood_rate), "guard_rate": _round(np.mean(columns.guard[part]) if n else 0.0),
        "psi": _round(psi), "wasserstein": _round(distance), **{k: _round(v) for k, v in expected.items()},
        **_realised(positive[called], truth[part][called]), "alerts": [],
    }
    state = rules.state_of(ood_rate, positive_rate, reference.positive_rate, psi, explained)
    return figures, state


def monitor_columns(columns: ScoredColumns, reference: Reference, window: str | int,
                    truth_by_film: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One dict per window with exactly :data:`KEYS`, the alerts filled in by :func:`rules.alerts`."""
    truth = np.full(len(columns), -1, dtype=np.int8)
    if truth_by_film and columns.film is not None:
        truth = np.fromiter((truth_by_film.get(film, -1) for film in columns.film), dtype=np.int8, count=len(columns))
    results = [one_window(columns, w, reference, truth) for w in split(columns.created, window)]
    for (figures, _), sentences in zip(results, rules.alerts([s for _, s in results], reference.positive_class)):
        figures["alerts"] = sentences
    return [figures for figures, _ in results]


def active_alerts(windows: list[dict[str, Any]]) -> list[str]:
    """The alerts still active: the last window's."""
    return list(windows[-1]["alerts"]) if windows else []
