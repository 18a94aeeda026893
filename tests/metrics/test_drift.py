"""xraycore.metrics.drift: PSI by hand, Wasserstein against scipy, CBPE against realised rates of calibrated data."""

import numpy as np
import pytest
from scipy import stats

from xraycore.metrics import drift

RNG = np.random.default_rng(30)


def test_psi_matches_a_hand_computation_on_reference_quantile_bins():
    reference = np.arange(100, dtype=float)  # deciles: ten bins of ten
    current = np.concatenate([np.full(50, 5.0), np.full(50, 95.0)])  # half in the first bin, half in the last
    expected = np.full(10, 0.1)
    actual = np.full(10, drift.PSI_EPSILON)
    actual[0] = actual[-1] = 0.5
    actual = actual / actual.sum()
    assert drift.psi(reference, current) == pytest.approx(float(np.sum((actual - expected) * np.log(actual / expected))))


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    reference = RNG.normal(0, 1, 5000)
    assert drift.psi(reference, RNG.normal(0, 1, 5000)) < 0.02
    assert drift.psi(reference, RNG.normal(1.0, 1, 500)) > drift.PSI_ALERT


def test_psi_empty_bins_stay_finite():
    assert np.isfinite(drift.psi(np.linspace(0, 1, 50), np.full(20, 10.0)))


@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (0.7, 1.0), (-2.0, 3.0)])
def test_wasserstein_equals_scipy_divided_by_the_reference_std(shift, scale):
    reference, current = RNG.normal(0, 2, 300), RNG.normal(shift, scale, 170)
    want = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert drift.wasserstein(reference, current) == pytest.approx(want, rel=1e-9)


def test_expected_rates_match_realised_rates_when_probabilities_are_calibrated():
    probability = RNG.beta(0.6, 0.6, 200_000)
    truth = RNG.random(probability.size) < probability  # calibrated by construction
    called = probability >= 0.4
    estimate = drift.expected_rates(probability, 0.4)
    assert estimate["expected_accuracy"] == pytest.approx(np.mean(called == truth), abs=0.005)
    assert estimate["expected_sensitivity"] == pytest.approx(np.mean(called[truth]), abs=0.005)
    assert estimate["expected_specificity"] == pytest.approx(np.mean(~called[~truth]), abs=0.005)


def test_expected_rates_by_hand_and_undefined_rates_are_none():
    estimate = drift.expected_rates([0.9, 0.2, 0.5], 0.5)
    assert estimate["expected_accuracy"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert estimate["expected_sensitivity"] == pytest.approx((0.9 + 0.5) / 1.6)
    assert drift.expected_rates([0.0, 0.0], 0.5)["expected_sensitivity"] is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        drift.psi([], [1.0])
    with pytest.raises(ValueError):
        drift.expected_rates([1.5], 0.5)
    with pytest.raises(ValueError):
        drift.wasserstein([np.nan], [1.0])
