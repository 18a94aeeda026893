"""xraycore.metrics.* against scikit-learn, brute force and synthetic data with known answers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from xraycore import metrics as m
from xraycore.metrics.calibration import TEMPERATURE_BOUNDS

RNG = np.random.default_rng(1234)
RANDOM_TRUE = RNG.integers(0, 2, 200)
RANDOM_SCORE = np.clip(0.3 * RANDOM_TRUE + RNG.random(200) * 0.7, 0, 1).round(2)  # rounding -> ties

# (y_true, y_pred) pairs covering the corners where zero divisions happen.
PREDICTION_CASES = {
    "random": (RANDOM_TRUE, (RANDOM_SCORE >= 0.5).astype(int)),
    "all negative truth": (np.zeros(8, int), np.array([0, 1, 0, 0, 1, 0, 0, 0])),
    "all positive truth": (np.ones(8, int), np.array([0, 1, 1, 1, 1, 0, 1, 1])),
    "nothing predicted positive": (np.array([0, 1, 1, 0, 1]), np.zeros(5, int)),
    "all negative, predicted negative": (np.zeros(6, int), np.zeros(6, int)),
    "perfect": (np.array([0, 1, 1, 0, 1]), np.array([0, 1, 1, 0, 1])),
    "all wrong": (np.array([0, 1, 1, 0, 1]), np.array([1, 0, 0, 1, 0])),
}

SCORE_CASES = {
    "random with ties": (RANDOM_TRUE, RANDOM_SCORE),
    "perfect separation": (np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.7, 0.8, 0.9])),
    "all wrong": (np.array([0, 0, 1, 1, 1]), np.array([0.9, 0.8, 0.3, 0.2, 0.1])),
    "all scores tied": (np.array([0, 1, 0, 1, 1]), np.full(5, 0.5)),
}


def test_metrics_module_does_not_import_torch():
    code = "import sys, xraycore.metrics.bootstrap, xraycore.metrics.calibration; sys.exit('torch' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo_root, timeout=60).returncode == 0


# ----------------------------------------------------------------------------- hard predictions


@pytest.mark.parametrize("case", PREDICTION_CASES)
def test_binary_metrics_match_sklearn(case):
    y_true, y_pred = PREDICTION_CASES[case]
    sk = dict(y_true=y_true, y_pred=y_pred, zero_division=0)
    assert m.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m.precision(y_true, y_pred) == pytest.approx(skm.precision_score(**sk))
    assert m.recall(y_true, y_pred) == pytest.approx(skm.recall_score(**sk))
    assert m.specificity(y_true, y_pred) == pytest.approx(skm.recall_score(**sk, pos_label=0))
    assert m.f1(y_true, y_pred) == pytest.approx(skm.f1_score(**sk))
    for beta in (0.5, 2.0):
        assert m.fbeta(y_true, y_pred, beta) == pytest.approx(skm.fbeta_score(**sk, beta=beta))


def test_metrics_return_python_floats_and_reject_bad_input():
    y_true, y_pred = PREDICTION_CASES["random"]
    assert type(m.precision(y_true, y_pred)) is float
    with pytest.raises(ValueError):
        m.precision([0, 1, 2], [0, 1, 1])  # not binary
    with pytest.raises(ValueError):
        m.recall([0, 1, 1], [0, 1])  # length mismatch
    with pytest.raises(ValueError):
        m.fbeta(y_true, y_pred, beta=0)


def test_confusion_matrix_matches_sklearn_and_keeps_absent_classes():
    y_true = RNG.integers(0, 3, 100)
    y_pred = RNG.integers(0, 3, 100)
    expected = skm.confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(m.confusion_matrix(y_true, y_pred), expected)
    binary = m.confusion_matrix([0, 0, 1, 1, 1], [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(binary, [[1, 1], [1, 2]])  # [[tn, fp], [fn, tp]]
    padded = m.confusion_matrix([0, 0], [0, 0], n_classes=3)
    np.testing.assert_array_equal(padded, [[2, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert m.confusion_matrix([0, 0], [0, 0]).shape == (2, 2)  # binary even with one class seen


def test_binary_counts_calls_score_equal_to_threshold_positive():
    y_true = np.array([0, 1, 0, 1])
    y_score = np.array([0.2, 0.5, 0.5, 0.49])
    assert m.binary_counts(y_true, y_score, 0.5) == (1, 1, 1, 1)  # both 0.5s are called positive
    assert m.binary_counts(y_true, y_score, 0.5000001) == (2, 0, 2, 0)
    tn, fp, fn, tp = skm.confusion_matrix(RANDOM_TRUE, RANDOM_SCORE >= 0.42).ravel()
    assert m.binary_counts(RANDOM_TRUE, RANDOM_SCORE, 0.42) == (tn, fp, fn, tp)


# ----------------------------------------------------------------------------- scores and curves


@pytest.mark.parametrize("case", SCORE_CASES)
def test_curves_and_areas_match_sklearn(case):
    y_true, y_score = SCORE_CASES[case]
    for ours, theirs in zip(m.roc_curve(y_true, y_score), skm.roc_curve(y_true, y_score)):
        np.testing.assert_allclose(ours, theirs)
    sk_pr = skm.precision_recall_curve(y_true, y_score)
    for ours, theirs in zip(m.pr_curve(y_true, y_score), sk_pr):
        np.testing.assert_allclose(ours, theirs)
    assert m.roc_auc(y_true, y_score) == pytest.approx(skm.roc_auc_score(y_true, y_score))
    assert m.average_precision(y_true, y_score) == pytest.approx(
        skm.average_precision_score(y_true, y_score)
    )


def test_areas_are_none_with_one_class():
    assert m.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert m.average_precision([0, 0, 0], [0.2, 0.5, 0.9]) is None


def test_undefined_values_are_none_and_every_report_is_strict_json():
    """The module's one convention: nothing a public function returns holds NaN, so JSON stays JSON."""
    one_class, scores = np.zeros(12, int), np.linspace(0.05, 0.95, 12)
    report, ci = m.report_with_ci(one_class, scores, 0.5, n_resamples=50)
    results = [report, ci, m.bootstrap_ci(one_class, scores, m.roc_auc, n_resamples=50),
               m.multiclass_report([0, 0, 1, 1], np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                                                           [0.3, 0.6, 0.1]]), ["a", "b", "c"]),
               m.predictive_values(0.0, 1.0, 0.3), m.mean_std([report, report])]
    json.dumps(results, allow_nan=False)
    assert report["auroc"] is None and ci["auroc"] is None and results[2] is None
    assert results[3]["auroc"]["c"] is None


