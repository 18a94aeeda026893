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

from tests.synthetic import xray_like
from xraycore import catalog, jobs, metrics, runs
from xraycore.predict import Prediction, Predictor, bytes_source

APP = str(Path(__file__).resolve().parents[1] / "app.py")
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
def app_env(runs_root: Path, tmp_path: Path, monkeypatch) -> Path:
    samples = tmp_path / "samples"
    for class_name, pneumonia in (("NORMAL", False), ("PNEUMONIA", True)):
        (samples / class_name).mkdir(parents=True)
        Image.fromarray(xray_like(np.random.default_rng(1), 64, pneumonia)).save(samples / class_name / "one.png")
    monkeypatch.setenv("XRAY_RUNS_DIR", str(runs_root))
    monkeypatch.setenv("XRAY_MODEL_DIR", str(runs_root / "run-a"))
    monkeypatch.setenv("XRAY_SAMPLES_DIR", str(samples))
    return runs_root


def start_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def calls(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("Call:")]


# ------------------------------------------------------------------ Diagnose


def test_diagnose_scores_upload_and_reports_unreadable_file_plainly(app_env, monkeypatch):
    scored: list[str] = []
    original = Predictor.predict_sources

    def counting(self, sources, **options):
        sources = list(sources)
        scored.extend(name for name, _ in sources)
        return original(self, sources, **options)

    monkeypatch.setattr(Predictor, "predict_sources", counting)
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
    assert metric.label == "P(PNEUMONIA)" and metric.value.endswith("%")
    assert len(calls(at)) == 1 and "at threshold" in calls(at)[0]
    captions = [caption for image in at.image for caption in image.captions]
    # the caption names the method used: Grad-CAM from the forward pass for this GAP + linear head
    assert captions.count("original") == 1 and captions.count("Grad-CAM (one forward pass, as CAM) overlay") == 1
    assert at.dataframe[0].value["file"].tolist() == ["notes.png", "chest.png"]

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

    at.slider[0].set_value(0.25).run()
    at.button(key="op_save").click().run()
    saved = json.loads((app_env / "run-a" / "operating_point.json").read_text())
    assert saved["threshold"] == pytest.approx(0.25) and saved["source"] == "chosen on the Operating point page"

    at.switch_page("pages/diagnose.py").run()
    assert "saved threshold: **0.250**" in [m.value for m in at.sidebar.markdown]


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
    from tests.synthetic import make_dataset
    from xraycore.config import TrainConfig
    from xraycore.train import train

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
    per_class_tables = at.dataframe[1:]
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


def test_train_refuses_missing_folder(app_env):
    at = start_app()
    at.switch_page("pages/train.py").run()
    at.text_input(key="train_data").set_value("/no/such/folder")
    at.button[-1].click().run()  # a form's submit button
    assert any("does not exist" in e.value for e in at.error)
    assert not (app_env / jobs.JOBS_DIR).exists()


def test_train_preset_prefills_the_form(app_env):
    at = start_app()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train_preset").set_value("resnet-d").run()
    assert at.selectbox(key="train_backbone").value == "(every backbone of the preset)"
    assert at.selectbox(key="train_loss").value == "ce"
    assert at.number_input(key="train_epochs").value == 20
    assert at.number_input(key="train_image_size").value == 224
    assert at.multiselect(key="train_augment").value == ["rotate", "center_crop", "invert", "gaussian_blur",
                                                          "gaussian_noise"]


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
    at.button[-1].click().run()  # the page returns at once; training runs in a background process
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


def _wait_for(job: jobs.Job, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    try:
        while job.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not job.alive(), f"the background job did not finish within {seconds:.0f} s"
    finally:
        if job.alive():  # never leave the test's own training process behind
            os.killpg(job.pid, signal.SIGKILL)


def test_train_page_continues_a_stopped_run(app_env, tiny_dataset):
    from xraycore.config import TrainConfig
    from xraycore.train import train

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
    table = at.dataframe[0].value
    assert sorted(table["id"]) == ["run-a", "run-b"]
    assert table["auroc"].notna().all() and "auroc_low" in table
    assert len(at.get("plotly_chart")) >= 6  # bars, two confusion matrices, ROC, PR, training curves


# ------------------------------------------------------------------ jobs and catalog


def test_build_command_single_process_and_torchrun():
    options = {"data": "/data", "backbone": "simple_cnn", "epochs": 1, "augment": ["hflip", {"name": "rotate", "degrees": 6}],
               "image_size": None, "amp": False}
    single = jobs.build_command(options, "run-1", python="py")
    assert single[:4] == ["py", "-m", "xraycore", "train"]
    assert single[-3:] == ["--run-id", "run-1", "--quiet"]
    assert "--image-size" not in single and single[single.index("--amp") + 1] == "false"
    assert json.loads(single[single.index("--augment") + 1]) == options["augment"]
    several = jobs.build_command(options, "run-1", processes=4, python="py")
    assert several[:7] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m"]
    assert several[7:9] == ["xraycore", "train"] and several[-3:] == ["--run-id", "run-1", "--quiet"]
    with pytest.raises(ValueError):
        jobs.build_command(options, "../escape")
    with pytest.raises(ValueError, match="unknown training option"):
        jobs.build_command({"epoch": 3}, "run-1")


def test_job_environment_and_inputs(tmp_path):
    env = jobs.job_environment(1, base={"PATH": "/bin"})
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    assert jobs.augment_specs(["rotate", "hflip"], [{"name": "rotate", "degrees": 6}]) == [
        {"name": "rotate", "degrees": 6}, "hflip"]
    (tmp_path / "file.txt").write_text("x")
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
    rows = catalog.summary_rows([result, catalog.for_display(Prediction(name="x.png", error="unreadable"))], 0.5)
    text = catalog.rows_to_csv(rows)
    assert text.splitlines()[0] == "file,call,threshold,P(NORMAL),P(PNEUMONIA),warnings,error"
    assert "CR" not in text and "unreadable" in text
