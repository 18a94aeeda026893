"""The monitor over simulated streams: an alert on the first window of a shift and never before, the cause named,
expected accuracy close to the realised one while calibration holds, and the windows' exact keys."""

import datetime as dt

import numpy as np
import pytest

from xraycore.monitoring import figures, rules, windows
from tests.monitoring import streams


def in_domain_then(shifted_labels, shifted_logits, shifted_ood, seed=3, n_in=600):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_in) < 0.5).astype(int)
    first, truth = streams.stream(labels, streams.logits_of(labels, rng), rng.random(n_in) < 0.02)
    second, more = streams.stream(shifted_labels, shifted_logits, shifted_ood, start=first.created[-1] + 60)
    return streams.concatenate(first, second), {**truth, **more}, n_in // 100


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_adult_films_alert_on_the_first_shifted_window_never_before(seed):
    rng = np.random.default_rng(100 + seed)
    reference = streams.reference(rng)
    adults = (rng.random(300) < 0.3).astype(int)  # adults from other hospitals: scores shifted, many flagged
    columns, truth, first_shifted = in_domain_then(adults, streams.logits_of(adults, rng, shift=2.5, spread=1.6),
                                                   rng.random(300) < 0.4, seed=seed)
    result = figures.monitor_columns(columns, reference, 100, truth)
    assert [bool(w["alerts"]) for w in result[:first_shifted]] == [False] * first_shifted
    assert result[first_shifted]["alerts"] and "Out-of-domain surge" in result[first_shifted]["alerts"][0]
    assert figures.active_alerts(result)
    in_domain = result[:first_shifted]  # calibration holds in domain: CBPE close to the reads (100 films: +-0.03 sd)
    assert abs(np.mean([w["expected_accuracy"] - w["realised_accuracy"] for w in in_domain])) <= 0.03
    assert all(abs(w["expected_accuracy"] - w["realised_accuracy"]) <= 0.08 for w in in_domain)


def test_a_new_unit_without_out_of_domain_flags_is_a_score_shift():
    rng = np.random.default_rng(7)
    reference = streams.reference(rng)
    labels = (rng.random(300) < 0.5).astype(int)
    columns, truth, first_shifted = in_domain_then(labels, streams.logits_of(labels, rng, shift=-3.0),
                                                   rng.random(300) < 0.02)
    result = figures.monitor_columns(columns, reference, 100, truth)
    assert not any(w["alerts"] for w in result[:first_shifted])
    alert = " ".join(result[first_shifted]["alerts"])
    assert "Score shift with a stable out-of-domain rate" in alert and "Out-of-domain" not in alert


def test_only_pneumonia_films_raise_a_prevalence_alert_and_no_out_of_domain_alert():
    rng = np.random.default_rng(11)
    reference = streams.reference(rng)
    labels = np.ones(300, int)
    columns, truth, first_shifted = in_domain_then(labels, streams.logits_of(labels, rng), rng.random(300) < 0.02)
    result = figures.monitor_columns(columns, reference, 100, truth)
    assert not any(w["alerts"] for w in result[:first_shifted])
    shifted = [" ".join(w["alerts"]) for w in result[first_shifted:]]
    assert all("prevalence" in text for text in shifted)
    assert not any("Out-of-domain" in text or "Score shift" in text for text in shifted)


def test_one_window_just_over_the_limit_waits_for_a_second():
    state = rules.state_of(0.15, 0.5, 0.5, 0.01, False)  # 1.5 times the out-of-domain limit
    calm = rules.state_of(0.0, 0.5, 0.5, 0.01, False)
    assert rules.alerts([calm, state], "PNEUMONIA") == [[], []]
    assert rules.alerts([calm, state, state], "PNEUMONIA")[2]
    assert rules.alerts([calm, rules.state_of(0.25, 0.5, 0.5, 0.01, False)], "PNEUMONIA")[1]


def test_every_window_has_exactly_the_keys_and_json_plain_values():
    rng = np.random.default_rng(5)
    labels = (rng.random(250) < 0.5).astype(int)
    columns, truth = streams.stream(labels, streams.logits_of(labels, rng), np.zeros(250, bool))
    result = figures.monitor_columns(columns, streams.reference(rng), 100, truth)
    assert [w["n"] for w in result] == [100, 100, 50]
    assert all(tuple(w) == figures.KEYS for w in result)
    low, high = result[0]["positive_rate_ci95"]
    assert low < result[0]["positive_rate"] < high


def test_no_films_gives_no_window_and_no_alert():
    rng = np.random.default_rng(0)
    empty = streams.stream(np.zeros(0, int), np.zeros(0), np.zeros(0, bool))[0]
    assert figures.monitor_columns(empty, streams.reference(rng), "week") == []
    assert figures.active_alerts([]) == []


def test_calendar_windows_start_on_monday_and_day_boundaries_in_utc():
    monday = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc).timestamp()
    created = np.array([monday + 3600, monday + 86400 * 2, monday + 86400 * 8, monday + 86400 * 30])
    weeks = windows.split(created, "week")
    assert [(w.first, w.stop) for w in weeks] == [(0, 2), (2, 3), (3, 4)]
    assert weeks[0].start.weekday() == 0 and weeks[0].start.hour == 0
    assert [(w.first, w.stop) for w in windows.split(created, "day")] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError):
        windows.parse_window("fortnight")