@pytest.mark.parametrize("case", SCORE_CASES)
def test_threshold_sweep_matches_a_loop_of_scalar_metrics(case):
    y_true, y_score = SCORE_CASES[case]
    sweep = m.threshold_sweep(y_true, y_score, beta=2.0)
    expected_thresholds = np.union1d(y_score, [0.0, 1.0])
    np.testing.assert_array_equal(sweep["threshold"], expected_thresholds)
    for i, threshold in enumerate(sweep["threshold"]):
        y_pred = (y_score >= threshold).astype(int)
        assert sweep["accuracy"][i] == pytest.approx(m.accuracy(y_true, y_pred))
        assert sweep["precision"][i] == pytest.approx(m.precision(y_true, y_pred))
        assert sweep["recall"][i] == pytest.approx(m.recall(y_true, y_pred))
        assert sweep["specificity"][i] == pytest.approx(m.specificity(y_true, y_pred))
        assert sweep["f1"][i] == pytest.approx(m.f1(y_true, y_pred))
        assert sweep["fbeta"][i] == pytest.approx(m.fbeta(y_true, y_pred, 2.0))
        counts = (sweep["tn"][i], sweep["fp"][i], sweep["fn"][i], sweep["tp"][i])
        assert counts == m.binary_counts(y_true, y_score, threshold)


def test_threshold_sweep_accepts_explicit_thresholds():
    sweep = m.threshold_sweep(RANDOM_TRUE, RANDOM_SCORE, thresholds=[0.3, 0.6])
    np.testing.assert_array_equal(sweep["threshold"], [0.3, 0.6])
    assert sweep["recall"][1] == pytest.approx(m.recall(RANDOM_TRUE, RANDOM_SCORE >= 0.6))


@pytest.mark.parametrize("case", SCORE_CASES)
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_best_fbeta_threshold_matches_brute_force(case, beta):
    y_true, y_score = SCORE_CASES[case]
    candidates = sorted(set(y_score.tolist()) | {0.0, 1.0})
    values = [m.fbeta(y_true, (y_score >= t).astype(int), beta) for t in candidates]
    best_value = max(values)
    highest_best = max(t for t, v in zip(candidates, values) if v == pytest.approx(best_value))
    threshold, value = m.best_fbeta_threshold(y_true, y_score, beta)
    assert value == pytest.approx(best_value)
    assert threshold == highest_best


