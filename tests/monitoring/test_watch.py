"""A window over a limit that the two-window rule holds back is said as "Watch", never as "all is well"."""
from __future__ import annotations

from xraycore.monitoring import rules


def test_a_window_over_a_limit_without_an_alert_is_watched():
    window = {"n": 18, "ood_rate": 0.17, "psi": 6.8}
    said = rules.watch(window, alerted=False)
    assert said.startswith("Watch: the latest window (18 films) is over a limit")
    assert "17% of films out of domain" in said and "PSI 6.84" not in said and "PSI 6.80" in said
    assert rules.watch(window, alerted=True) is None
    assert rules.watch({"n": 100, "ood_rate": 0.02, "psi": 0.05}, alerted=False) is None
    assert rules.watch({"n": 100, "ood_rate": 0.0, "psi": None}, alerted=False) is None
