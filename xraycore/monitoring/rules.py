"""When a window raises an alert, and the likely cause it names: out-of-domain surge, score shift (new unit or
protocol), or prevalence.

Kept apart from the figures so the limits and the rule are read in one place. The rule: an alert needs two
consecutive windows over a limit, or one window over twice the limit, so one unlucky window of 100 films does
not page anyone while a plain break (adults sent to a children's model) is seen on its first window.

The causes are told apart thus. Many out-of-domain flags: an out-of-domain surge (whatever the scores do). Else,
if the window's scores look like the reference's negatives and positives mixed in another proportion (the
score distribution within each class unchanged), a positive-rate shift is prevalence; else a score shift is a
change in the films themselves, a new unit or protocol, with a stable out-of-domain rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from xraycore.metrics import drift

OOD_RATE_LIMIT = 0.10  # films flagged out of domain in a window
POSITIVE_RATE_LIMIT = 0.15  # absolute change of the positive rate from the reference's
PSI_LIMIT = drift.PSI_ALERT
OOD, SCORE_SHIFT, PREVALENCE = "out-of-domain surge", "score shift", "prevalence"
MIXTURE_GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class WindowState:
    """How far one window is over each limit (1.0 = at the limit) and what the cause test said."""

    ood_rate: float = 0.0
    positive_rate: float | None = None
    reference_positive_rate: float = 0.0
    psi: float | None = None
    explained_by_prevalence: bool = False
    ratios: dict[str, float] = field(default_factory=dict)


def mixture_psi(window_shares: np.ndarray, negative_shares: np.ndarray, positive_shares: np.ndarray) -> float:
    """The smallest PSI between a window's bin shares and the reference's classes mixed at any proportion: small
    when only the prevalence moved."""
    mixed = MIXTURE_GRID[:, None] * positive_shares[None, :] + (1 - MIXTURE_GRID[:, None]) * negative_shares[None, :]
    return float(np.min(np.sum((window_shares - mixed) * np.log(window_shares / mixed), axis=1)))


def state_of(ood_rate: float, positive_rate: float | None, reference_positive_rate: float, psi: float | None,
             explained_by_prevalence: bool) -> WindowState:
    """Each cause's ratio to its limit for one window; a cause ruled out by another scores 0."""
    ood_ratio = ood_rate / OOD_RATE_LIMIT
    rate_ratio = 0.0 if positive_rate is None else abs(positive_rate - reference_positive_rate) / POSITIVE_RATE_LIMIT
    psi_ratio = 0.0 if psi is None else psi / PSI_LIMIT
    ood_over = ood_ratio > 1
    ratios = {OOD: ood_ratio,
              PREVALENCE: rate_ratio if not ood_over and explained_by_prevalence else 0.0,
              SCORE_SHIFT: psi_ratio if not ood_over and not explained_by_prevalence else 0.0}
    return WindowState(ood_rate, positive_rate, reference_positive_rate, psi, explained_by_prevalence, ratios)


def alerts(states: Sequence[WindowState], positive_class: str) -> list[list[str]]:
    """The alert sentences of each window: a cause over twice its limit, or over it here and in the window before."""
    out = []
    for index, state in enumerate(states):
        previous = states[index - 1].ratios if index else {}
        fired = [cause for cause, ratio in state.ratios.items()
                 if ratio >= 2 or (ratio > 1 and previous.get(cause, 0.0) > 1)]
        out.append([sentence(cause, state, positive_class) for cause in fired])
    return out


def sentence(cause: str, state: WindowState, positive_class: str) -> str:
    """The plain sentence an alert shows, naming its likely cause."""
    if cause == OOD:
        return (f"Out-of-domain surge: {state.ood_rate:.0%} of this window's films were flagged out of domain (limit "
                f"{OOD_RATE_LIMIT:.0%}); films unlike the model's are arriving (another population, body part or unit).")
    if cause == PREVALENCE:
        return (f"Positive-rate shift (prevalence): {state.positive_rate:.0%} of films were called {positive_class} "
                f"against {state.reference_positive_rate:.0%} in the reference, while the scores within each class "
                "look as they did: more or less disease is arriving, not a broken model.")
    return (f"Score shift with a stable out-of-domain rate: the score distribution moved (PSI {state.psi:.2f}, alert "
            f"above {PSI_LIMIT:g}) while {state.ood_rate:.0%} of films were out of domain; a new X-ray unit or "
            "protocol is the likely cause: check the operating point against recent reads.")


def watch(window: dict, alerted: bool) -> str | None:
    """One sentence when a window is over a limit but has raised no alert yet (the two-window rule holds it back),
    so a page does not say all is well; None otherwise."""
    over = []
    if (window.get("ood_rate") or 0.0) > OOD_RATE_LIMIT:
        over.append(f"{window['ood_rate']:.0%} of films out of domain (limit {OOD_RATE_LIMIT:.0%})")
    if window.get("psi") is not None and window["psi"] > PSI_LIMIT:
        over.append(f"score distribution PSI {window['psi']:.2f} (limit {PSI_LIMIT:g})")
    if alerted or not over:
        return None
    return (f"Watch: the latest window ({window.get('n', 0)} films) is over a limit: {'; '.join(over)}. An alert fires "
            "if the next window is over it too, or when one window is over twice the limit.")