def test_best_fbeta_threshold_breaks_ties_towards_higher_threshold():
    # F1 = 2/3 at threshold 0.9 (tp=1, fn=1) and at 0.6 or 0 (tp=2, fp=2); the rule picks 0.9.
    y_true = np.array([1, 0, 0, 1])
    y_score = np.array([0.9, 0.8, 0.7, 0.6])
    sweep = m.threshold_sweep(y_true, y_score, beta=1.0)
    best = sweep["fbeta"].max()
    tied = sweep["threshold"][np.isclose(sweep["fbeta"], best)]
    assert tied.size > 1  # the case really has a tie
    assert m.best_fbeta_threshold(y_true, y_score, beta=1.0) == (0.9, pytest.approx(2 / 3))


def test_larger_beta_favours_recall_with_a_lower_threshold():
    # Positives are spread out: catching the low-scoring ones costs many false positives.
    y_true = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    y_score = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.2, 0.1])
    recall_threshold, _ = m.best_fbeta_threshold(y_true, y_score, beta=2.0)
    precision_threshold, _ = m.best_fbeta_threshold(y_true, y_score, beta=0.5)
    assert recall_threshold < precision_threshold
    recall_at = {t: m.recall(y_true, y_score >= t) for t in (recall_threshold, precision_threshold)}
    assert recall_at[recall_threshold] > recall_at[precision_threshold]


# ----------------------------------------------------------------------------- reports


def test_binary_report_agrees_with_sklearn_and_is_json():
    report = m.binary_report(RANDOM_TRUE, RANDOM_SCORE, threshold=0.5, beta=2.0)
    json.dumps(report)
    y_pred = RANDOM_SCORE >= 0.5
    tn, fp, fn, tp = skm.confusion_matrix(RANDOM_TRUE, y_pred).ravel()
    assert report["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert all(type(v) is int for row in report["confusion_matrix"] for v in row)
    assert report["n"] == 200 and report["prevalence"] == pytest.approx(RANDOM_TRUE.mean())
    assert report["fbeta"] == pytest.approx(skm.fbeta_score(RANDOM_TRUE, y_pred, beta=2.0))
    assert report["recall"] == pytest.approx(skm.recall_score(RANDOM_TRUE, y_pred))
    assert report["specificity"] == pytest.approx(tn / (tn + fp))
    assert report["npv"] == pytest.approx(tn / (tn + fn))
    assert report["auroc"] == pytest.approx(skm.roc_auc_score(RANDOM_TRUE, RANDOM_SCORE))
    assert report["auprc"] == pytest.approx(skm.average_precision_score(RANDOM_TRUE, RANDOM_SCORE))
    assert report["brier"] == pytest.approx(skm.brier_score_loss(RANDOM_TRUE, RANDOM_SCORE))


def test_binary_report_with_one_class_has_no_areas():
    report = m.binary_report([0, 0, 0], [0.1, 0.7, 0.2], threshold=0.5)
    json.dumps(report)
    assert report["auroc"] is None and report["auprc"] is None
    assert report["confusion_matrix"] == [[2, 1], [0, 0]]
    assert report["precision"] == 0.0 and report["recall"] == 0.0


def test_classification_report_matches_sklearn_and_lists_absent_classes():
    names = ["normal", "bacterial", "viral"]
    y_true = RNG.integers(0, 2, 60)  # "viral" never occurs
    y_pred = RNG.integers(0, 2, 60)
    report = m.classification_report(y_true, y_pred, names)
    json.dumps(report)
    expected = skm.classification_report(
        y_true, y_pred, labels=[0, 1, 2], target_names=names, output_dict=True, zero_division=0
    )
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    for key in [*names, "macro avg", "weighted avg"]:
        for field in ("precision", "recall", "f1-score"):
            assert report[key][field] == pytest.approx(expected[key][field])
        assert report[key]["support"] == expected[key]["support"]
        assert type(report[key]["support"]) is int
    assert report["viral"]["support"] == 0


def test_multiclass_report_matches_sklearn():
    names = ["normal", "bacterial", "viral"]
    y_true = RNG.integers(0, 3, 150)
    logits = RNG.normal(size=(150, 3)) + 1.5 * np.eye(3)[y_true]
    probs = m.softmax(logits)
    report = m.multiclass_report(y_true, probs, names)
    json.dumps(report)
    y_pred = probs.argmax(axis=1)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()
    assert report["classification_report"]["viral"]["f1-score"] == pytest.approx(
        skm.f1_score(y_true, y_pred, average=None)[2]
    )
    per_class = skm.roc_auc_score(y_true, probs, multi_class="ovr", average=None)
    for name, expected in zip(names, per_class):
        assert report["auroc"][name] == pytest.approx(expected)
    assert report["macro_auroc"] == pytest.approx(
        skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    )


def test_multiclass_report_marks_absent_class_auroc_none():
    probs = m.softmax(RNG.normal(size=(20, 3)))
    y_true = np.array([0, 1] * 10)
    report = m.multiclass_report(y_true, probs, ["a", "b", "c"])
    assert report["auroc"]["c"] is None
    defined = [report["auroc"]["a"], report["auroc"]["b"]]
    assert report["macro_auroc"] == pytest.approx(np.mean(defined))


def test_one_vs_rest_picks_the_class_column():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    labels, scores = m.one_vs_rest([0, 2, 1], probs, positive=2)
    np.testing.assert_array_equal(labels, [0, 1, 0])
    np.testing.assert_array_equal(scores, [0.1, 0.6, 0.3])


def test_mean_std_summarises_numeric_keys_across_folds():
    folds = [
        {"accuracy": 0.8, "n": 10, "auroc": 0.9, "name": "a", "ok": True, "cm": [[1]]},
        {"accuracy": 0.9, "n": 12, "auroc": None, "name": "b", "ok": True, "cm": [[1]]},
        {"accuracy": 0.7, "n": np.int64(14), "auroc": 0.8, "name": "c", "ok": False, "cm": [[1]]},
    ]
    summary = m.mean_std(folds)
    assert set(summary) == {"accuracy", "n"}
    assert summary["accuracy"]["mean"] == pytest.approx(0.8)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert summary["n"] == {"mean": 12.0, "std": 2.0}
    assert m.mean_std([{"accuracy": 0.5}]) == {"accuracy": {"mean": 0.5, "std": 0.0}}
    json.dumps(summary)


# ----------------------------------------------------------------------------- bootstrap


def _synthetic_scores(n, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_score = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * (2 * y_true - 1))))
    return y_true, y_score


