"""Comparing runs, the plotly figure builders and the HTML study report, on real tiny runs."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from tests.helpers.synthetic import make_dataset
from xraycore.evaluation import comparison
from xraycore.evaluation import figures
from xraycore import metrics
from xraycore.runs import directory as runs
from xraycore.training.config import TrainConfig
from xraycore.evaluation.study_report import build_study_html, write_study_report
from xraycore.training.loop import train

NOTE = "<script>alert('x')</script> lr sweep"
TABLE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "fbeta", "auroc")


def _train(root: Path, data: Path, **options) -> runs.Run:
    values = dict(data=str(data), backbone="simple_cnn", pretrained="none", image_size=48, epochs=1,
                  batch_size=8, lr=3e-3, val_fraction=0.34, fit_ood=False, out=str(root), notes=NOTE)
    return runs.Run(train(TrainConfig(**{**values, **options})))


@pytest.fixture(scope="module")
def study_root(tmp_path_factory, tiny_dataset) -> Path:
    """Studies 'cmp' (two backbones, two learning rates, with a test split), 'cv' (2 folds) and an
    unaffiliated 3-class run."""
    root = tmp_path_factory.mktemp("study_runs")
    common = dict(study="cmp", preset="transfer-7", epochs=2)
    _train(root, tiny_dataset, **common)
    _train(root, tiny_dataset, backbone="mobilenetv2_100", lr=1e-3, **common)
    binary = make_dataset(tmp_path_factory.mktemp("binary"), per_class=12)
    for fold in (0, 1):
        _train(root, binary, study="cv", folds=2, fold=fold)
    _three_class_run(root)
    return root


def _three_class_run(root: Path) -> runs.Run:
    """A finished 3-class run written the way training (xraycore.training) writes one (no threshold is saved for
    multi-class runs), built from the runs API so its logits are known exactly. A really trained
    3-class run goes through the app in tests/app/test_app.py."""
    names = ["BACTERIAL", "NORMAL", "VIRAL"]
    run = runs.create_run({"backbone": "simple_cnn", "class_names": names, "positive_class": None,
                           "study": None, "train": {"backbone": "simple_cnn", "notes": NOTE}}, root=root)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    logits = rng.normal(size=(30, 3)) + 2.0 * np.eye(3)[labels]
    run.write_predictions("val", [f"img{i}.png" for i in range(30)], labels, metrics.softmax(logits), names,
                          logits=logits)
    run.save_operating_point(temperature=1.0, beta=2.0)
    run.set_status("finished")
    return run


@pytest.fixture(scope="module")
def compared(study_root) -> list[runs.Run]:
    return comparison.study_runs("cmp", study_root)


@pytest.fixture(scope="module")
def folds(study_root) -> list[runs.Run]:
    return comparison.study_runs("cv", study_root)


@pytest.fixture(scope="module")
def three_class(study_root) -> runs.Run:
    (run,) = [run for run in runs.list_runs(study_root) if run.config.get("study") is None]
    return run


def _expected_report(run: runs.Run, split: str = "val") -> dict:
    """binary_report computed straight from the CSV at the saved operating point."""
    predictions = run.predictions(split)
    positive = run.operating_point["positive_index"]
    truth = (predictions["label"] == positive).astype(int)
    return metrics.binary_report(truth, predictions["probs"][:, positive], run.operating_point["threshold"], 2.0)


# ---------------------------------------------------------------- evaluation/comparison.py


def test_study_names_and_runs(study_root, compared, folds):
    assert comparison.study_names(study_root) == ["cmp", "cv"]
    assert [run.config["backbone"] for run in compared] == ["simple_cnn", "mobilenetv2_100"]
    assert [run.config["train"]["fold"] for run in folds] == [0, 1]  # oldest first = fold order
    assert comparison.study_runs("nope", study_root) == []


def test_run_label_is_short_and_unique(compared, folds):
    labels = [comparison.run_label(run) for run in compared + folds]
    assert len(set(labels)) == len(labels)
    assert labels[0].startswith("simple_cnn · ") and labels[0].endswith(compared[0].id[-6:])
    assert "fold 2" in comparison.run_label(folds[1])


@pytest.mark.parametrize("split", ["val", "test"])
def test_comparison_table_matches_binary_report(compared, split):
    rows = comparison.comparison_table(compared, split=split)
    assert [row["id"] for row in rows] == [run.id for run in compared]
    for run, row in zip(compared, rows):
        expected = _expected_report(run, split)
        assert row["state"] == "finished" and row["study"] == "cmp" and row["fold"] is None
        assert row["n"] == expected["n"] and row["threshold"] == run.operating_point["threshold"]
        for metric in TABLE_METRICS:
            assert row[metric] == pytest.approx(expected[metric]), metric
            assert row[f"{metric}_low"] <= row[metric] + 1e-12 <= row[f"{metric}_high"] + 2e-12, metric


def test_evaluate_run_threshold_override_and_missing_split(tiny_run, folds):
    run = runs.Run(tiny_run)
    report = comparison.evaluate_run(run, threshold=0.0, with_ci=False)
    assert report["recall"] == 1.0 and report["threshold"] == 0.0 and "ci" not in report
    assert report["positive_class"] == "PNEUMONIA"
    assert comparison.scores(folds[0], "test") is None
    with pytest.raises(ValueError, match="no test predictions"):
        comparison.evaluate_run(folds[0], "test")


def test_unfinished_run_keeps_an_empty_row(tmp_path):
    pending = runs.create_run({"backbone": "simple_cnn", "study": "pending", "train": {"lr": 0.1}}, root=tmp_path)
    (row,) = comparison.comparison_table([pending])
    assert row["state"] == "running" and row["accuracy"] is None and row["n"] is None
    assert comparison.curves([pending]) == ({}, {})
    assert comparison.fold_summary([pending]) == {}


def test_config_differences_lists_exactly_the_changed_settings(compared, folds):
    differences = comparison.config_differences(compared)
    assert set(differences) == {"backbone", "lr"}
    labels = [comparison.run_label(run) for run in compared]
    assert differences["lr"] == {labels[0]: 3e-3, labels[1]: 1e-3}
    assert set(comparison.config_differences(folds)) == {"fold"}
    assert comparison.config_differences(compared[:1]) == {}


def test_fold_summary_matches_numpy(folds):
    summary = comparison.fold_summary(folds)
    reports = [comparison.evaluate_run(run, with_ci=False) for run in folds]
    for metric in ("accuracy", "recall", "auroc", "brier"):
        values = np.array([report[metric] for report in reports])
        assert summary[metric]["mean"] == pytest.approx(values.mean())
        assert summary[metric]["std"] == pytest.approx(values.std(ddof=1))


def test_scores_one_vs_rest_for_three_classes(three_class):
    predictions = three_class.predictions("val")
    assert predictions["class_names"] == ["BACTERIAL", "NORMAL", "VIRAL"]
    truth, score = comparison.scores(three_class)  # no configured positive class among them: the last one
    np.testing.assert_array_equal(truth, predictions["label"] == 2)
    np.testing.assert_array_equal(score, predictions["probs"][:, 2])
    truth, score = comparison.scores(three_class, positive="BACTERIAL")
    np.testing.assert_array_equal(truth, predictions["label"] == 0)
    np.testing.assert_array_equal(score, predictions["probs"][:, 0])
    with pytest.raises(ValueError, match="not a class"):
        comparison.scores(three_class, positive="PNEUMONIA")
    report = comparison.evaluate_run(three_class, with_ci=False)
    assert report["positive_class"] == "VIRAL" and report["threshold"] == 0.5
    assert report["multiclass"]["accuracy"] == pytest.approx(
        np.mean(predictions["probs"].argmax(axis=1) == predictions["label"]))
    (row,) = comparison.comparison_table([three_class], with_ci=False)
    assert row["macro_auroc"] == report["multiclass"]["macro_auroc"]


def test_curves_are_keyed_by_label(compared):
    roc, pr = comparison.curves(compared)
    label = comparison.run_label(compared[0])
    assert set(roc) == set(pr) == {comparison.run_label(run) for run in compared}
    fpr, tpr, auc = roc[label]
    assert fpr[0] == 0.0 and tpr[-1] == 1.0
    assert auc == pytest.approx(_expected_report(compared[0])["auroc"])
    recall, precision, ap = pr[label]
    assert recall[0] == 1.0 and ap == pytest.approx(_expected_report(compared[0])["auprc"])


def test_reported_numbers_come_from_the_preset(compared, folds):
    assert comparison.reported_numbers(compared[0]) == {"accuracy": 0.8606}
    assert comparison.reported_numbers(compared[1]) == {"accuracy": 0.8958}
    assert comparison.reported_numbers(folds[0]) is None  # no preset


# ---------------------------------------------------------------- evaluation/figures.py


def test_figure_builders_draw_what_they_are_given():
    truth = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.6])
    fpr, tpr, _ = metrics.roc_curve(truth, score)
    precision, recall, _ = metrics.pr_curve(truth, score)

    confusion = figures.confusion_matrix_figure(np.array([[3, 1], [1, 3]]), ["NORMAL", "PNEUMONIA"], "cm")
    assert isinstance(confusion, go.Figure) and len(confusion.data) == 1
    assert confusion.data[0].text[0][1] == "1<br>(25%)"

    roc = figures.roc_figure({"a": (fpr, tpr, 0.8), "b": (fpr, tpr, 0.7)}, point=(0.25, 0.75))
    assert len(roc.data) == 4  # two curves, chance, operating point
    assert tuple(roc.data[-1].x) == (0.25,) and tuple(roc.data[-1].y) == (0.75,)
    assert "AUC 0.800" in roc.data[0].name
    assert len(figures.roc_figure({"a": (fpr, tpr, 0.8)}).data) == 2

    pr = figures.pr_figure({"a": (recall, precision, 0.9)}, point=(0.75, 0.75), prevalence=0.5)
    assert len(pr.data) == 3 and tuple(pr.data[1].y) == (0.5, 0.5) and tuple(pr.data[2].x) == (0.75,)

    bins = metrics.reliability_bins(truth, score, n_bins=5)
    reliability = figures.reliability_figure(bins, metrics.expected_calibration_error(truth, score, 5))
    assert len(reliability.data) == 2 and "ECE" in reliability.layout.title.text
    assert [text for text in reliability.data[0].text if text] == [f"n={c}" for c in bins["count"] if c]

    sweep = metrics.threshold_sweep(truth, score)
    threshold = figures.threshold_figure(sweep, threshold=0.45, beta=2.0)
    assert [trace.name for trace in threshold.data][-1] == "F2" and len(threshold.data) == 4
    assert threshold.layout.shapes[0].x0 == 0.45

    histories = {"a": [{"epoch": 1, "val_loss": 0.7}, {"epoch": 2, "val_loss": 0.5}], "b": [{"epoch": 1}]}
    curves = figures.training_curves_figure(histories, "val_loss")
    assert len(curves.data) == 1 and tuple(curves.data[0].y) == (0.7, 0.5)

    rows = [{"label": "ours", "accuracy": 0.8, "accuracy_low": 0.7, "accuracy_high": 0.85, "recall": 0.9},
            {"label": "reported", "accuracy": 0.86}]
    bars = figures.metric_bars_figure(rows, ["accuracy", "recall"])
    assert len(bars.data) == 2
    assert bars.data[0].error_y.array[0] == pytest.approx(0.05)
    assert bars.data[0].error_y.arrayminus[0] == pytest.approx(0.1)
    assert bars.data[1].error_y.array is None and bars.data[1].y[1] is None


def test_figures_render_real_run_numbers(tiny_run):
    run = runs.Run(tiny_run)
    report = comparison.evaluate_run(run, with_ci=False)
    figure = figures.confusion_matrix_figure(np.array(report["confusion_matrix"]), report["class_names"])
    assert int(figure.data[0].text[1][1].split("<br>")[0]) == report["confusion_matrix"][1][1]
    roc, _ = comparison.curves([run])
    point = (1 - report["specificity"], report["recall"])
    assert len(figures.roc_figure(roc, point=point).data) == 3


# ---------------------------------------------------------------- evaluation/study_report.py


def test_study_report_is_self_contained_and_escaped(study_root, compared):
    path = write_study_report("cmp", root=study_root)
    assert path == study_root / "cmp.html"
    page = path.read_text(encoding="utf-8")
    for run in compared:
        assert comparison.run_label(run) in page and run.id in page
    assert page.count("plotly.js v") == 1  # the library inlined exactly once
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched from a CDN
    assert "&lt;script&gt;alert(" in page and "<script>alert(" not in page
    assert "Metrics (val)" in page and "Metrics (test)" in page
    assert "Reported by the source study" in page and "0.861" in page and "0.896" in page
    assert "Configuration differences" in page and "mobilenetv2_100" in page
    assert "Cross-validation" not in page


def test_a_study_name_with_markup_is_shown_as_text(compared):
    page = build_study_html("<script>alert('study')</script>", compared)
    assert "<script>alert('study')" not in page
    assert page.count("&lt;script&gt;alert(&#39;study&#39;)&lt;/script&gt;") == 2  # the title and the heading


def test_fold_study_and_single_run_reports(study_root, three_class, tmp_path):
    page = write_study_report("cv", root=study_root, output=tmp_path / "cv.html").read_text(encoding="utf-8")
    summary = comparison.fold_summary(comparison.study_runs("cv", study_root))
    assert "Cross-validation (mean ± std)" in page
    assert f"{summary['accuracy']['mean']:.3f} ± {summary['accuracy']['std']:.3f}" in page
    single = write_study_report(three_class.id, root=study_root, output=tmp_path / "one.html").read_text(encoding="utf-8")
    assert "VIRAL" in single
    predictions = three_class.predictions("val")
    overall = metrics.accuracy(predictions["label"], predictions["probs"].argmax(axis=1))
    assert "<th>multiclass_accuracy</th>" in single and f"{overall:.3f}" in single


def test_a_multiclass_studys_reported_accuracy_meets_ours_over_all_classes():
    from xraycore.evaluation.study_report import _ours

    row = {"accuracy": 0.811, "multiclass_accuracy": 0.793, "auroc": 0.834}
    assert _ours(row, "accuracy") == 0.793, "not the one-vs-rest accuracy of the positive class"
    assert _ours(row, "accuracy_warmup_cosine") == 0.793 and _ours(row, "auroc") == 0.834
    assert _ours({"accuracy": 0.9, "f1": 0.8}, "accuracy") == 0.9 and _ours({"f1": 0.8}, "precision") is None


def test_unknown_study_lists_the_known_ones(study_root):
    with pytest.raises(ValueError, match="cmp, cv"):
        write_study_report("no-such-study", root=study_root)
    with pytest.raises(ValueError, match="known studies"):
        write_study_report("../escape", root=study_root)
