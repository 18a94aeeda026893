"""The Streamlit app, page by page, through streamlit.testing (no browser), plus jobs/catalog units.

The app is pointed at copies of the ``tiny_run`` fixture (saving a threshold must not change the
shared run) through $XRAY_RUNS_DIR / $XRAY_MODEL_DIR / $XRAY_SAMPLES_DIR.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers.synthetic import xray_like
from xraycore.app import catalog
from xraycore.training import durations as estimate
from xraycore.training import jobs
from xraycore import metrics
from xraycore import models
from xraycore.training import job_command
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.training.config import TrainConfig, read_file
from xraycore.inference.prediction import OUT_OF_DOMAIN_WARNING, Prediction, bytes_source
from xraycore.inference.predictor import Predictor

APP = str(Path(__file__).resolve().parents[2] / "app.py")
HUB_FALLBACK = ("random initialisation: no PyPI package ships ImageNet weights for resnet18; the model hub is "
                "unreachable (no connection to huggingface.co), trained from scratch")
RESULTS_KEY = "diagnose_results"
TIMEOUT = 60  # seconds per script run: the first one imports torch and loads the model


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def runs_root(tiny_run: Path, tmp_path: Path) -> Path:
    """Two finished runs (copies of tiny_run) in a private runs root."""
    root = tmp_path / "runs"
    for name in ("run-a", "run-b"):
        shutil.copytree(tiny_run, root / name)
    return root


@pytest.fixture
def app_env(runs_root: Path, tmp_path: Path, tmp_path_factory, monkeypatch) -> Path:
    samples = tmp_path / "samples"
    for class_name, pneumonia in (("NORMAL", False), ("PNEUMONIA", True)):
        (samples / class_name).mkdir(parents=True)
        Image.fromarray(xray_like(np.random.default_rng(1), 64, pneumonia)).save(samples / class_name / "one.png")
    monkeypatch.setenv("XRAY_RUNS_DIR", str(runs_root))
    monkeypatch.setenv("XRAY_MODEL_DIR", str(runs_root / "run-a"))
    monkeypatch.setenv("XRAY_SAMPLES_DIR", str(samples))
    monkeypatch.setenv("XRAY_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))  # typed paths: the test's folders
    return runs_root


def start_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def start_button(at: AppTest):
    """The Train form's submit button (an admin also sees a Delete button below the form)."""
    return next(button for button in at.button if button.label == "Start training")


def calls(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("Call:")]


# ------------------------------------------------------------------ Diagnose


def record_scored_names(monkeypatch) -> list[str]:
    """Spy on Predictor.predict_sources: the list fills with the name of every image handed to the network."""
    scored: list[str] = []
    original = Predictor.predict_sources

    def counting(self, sources, **options):
        sources = list(sources)
        scored.extend(name for name, _ in sources)
        return original(self, sources, **options)

    monkeypatch.setattr(Predictor, "predict_sources", counting)
    return scored