def test_bootstrap_ci_contains_point_and_narrows_with_more_data():
    def at_half(y, s):
        return m.recall(y, (s >= 0.5).astype(int))

    widths = []
    for n in (100, 1600):
        y_true, y_score = _synthetic_scores(n, seed=n)
        point, low, high = m.bootstrap_ci(y_true, y_score, at_half, n_resamples=300)
        assert low <= point <= high
        assert point == pytest.approx(at_half(y_true, y_score))
        widths.append(high - low)
        # as wide as the binomial normal approximation for the positives (fixed by the stratified resampling)
        assert high - low == pytest.approx(2 * 1.96 * np.sqrt(point * (1 - point) / y_true.sum()), rel=0.2)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(16) = 1/4 in theory


def test_bootstrap_report_widths_match_the_binomial_normal_approximation():
    """A percentile interval of the right width, not merely one that holds the point: 2 x 1.96 x sqrt(p(1-p)/n)
    with n the films the rate counts (stratified resampling keeps the class sizes, so accuracy's is a little
    narrower than a plain binomial's)."""
    for n in (100, 1600):
        y_true, y_score = _synthetic_scores(n, seed=n)
        report = m.bootstrap_report(y_true, y_score, 0.5, n_resamples=1000)
        for name, films in (("accuracy", n), ("recall", y_true.sum()), ("specificity", n - y_true.sum())):
            point, low, high = report[name]
            expected = 2 * 1.96 * np.sqrt(point * (1 - point) / films)
            assert high - low == pytest.approx(expected, rel=0.2), (n, name)


def test_bootstrap_ci_is_reproducible_and_confidence_widens_it():
    y_true, y_score = _synthetic_scores(200, seed=3)
    first = m.bootstrap_ci(y_true, y_score, m.roc_auc, n_resamples=100, seed=7)
    assert first == m.bootstrap_ci(y_true, y_score, m.roc_auc, n_resamples=100, seed=7)
    assert first != m.bootstrap_ci(y_true, y_score, m.roc_auc, n_resamples=100, seed=8)
    wider = m.bootstrap_ci(y_true, y_score, m.roc_auc, n_resamples=100, seed=7, confidence=0.99)
    assert wider[1] <= first[1] and wider[2] >= first[2]


def test_stratified_bootstrap_keeps_class_counts():
    y_true = np.array([1] * 3 + [0] * 47)  # rare positives: plain resamples would often lose them
    y_score = np.linspace(0, 1, 50)

    def positives_per_resample(stratified):
        seen = []

        def record_positives(y, s):
            seen.append(int(y.sum()))
            return 0.0

        m.bootstrap_ci(y_true, y_score, record_positives, n_resamples=100, stratified=stratified)
        return set(seen[:-1])  # the last call is the point estimate on the full data

    assert positives_per_resample(stratified=True) == {3}
    assert len(positives_per_resample(stratified=False)) > 1


def test_bootstrap_report_equals_per_metric_bootstrap_ci():
    y_true, y_score = _synthetic_scores(150, seed=11)
    threshold, beta = 0.4, 2.0
    report = m.bootstrap_report(y_true, y_score, threshold, beta=beta, n_resamples=200, seed=5)
    hard_metrics = {
        "accuracy": m.accuracy,
        "precision": m.precision,
        "recall": m.recall,
        "specificity": m.specificity,
        "f1": m.f1,
        "fbeta": lambda y, p: m.fbeta(y, p, beta),
    }
    for name, metric in hard_metrics.items():
        def at_threshold(y, s, metric=metric):
            return metric(y, (s >= threshold).astype(int))

        expected = m.bootstrap_ci(y_true, y_score, at_threshold, n_resamples=200, seed=5)
        assert report[name] == pytest.approx(expected), name
    rounded = np.round(y_score, 1)  # forces ties into the rank-based AUROC
    expected_auroc = m.bootstrap_ci(y_true, rounded, m.roc_auc, n_resamples=200, seed=5)
    tied = m.bootstrap_report(y_true, rounded, threshold, n_resamples=200, seed=5)
    assert tied["auroc"] == pytest.approx(expected_auroc)


def test_report_with_ci_is_the_report_and_its_intervals_at_one_point():
    y_true, y_score = _synthetic_scores(300, seed=4)
    report, ci = m.report_with_ci(y_true, y_score, 0.4, beta=1.0, n_resamples=200, seed=3)
    assert report == m.binary_report(y_true, y_score, 0.4, beta=1.0)
    assert ci == m.bootstrap_report(y_true, y_score, 0.4, beta=1.0, n_resamples=200, seed=3)
    assert all(ci[name][0] == pytest.approx(report[name]) for name in ci)


def test_a_score_at_the_threshold_is_called_positive_everywhere():
    y_true, y_score = np.array([0, 1, 0, 1]), np.array([0.2, 0.5, 0.5, 0.8])
    assert m.binary_counts(y_true, y_score, 0.5) == (1, 1, 0, 2)
    sweep = m.threshold_sweep(y_true, y_score, thresholds=[0.5])
    assert (sweep["tn"][0], sweep["fp"][0], sweep["fn"][0], sweep["tp"][0]) == (1, 1, 0, 2)
    assert m.bootstrap_report(y_true, y_score, 0.5, n_resamples=20)["recall"][0] == 1.0