def test_diagnose_scores_upload_and_reports_unreadable_file_plainly(app_env, monkeypatch):
    scored = record_scored_names(monkeypatch)
    at = start_app()
    assert "run-a" in " ".join(m.value for m in at.sidebar.markdown)  # which model answers
    scan = png_bytes(xray_like(np.random.default_rng(0), 64, pneumonia=True))
    at.file_uploader(key="uploads").set_value([("notes.png", b"just some text, no pixels", "image/png"),
                                                ("chest.png", scan, "image/png")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "text file, not an image" in at.error[0].value
    assert "Traceback" not in at.error[0].value
    [metric] = at.metric  # the readable scan was still scored
    assert metric.label.startswith("P(PNEUMONIA)") and metric.value.endswith("%")
    assert len(calls(at)) == 1 and "at threshold" in calls(at)[0]
    captions = [caption for image in at.image for caption in image.captions]
    # the caption names the method used: Grad-CAM from the forward pass for this GAP + linear head
    assert captions.count("original") == 1 and captions.count("Grad-CAM (one forward pass, as CAM) overlay") == 1
    assert "Colour scale: blue = low, red = high contribution to P(PNEUMONIA)" in [c.value for c in at.caption]
    table = at.dataframe[0].value  # triage order: scored first (most probable first), failed files last, flagged
    assert table["file"].tolist() == ["chest.png", "notes.png"] and table["flag"].tolist()[1] == "failed"
    assert table["flag"].tolist()[0] in ("", "out of domain")

    # Opacity redraws the overlay from the stored heat map: no second forward pass.
    overlay_before = [i.value for i in at.image if i.captions[0].endswith("overlay")]
    at.slider(key="cam_opacity").set_value(0.9).run()
    overlay_after = [i.value for i in at.image if i.captions[0].endswith("overlay")]
    assert overlay_after != overlay_before
    assert scored == ["notes.png", "chest.png"]


def test_diagnose_call_follows_session_threshold_and_samples_work(app_env):
    at = start_app()
    at.multiselect(key="samples").set_value(["NORMAL/one.png", "PNEUMONIA/one.png"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.metric) == 2
    [threshold_slider] = [s for s in at.sidebar.slider if s.label == "Threshold for this session"]
    threshold_slider.set_value(0.0).run()
    assert all("PNEUMONIA" in call for call in calls(at))
    [threshold_slider] = [s for s in at.sidebar.slider if s.label == "Threshold for this session"]
    threshold_slider.set_value(1.0).run()
    assert all("NORMAL" in call for call in calls(at))
    assert at.dataframe[0].value["call"].tolist() == ["NORMAL", "NORMAL"]
    assert all(text.endswith("%") for text in at.dataframe[0].value["probability"])  # as the cards show it
    assert all(metric.value == shown for metric, shown in zip(at.metric, at.dataframe[0].value["probability"]))


def test_diagnose_leads_an_out_of_domain_image_with_the_warning(app_env, monkeypatch):
    real_display = catalog.for_display

    def flagged(prediction, *args, **kwargs):  # as the detector would flag an adult scan
        result = real_display(prediction, *args, **kwargs)
        result.out_of_domain = True
        result.warnings = [*result.warnings, OUT_OF_DOMAIN_WARNING]
        return result

    monkeypatch.setattr(catalog, "for_display", flagged)
    at = start_app()
    at.multiselect(key="samples").set_value(["PNEUMONIA/one.png"]).run()
    assert not at.exception, [e.value for e in at.exception]
    [metric] = at.metric
    assert metric.label == "P(PNEUMONIA) (not reliable for this image)"
    kinds = [node.type for node in at.main if node.type in ("warning", "metric")]
    shown = [node.value for node in at.main if node.type in ("warning", "metric")]
    assert kinds[:2] == ["warning", "metric"] and shown[0] == OUT_OF_DOMAIN_WARNING  # the warning leads
    assert [w.value for w in at.warning].count(OUT_OF_DOMAIN_WARNING) == 1  # said once, not twice


def test_diagnose_switching_back_to_a_heat_map_method_costs_no_forward_pass(app_env, monkeypatch):
    scored: list[str | None] = []
    original = Predictor.predict_sources

    def counting(self, sources, **options):
        scored.append(options.get("cam"))
        return original(self, sources, **options)

    monkeypatch.setattr(Predictor, "predict_sources", counting)
    at = start_app()
    at.multiselect(key="samples").set_value(["PNEUMONIA/one.png"]).run()
    first, second = at.selectbox(key="cam_method").options[:2]
    at.selectbox(key="cam_method").set_value(second).run()
    at.selectbox(key="cam_method").set_value(first).run()
    assert not at.exception, [e.value for e in at.exception]
    assert scored == [first, second]  # back to the first method: its results were kept
    assert len(at.metric) == 1 and len(at.session_state[RESULTS_KEY]["by_method"]) == 2
    at.multiselect(key="samples").set_value(["NORMAL/one.png"]).run()  # a removed image is forgotten everywhere
    assert all(list(results) == ["sample:" + str(app_env.parent / "samples" / "NORMAL" / "one.png")]
               for results in at.session_state[RESULTS_KEY]["by_method"].values() if results)


def test_diagnose_page_selector_says_how_many_pages(app_env):
    rng = np.random.default_rng(5)
    scans = [(f"s{i:02d}.png", png_bytes(xray_like(rng, 48, pneumonia=i % 2 == 0)), "image/png") for i in range(11)]
    at = start_app()
    at.file_uploader(key="uploads").set_value(scans)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="result_page").label == "Page (of 2)" and len(at.metric) == 10
    at.number_input(key="result_page").set_value(2).run()
    assert len(at.metric) == 1


# ------------------------------------------------------------------ Operating point


def test_operating_point_metrics_follow_threshold_and_save_reaches_diagnose(app_env):
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 5  # confusion, sweep, ROC, PR, reliability

    def shown() -> dict[str, str]:
        return {m.label: m.value for m in at.metric}

    [slider] = at.slider
    slider.set_value(0.0).run()
    low = shown()
    assert low["Recall (sensitivity)"] == "1.000" and low["Specificity"] == "0.000"
    at.slider[0].set_value(1.0).run()
    assert shown()["Recall (sensitivity)"] == "0.000" and shown()["Specificity"] == "1.000"
    assert any("95% CI" in caption.value for caption in at.caption)

    shipped = (app_env / "run-a" / "operating_point.json").read_text()
    at.slider[0].set_value(0.25).run()
    assert at.number_input(key=at.slider[0].key.replace("op_threshold", "op_threshold_typed")).value == 0.25
    assert at.button(key="op_save").disabled, "saving for every reader needs a confirmation"
    at.text_input(key="op_save_name").set_value("ward-7")
    at.checkbox(key="op_save_confirm").check().run()
    at.button(key="op_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (app_env / "run-a" / "operating_point.json").read_text() == shipped, "the shipped point is kept"
    saved = operating.get(app_env / "run-a")
    assert saved["name"] == "ward-7" and saved["threshold"] == pytest.approx(0.25)
    assert "active operating point **ward-7**: threshold 0.250" in at.caption[0].value, "no stale number after saving"

    at.switch_page("pages/diagnose.py").run()
    assert "operating point **ward-7**: threshold **0.250**" in [m.value for m in at.sidebar.markdown]

    at.switch_page("pages/operating_point.py").run()
    at.button(key="op_reset").click().run()
    assert operating.active_name(app_env / "run-a") == "internal"


def test_operating_point_threshold_can_be_typed(app_env):
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    [typed] = [box for box in at.number_input if box.label == "…or type it"]
    typed.set_value(0.1234).run()
    assert at.slider[0].value == pytest.approx(0.1234, abs=1e-3)


def test_site_calibration_from_a_labelled_folder(app_env, tiny_dataset):
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    at.text_input(key="op_site_folder").set_value(str(tiny_dataset / "test")).run()
    at.button(key="op_site_fit_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Only 16 images" in w.value and "preview only" in w.value for w in at.warning), "a small sample is flagged"
    assert at.get("plotly_chart")[-1].proto.spec.count("internal validation") >= 1, "site curve beside the internal one"
    assert not any(button.key == "op_site_save" for button in at.button), "a preview only: saved in test_safety_operating"
    assert operating.active_name(app_env / "run-a") == "internal"


def test_operating_point_shows_precision_at_the_users_prevalence(app_env):
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    at.slider[0].set_value(0.4).run()
    predictions = runs.open_run(app_env / "run-a").predictions("val")
    truth, score = (predictions["label"] == 1).astype(int), predictions["probs"][:, 1]
    report = metrics.binary_report(truth, score, 0.4, 2.0)
    [prevalence] = [box for box in at.number_input if box.label.startswith("Share of PNEUMONIA")]
    assert prevalence.value == pytest.approx(report["prevalence"], abs=1e-3)
    prevalence.set_value(0.05).run()
    expected = metrics.predictive_values(report["recall"], report["specificity"], 0.05)
    [line] = [m.value for m in at.markdown if m.value.startswith("At a prevalence of")]
    for value in (expected["ppv"], expected["npv"]):
        assert (f"**{value:.3f}**" if value is not None else "**n/a**") in line
    assert "**5.0%**" in line


def test_operating_point_jumps_to_fbeta_optimal_threshold(app_env):
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    at.slider[0].set_value(0.99).run()
    at.button(key="op_jump").click().run()
    best = float(at.button(key="op_jump").label.split("(")[1].split(",")[0])
    assert at.slider[0].value == pytest.approx(best, abs=1e-3)


# ------------------------------------------------------------------ a multi-class model (Kermany's 3 classes)
THREE_CLASSES = ("NORMAL", "BACTERIAL", "VIRAL")


@pytest.fixture(scope="module")
def three_class_model(tmp_path_factory) -> Path:
    """A real 3-class run of the scratch CNN (trained here: the app must handle what train writes)."""
    from tests.helpers.synthetic import make_dataset
    from xraycore.training.loop import train

    data = make_dataset(tmp_path_factory.mktemp("three"), per_class=12, size=32, classes=THREE_CLASSES)
    config = TrainConfig(data=str(data), backbone="simple_cnn", pretrained="none", image_size=32, epochs=1,
                         batch_size=8, val_fraction=0.34, out=str(tmp_path_factory.mktemp("three-runs")))
    return train(config)


@pytest.fixture
def three_class_env(three_class_model: Path, tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(three_class_model, root / "three")
    monkeypatch.setenv("XRAY_RUNS_DIR", str(root))
    monkeypatch.setenv("XRAY_MODEL_DIR", str(root / "three"))
    monkeypatch.setenv("XRAY_SAMPLES_DIR", str(tmp_path / "no-samples"))
    return root / "three"


def test_diagnose_shows_every_class_of_a_multiclass_model(three_class_env):
    at = start_app()
    class_names = runs.open_run(three_class_env).config["class_names"]
    assert sorted(class_names) == sorted(THREE_CLASSES)
    assert f"classes: {', '.join(class_names)}" in " ".join(m.value for m in at.sidebar.markdown)
    assert [s.label for s in at.sidebar.slider] == ["Overlay opacity"], "no threshold applies to a multi-class call"
    scans = [("first.png", png_bytes(xray_like(np.random.default_rng(3), 48, pneumonia=True)), "image/png"),
             ("second.png", png_bytes(xray_like(np.random.default_rng(4), 48, pneumonia=False)), "image/png")]
    at.file_uploader(key="uploads").set_value(scans)
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    predictor = Predictor(three_class_env)
    expected = {prediction.name: prediction for prediction in
                predictor.predict_sources([(name, bytes_source(data)) for name, data, _ in scans], cam=None)}
    table = at.dataframe[0].value
    assert table["file"].tolist() == ["first.png", "second.png"]
    for _, row in table.iterrows():
        probabilities = expected[row["file"]].probabilities
        assert set(probabilities) == set(THREE_CLASSES)
        assert sum(row[f"P({name})"] for name in THREE_CLASSES) == pytest.approx(1.0, abs=1e-3)
        for name in THREE_CLASSES:
            assert row[f"P({name})"] == pytest.approx(probabilities[name], abs=1e-4)
        assert row["call"] == max(probabilities, key=probabilities.get)
        assert row["P(not NORMAL)"] == pytest.approx(1 - probabilities["NORMAL"], abs=1e-4)
        assert pd.isna(row["threshold"])

    assert [m.label for m in at.metric] == ["P(not NORMAL)"] * 2
    assert all("(most probable class)" in call for call in calls(at)) and len(calls(at)) == 2
    per_class_tables = at.main.dataframe[1:]  # the sidebar has its own table (what the figures rest on)
    assert len(per_class_tables) == 2 and all(t.value["class"].tolist() == list(expected["first.png"].probabilities)
                                               for t in per_class_tables)
    captions = [caption for image in at.image for caption in image.captions]
    assert captions.count("Grad-CAM (one forward pass, as CAM) overlay") == 2


def test_operating_point_works_one_vs_rest_on_a_multiclass_model(three_class_env):
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    assert not at.exception, [e.value for e in at.exception]
    [positive] = [box for box in at.selectbox if box.label == "Positive class (one-vs-rest)"]
    assert sorted(positive.options) == sorted(THREE_CLASSES)
    assert not any(b.key == "op_save" for b in at.button), "a multi-class call ignores thresholds: nothing to save"

    predictions = runs.open_run(three_class_env).predictions("val")
    column = predictions["class_names"].index("VIRAL")
    truth = (predictions["label"] == column).astype(int)
    score = predictions["probs"][:, column]
    positive.set_value("VIRAL").run()
    at.slider[0].set_value(0.3).run()
    expected = metrics.binary_report(truth, score, 0.3, 2.0)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Recall (sensitivity)"] == f"{expected['recall']:.3f}"
    assert shown["Specificity"] == f"{expected['specificity']:.3f}"
    assert len(at.get("plotly_chart")) == 5


# ------------------------------------------------------------------ Train


def record_launches(monkeypatch) -> list[TrainConfig]:
    """Jobs are not started; the list fills with the config each launch saved for ``train --config``."""
    launched: list[TrainConfig] = []

    def start(command, job_id, root, *rest):
        [saved] = read_file(command[command.index("--config") + 1])
        launched.append(saved)
        return jobs.Job(id=job_id, pid=0, command=command, root=str(root), started="now")

    monkeypatch.setattr(jobs, "_start", start)
    return launched


def test_train_refuses_missing_folder(app_env):
    at = start_app()
    at.switch_page("pages/train.py").run()
    at.text_input(key="train_data").set_value(str(app_env / "no-such-folder"))
    start_button(at).click().run()
    assert any("does not exist" in e.value for e in at.error)
    assert not (app_env / jobs.JOBS_DIR).exists()


def test_train_preset_prefills_the_form_says_what_it_is_and_offers_a_quick_check(app_env):
    at = start_app()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_preset").set_value("resnet-d").run()
    assert at.selectbox(key="train_backbone").value == "(every backbone of the preset)"
    assert at.selectbox(key="train_loss").value == "ce"
    assert at.number_input(key="train_epochs").value == 20
    assert at.number_input(key="train_image_size").value == 224
    assert at.multiselect(key="train_augment").value == ["rotate", "center_crop", "invert", "gaussian_blur",
                                                          "gaussian_noise"]
    assert any("ResNet-D for medical image classification" in m.value and "seed 001" in m.value for m in at.markdown)
    backbones = ["resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d", "resnet200d"]
    assert any(c.value == f"Backbones (6): {', '.join(backbones)}" for c in at.caption)
    plan = at.dataframe[0].value
    assert plan["backbone"].tolist() == backbones and plan["epochs"].tolist() == [20] * 6
    assert (plan["estimated time"] == "no measurement yet").all(), "no run of these backbones here yet"

    at.toggle(key="train_smoke").set_value(True).run()
    plan = at.dataframe[0].value
    assert plan["epochs"].tolist() == [1] * 6 and plan["image size"].tolist() == [64] * 6
    assert at.number_input(key="train_epochs").disabled, "a quick check brings its own epochs"


@pytest.mark.slow
def test_train_launches_background_run_and_lists_it(app_env, tiny_dataset):
    at = start_app()
    at.switch_page("pages/train.py").run()
    at.text_input(key="train_data").set_value(str(tiny_dataset / "train"))
    at.selectbox(key="train_backbone").set_value("simple_cnn")
    at.radio(key="train_pretrained").set_value("none")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_batch_size").set_value(8)
    at.number_input(key="train_image_size").set_value(48)
    at.multiselect(key="train_augment").set_value([])
    at.text_input(key="train_run_id").set_value("from-the-app")
    start_button(at).click().run()  # the page returns at once; training runs in a background process
    assert not at.exception, [e.value for e in at.exception]
    assert any("from-the-app" in s.value for s in at.success)

    [job] = jobs.list_jobs(app_env)
    deadline = time.monotonic() + 120
    try:
        while job.alive() and time.monotonic() < deadline:
            time.sleep(1)
        assert not job.alive(), "the background run did not finish within 2 minutes"
    finally:
        if job.alive():  # never leave the test's own training process behind
            os.killpg(job.pid, signal.SIGKILL)
    assert job.state() == "finished", job.log_tail()
    at.run()
    runs_table = at.dataframe[-1].value
    assert runs_table.loc[runs_table["id"] == "from-the-app", "state"].tolist() == ["finished"]
    assert any("Job from-the-app: finished" in h.value for h in at.subheader)


def test_train_form_says_which_weights_and_how_long_before_launching(app_env, tiny_dataset, monkeypatch):
    at = start_app()
    at.switch_page("pages/train.py").run()
    pretrained = at.radio(key="train_pretrained")
    assert pretrained.value == "auto" and pretrained.options[0].startswith("auto"), "the choice that can work here"
    at.selectbox(key="train_backbone").set_value("resnet18").run()
    [warning] = [w.value for w in at.warning if "resnet18" in w.value]
    assert "trained from scratch" in warning and "no PyPI package ships ImageNet weights for resnet18" in warning
    at.selectbox(key="train_backbone").set_value("mobilenetv2_100").run()
    sentence, _ = models.planned_weights("mobilenetv2_100", "auto")  # the wheel's file where it is installed
    assert any(sentence in element.value for element in [*at.caption, *at.warning])

    # A backbone this machine has trained: the estimate scales the measured speed by pixels.
    at.text_input(key="train_data").set_value(str(tiny_dataset / "train"))
    at.selectbox(key="train_backbone").set_value("simple_cnn")
    at.number_input(key="train_image_size").set_value(96).run()
    [row] = at.dataframe[0].value.to_dict("records")
    known = estimate.best_measurement(estimate.measurements(app_env), "simple_cnn", 96)
    assert row["measured speed"] == f"{known.at(96):.1f} images/s (from run {known.run_id} at 48 px)"
    assert row["training images"] == 27 and row["estimated time"].startswith("about")  # the form's recipe: 15% val
    assert any(c.value.startswith("In all about") for c in at.caption)

    launched = record_launches(monkeypatch)
    at.toggle(key="train_smoke").set_value(True).run()
    start_button(at).click().run()
    [saved] = launched
    assert (saved.epochs, saved.max_per_class) == (1, 6), "the quick check's own single epoch"


def test_train_starts_again_from_a_runs_settings_under_a_free_name(app_env, monkeypatch):
    at = start_app()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="restart_ref").set_value("run-a")
    at.button(key="restart_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    train = runs.open_run(app_env / "run-a").config["train"]
    assert at.text_input(key="train_data").value == train["data"]
    assert at.selectbox(key="train_backbone").value == "simple_cnn" and at.radio(key="train_pretrained").value == "none"
    assert [at.number_input(key=f"train_{name}").value for name in ("epochs", "batch_size", "image_size", "lr")] == [
        3, 8, 48, pytest.approx(3e-3)]
    assert at.multiselect(key="train_augment").value == ["hflip"]
    assert at.text_input(key="train_run_id").value == "run-a-2", "a free name, not the run's own"

    at.text_input(key="train_run_id").set_value("run-b").run()
    assert any("'run-b-2' is free" in w.value for w in at.warning)
    at.button(key="train_use_free").click().run()
    assert at.text_input(key="train_run_id").value == "run-b-2"

    launched = record_launches(monkeypatch)
    start_button(at).click().run()
    [saved] = launched
    assert (saved.epochs, saved.val_fraction, saved.image_size, saved.augment) == (3, 0.25, 48, ["hflip"])
    assert saved.to_flat_dict() == {**train, "out": str(app_env.resolve())}, "every setting of the run, its folder apart"


def test_train_page_shows_batch_progress_weights_used_and_a_consistent_runs_table(app_env):
    running = runs.Run(app_env / "run-b")
    running.write_json(runs.CONFIG_FILE, {**running.config, "weights_source": HUB_FALLBACK,
                                          "train": {**running.config["train"], "pretrained": "hub"}})
    running.set_status("running", pid=os.getpid(), epoch=1, epochs=3, message="", progress={
        "epoch": 2, "batch": 12, "batches": 40, "images_per_second": 35.04, "seconds_left": 190, "phase": "training"})
    (app_env / jobs.JOBS_DIR).mkdir()
    (app_env / jobs.JOBS_DIR / "run-b.json").write_text(json.dumps(
        {"id": "run-b", "pid": os.getpid(), "command": [], "root": str(app_env), "started": "2026-11-21T22:15:03+00:00"}))
    early = runs.create_run({"train": {"backbone": "simple_cnn"}, "backbone": "simple_cnn"}, root=app_env, run_id="early")
    early.set_status("stopped", message="stopped before the first epoch ended, so no weights were kept")

    at = start_app()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(h.value == "Job run-b: running" for h in at.subheader)
    assert "**run-b**: running · epoch 2 of 3 · batch 12 of 40 · 35.0 images/s · about 3 min left" in [
        m.value for m in at.markdown]
    assert at.get("progress")[0].value == pytest.approx(int((1 + 12 / 40) / 3 * 100), abs=1)
    assert any("**random init: ImageNet unavailable** (asked for: hub)" in w.value for w in at.warning)
    assert at.button(key="stop:run-b").proto.help.startswith("Stops after the current batch")

    assert at.selectbox(key="resume_ref").options == ["early"], "a run stopped before its first epoch can continue"
    assert "early" in at.selectbox(key="delete_ref").options and "run-b" not in at.selectbox(key="delete_ref").options

    table = at.dataframe[-1].value.set_index("id")
    assert "best_value" not in table and {"weights", "val AUROC", "val accuracy", "chosen by"} <= set(table.columns)
    assert table.loc["run-b", "weights"] == "random init: ImageNet unavailable"
    assert table.loc["run-a", "val AUROC"] == pytest.approx(
        [row for row in runs.Run(app_env / "run-a").metrics() if row["best"]][-1]["val_auroc"], abs=1e-3)
    assert table["started"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d").all()


def _wait_for(job: jobs.Job, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    try:
        while job.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not job.alive(), f"the background job did not finish within {seconds:.0f} s"
    finally:
        if job.alive():  # never leave the test's own training process behind
            os.killpg(job.pid, signal.SIGKILL)


@pytest.mark.slow
def test_train_page_continues_a_stopped_run(app_env, tiny_dataset):
    from xraycore.training.loop import train

    config = TrainConfig(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                         epochs=2, batch_size=8, val_fraction=0.25, fit_ood=False, out=str(app_env))
    started: list[Path] = []

    def stop_in_epoch_2(event: dict) -> None:
        if event["kind"] == "start":
            started.append(Path(event["run"]))
        if event["kind"] == "batch" and event["epoch"] == 2:
            (started[0] / runs.STOP_FILE).touch()

    stopped = runs.Run(train(config, progress=stop_in_epoch_2))
    assert stopped.status()["state"] == "stopped"

    at = start_app()
    at.switch_page("pages/train.py").run()
    assert at.selectbox(key="resume_ref").options == [stopped.id]
    at.button(key="resume_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Continuing {stopped.id}" in s.value for s in at.success)
    [job] = [job for job in jobs.list_jobs(app_env) if job.id == stopped.id]
    _wait_for(job)
    assert job.state() == "finished", job.log_tail()
    assert [row["epoch"] for row in stopped.metrics()] == [1, 2]
    at.run()
    assert not any(box.key == "resume_ref" for box in at.selectbox), "nothing is left to continue"


# ------------------------------------------------------------------ Compare


def test_compare_two_runs(app_env):
    at = start_app()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    models = at.multiselect(key="compare_runs")
    assert models.options[0] == "default model (run-a)", "the bundled (default) model is pickable, first"
    table = at.dataframe[0].value
    assert len(table) == 2 and table["auroc"].notna().all()
    assert "F2" in table and "fbeta" not in table, "F-beta is named by its beta"
    assert table["auroc 95% CI"].str.fullmatch(r"\d\.\d{3}–\d\.\d{3}").all(), "one CI cell per metric"
    evidence = at.dataframe[1].value
    assert evidence["data"].str.startswith("internal validation").all()
    assert len(at.get("plotly_chart")) >= 6  # bars, two confusion matrices, ROC, PR, training curves
    at.number_input(key="compare_beta").set_value(1.0).run()
    assert "F1" in at.dataframe[0].value and "F2" not in at.dataframe[0].value


# ------------------------------------------------------------------ jobs and catalog


def test_build_command_single_process_and_torchrun():
    single = job_command.build_command(Path("/runs/.jobs/run-1.train-config.json"), "run-1", python="py")
    assert single == ["py", "-m", "xraycore", "train", "--config", "/runs/.jobs/run-1.train-config.json",
                      "--run-id", "run-1", "--quiet"]
    several = job_command.build_command(Path("c.json"), "run-1", processes=4, python="py")
    assert several[:7] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m"]
    assert several[7:] == ["xraycore", "train", "--config", "c.json", "--run-id", "run-1", "--quiet"]
    with pytest.raises(ValueError):
        job_command.build_command(Path("c.json"), "../escape")


def test_job_environment_and_inputs(tmp_path, monkeypatch):
    env = job_command.job_environment(1, base={"PATH": "/bin"})
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    assert jobs.augment_specs(["rotate", "hflip"], [{"name": "rotate", "degrees": 6}]) == [
        {"name": "rotate", "degrees": 6}, "hflip"]
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setenv("XRAY_DATA_ROOTS", str(tmp_path))
    assert jobs.validate_directory(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ValueError, match="not a folder"):
        jobs.validate_directory(str(tmp_path / "file.txt"))
    with pytest.raises(ValueError, match="enter"):
        jobs.validate_directory("  ")
    run = runs.Run(tmp_path)
    jobs.stop(run)
    assert (tmp_path / "STOP").exists()


def test_default_model_falls_back_to_newest_finished_run(runs_root, monkeypatch):
    monkeypatch.setenv("XRAY_MODEL_DIR", str(runs_root / "missing"))
    assert catalog.default_model_dir(runs_root) == (runs_root / runs.list_runs(runs_root)[0].id).resolve()
    (runs_root / "run-b" / "status.json").write_text(json.dumps({"state": "failed"}))
    assert [choice.path.name for choice in catalog.model_choices(runs_root)] == ["run-a"]


def test_display_results_are_small_and_csv_has_no_metadata():
    big = np.random.default_rng(0).random((1500, 1200))
    prediction = Prediction(name="scan.dcm", probabilities={"NORMAL": 0.3, "PNEUMONIA": 0.7}, label="PNEUMONIA",
                            positive_class="PNEUMONIA", positive_probability=0.7, threshold=0.5,
                            metadata={"modality": "CR"}, image=big, heatmap=np.ones((1024, 1024), np.float32))
    result = catalog.for_display(prediction)
    assert max(result.image.shape) == 512 and result.image.dtype == np.uint8 and max(result.heatmap.shape) <= 512
    assert result.call(0.5) == "PNEUMONIA" and result.call(0.8) == "NORMAL"
    result.out_of_domain = True
    results = [result, catalog.for_display(Prediction(name="x.png", error="unreadable"))]
    text = catalog.summary_csv(results, 1 / 3, model="run-a (resnet18)", model_version="2026-11-28T10:00:00",
                               operating_point="internal", date="2026-11-29")
    header, first, failed = text.splitlines()
    assert header == ("file,flag,call,threshold,P(NORMAL),P(PNEUMONIA),warnings,error,out_of_domain,"
                      "operating_point,model,model_version,date")
    assert first.startswith("scan.dcm,out of domain,PNEUMONIA,0.3333,0.3,0.7,")
    assert first.endswith(",yes,internal,run-a (resnet18),2026-11-28T10:00:00,2026-11-29")
    assert failed.startswith("x.png,failed,not scored (the file could not be read),,") and ",unreadable,,internal," in failed
    assert "CR" not in text and "/" not in text.replace("2026-11-29", "")  # no DICOM tags, no paths


def test_probabilities_show_a_significant_digit_never_a_bare_zero_or_one():
    shown = {p: catalog.format_probability(p) for p in (0.0, 0.00004, 0.001, 0.0123, 0.5, 0.9994, 0.99996, 1.0)}
    assert shown == {0.0: "< 0.1%", 0.00004: "< 0.1%", 0.001: "0.1%", 0.0123: "1.2%", 0.5: "50.0%",
                     0.9994: "99.9%", 0.99996: "> 99.9%", 1.0: "> 99.9%"}
    assert catalog.format_probability(None) == "n/a"
    sure = catalog.DisplayResult(name="a.png", class_names=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA",
                                 probabilities={"NORMAL": 0.00002, "PNEUMONIA": 0.99998}, positive_probability=0.99998)
    [row, failed] = catalog.summary_rows([sure, catalog.DisplayResult(name="b.png", error="unreadable")], 0.123456789)
    assert row["probability"] == "> 99.9%" and failed["probability"] == ""
    assert row["threshold"] == 0.1235