def test_bootstrap_report_is_serialisable_and_handles_one_class():
    y_true, y_score = _synthetic_scores(1000, seed=0)
    report = m.bootstrap_report(y_true, y_score, 0.5, n_resamples=1000)
    assert set(report) == {"accuracy", "precision", "recall", "specificity", "f1", "fbeta", "auroc"}
    json.dumps(report)
    negatives = np.zeros(20, int)
    only_negatives = m.bootstrap_report(negatives, np.linspace(0, 1, 20), 0.5, n_resamples=50)
    assert only_negatives["auroc"] is None
    assert only_negatives["specificity"][0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- calibration


def test_reliability_bins_match_sklearn_calibration_curve():
    y_true, y_prob = _synthetic_scores(500, seed=21)
    y_prob = np.concatenate([y_prob, [0.0, 0.2, 1.0]])  # edge values
    y_true = np.concatenate([y_true, [0, 1, 1]])
    bins = m.reliability_bins(y_true, y_prob, n_bins=10)
    observed, predicted = calibration_curve(y_true, y_prob, n_bins=10, strategy="uniform")
    filled = bins["count"] > 0
    np.testing.assert_allclose(bins["observed_frequency"][filled], observed)
    np.testing.assert_allclose(bins["mean_predicted"][filled], predicted)
    np.testing.assert_allclose(bins["edges"], np.linspace(0, 1, 11))
    assert bins["count"].sum() == y_true.size


def test_reliability_bins_keep_empty_bins_as_nan():
    bins = m.reliability_bins([0, 1, 1], [0.05, 0.95, 0.9], n_bins=5)
    np.testing.assert_array_equal(bins["count"], [1, 0, 0, 0, 2])
    assert np.isnan(bins["mean_predicted"][1:4]).all()


def test_ece_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    true_prob = rng.random(20000)
    y_true = (rng.random(20000) < true_prob).astype(int)
    assert m.expected_calibration_error(y_true, true_prob) < 0.02
    overconfident = np.where(true_prob >= 0.5, 0.99, 0.01)
    assert m.expected_calibration_error(y_true, overconfident) > 0.2


def test_ece_handles_multiclass_top_label_confidence():
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    y_true = np.array([0, 1, 1, 2])  # top-label: 0.9 right, 0.9 wrong, 0.8 right, 0.8 right
    # bin (0.8, 0.9]: confidence 0.9, accuracy 0.5; bin (0.7, 0.8]: confidence 0.8, accuracy 1.0
    # ECE = 0.5 * 0.4 + 0.5 * 0.2
    assert m.expected_calibration_error(y_true, probs, n_bins=10) == pytest.approx(0.30)


def test_softmax_rows_sum_to_one_and_apply_temperature():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    probs = m.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    expected = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(probs[0], expected)
    np.testing.assert_allclose(m.softmax(logits, temperature=2.0)[0], m.softmax(logits / 2.0)[0])
    assert np.isfinite(probs).all()  # large logits do not overflow
    with pytest.raises(ValueError):
        m.softmax(logits, temperature=0.0)


def _nll(logits, y_true, temperature):
    probs = m.softmax(logits, temperature)
    return -np.mean(np.log(probs[np.arange(y_true.size), y_true]))


@pytest.mark.parametrize("n_classes, true_temperature", [(2, 2.5), (3, 0.6), (4, 1.8)])
def test_fit_temperature_recovers_known_temperature(n_classes, true_temperature):
    rng = np.random.default_rng(n_classes)
    logits = rng.normal(scale=3.0, size=(4000, n_classes))
    true_probs = m.softmax(logits, true_temperature)
    y_true = (rng.random((4000, 1)) > true_probs.cumsum(axis=1)).sum(axis=1)  # sample each row
    fitted = m.fit_temperature(logits, y_true)
    assert fitted == pytest.approx(true_temperature, rel=0.15)
    assert _nll(logits, y_true, fitted) < _nll(logits, y_true, 1.0)


def test_fit_temperature_stays_in_bounds_and_validates():
    logits = np.array([[5.0, -5.0], [-5.0, 5.0]])
    fitted = m.fit_temperature(logits, np.array([0, 1]))  # perfectly separable: wants T -> 0
    low, high = TEMPERATURE_BOUNDS
    assert low <= fitted < 1.0  # sharpens, but not past the lower bound
    noise = np.random.default_rng(0).normal(scale=5.0, size=(500, 2))
    uninformative = m.fit_temperature(noise, np.random.default_rng(1).integers(0, 2, 500))
    assert 10.0 < uninformative <= high  # logits carry no signal: flatten as far as allowed
    with pytest.raises(ValueError):
        m.fit_temperature(logits, np.array([0, 2]))


def test_predictive_values_match_the_counts_at_the_validation_prevalence():
    rng = np.random.default_rng(11)
    y_true = rng.integers(0, 2, 400)
    y_score = np.clip(0.35 * y_true + rng.random(400) * 0.7, 0, 1)
    report = m.binary_report(y_true, y_score, 0.5)
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    same = m.predictive_values(report["recall"], report["specificity"], report["prevalence"])
    assert same["ppv"] == pytest.approx(tp / (tp + fp)) and same["npv"] == pytest.approx(tn / (tn + fn))


def test_predictive_values_at_a_low_prevalence_by_hand():
    shifted = m.predictive_values(0.9, 0.8, 0.1)  # 0.09 true positives vs 0.18 false positives per scan
    assert shifted["ppv"] == pytest.approx(0.09 / 0.27) and shifted["npv"] == pytest.approx(0.72 / 0.73)
    # nothing called positive: 0.0, as binary_report's precision at the same point (zero_division=0)
    assert m.predictive_values(0.0, 1.0, 0.5)["ppv"] == 0.0
    nothing_called = m.binary_report([0, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    same = m.predictive_values(nothing_called["recall"], nothing_called["specificity"], nothing_called["prevalence"])
    assert (same["ppv"], same["npv"]) == (nothing_called["precision"], nothing_called["npv"])
    with pytest.raises(ValueError, match="prevalence"):
        m.predictive_values(0.9, 0.8, 1.5)
