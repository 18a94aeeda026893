"""The grouped training config: one declaration per setting (help and choices in field metadata), read flat or
grouped, old runs' flat records still loadable, presets in either shape, the CLI generated from it, and
``train --config FILE``, which background jobs start from."""
from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import pytest

from xraycore.access import policy as access
from xraycore.cli import main as cli
from xraycore.training import config
from xraycore.training import jobs
from xraycore import models
from xraycore.training import presets
from xraycore.runs import directory as runs
from xraycore.app import train_form as trainform
from xraycore.training.config import GROUPS, TrainConfig, read_file, settings, write_file

REPO = Path(__file__).resolve().parents[2]
TINY = dict(backbone="simple_cnn", pretrained="none", image_size=32, epochs=1, batch_size=8, val_fraction=0.25,
            fit_ood=False)


# ------------------------------------------------------------------ the dict forms
def test_grouped_and_flat_forms_build_the_same_config():
    built = TrainConfig(data="/data", lr=3e-4, augment=["hflip"], folds=5, head_hidden=128)
    grouped = built.to_dict()
    assert list(grouped) == [group.name for group in GROUPS]
    assert grouped["optimisation"]["lr"] == 3e-4 and grouped["dataset"]["data"] == "/data"
    assert TrainConfig.from_dict(grouped) == TrainConfig.from_dict(built.to_flat_dict()) == built
    assert TrainConfig.from_dict({"optimisation": {"lr": 3e-4}, "data": "/data"}).lr == 3e-4, "a mix is read too"


@pytest.mark.parametrize(("values", "message"), [
    ({"learning_rate": 1e-3}, "unknown training option"),
    ({"optimisation": {"learning_rate": 1e-3}}, "unknown training option"),
    ({"model": {"lr": 1e-3}}, "lr belongs to optimisation"),
    ({"lr": 1e-3, "optimisation": {"lr": 1e-4}}, "given twice"),
    ({"schedule": "linear"}, "schedule must be one of"),
])
def test_unknown_misplaced_doubled_and_impossible_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize("record", sorted(REPO.glob("models/default/members/*/config.json")))
def test_an_old_runs_flat_record_still_loads(record):
    """Runs on disk keep a flat dict under "train" (the bundled members predate the groups)."""
    train = json.loads(record.read_text())["train"]
    loaded = config.from_record(train)
    assert {key: loaded.to_flat_dict()[key] for key in train} == train
    assert read_file(record) == [loaded.replace(study=None, fold=None, out=None)], "a run's config.json trains again"


def test_a_record_from_before_a_setting_existed_reads_as_it_trained(tmp_path):
    """A new setting's default (the zero head) must not rewrite how an old run trained."""
    old = {k: v for k, v in TrainConfig(data="/d").to_flat_dict().items() if k != "head_init"}
    assert TrainConfig.from_dict(old).head_init == "zero"  # a new launch gets today's default
    assert config.from_record(old).head_init == "timm"  # an old run is read as it really trained
    (tmp_path / "config.json").write_text(json.dumps({"train": old}))
    assert read_file(tmp_path / "config.json")[0].head_init == "timm"
    assert trainform.from_run(old, [])["train_head_init"] == "timm"
    assert config.from_record({**old, "head_init": "zero"}).head_init == "zero"


def test_every_setting_carries_its_help_and_closed_sets_their_choices():
    assert len(settings()) == len(TrainConfig.__dataclass_fields__) == 62
    assert all(s.help and s.help != s.name for s in settings())
    assert {s.name: s.choices for s in settings() if s.choices} == {
        "split": config.SPLITS, "normalisation": config.NORMALISATIONS, "intensity": config.INTENSITIES,
        "loss": config.LOSSES, "optimizer": config.OPTIMIZERS, "schedule": config.SCHEDULES, "head_init": config.HEAD_INITS,
        "monitor": tuple(config.MONITORS)}
    assert [s.name for s in settings("finetuning")] == ["frozen_epochs", "unfreeze", "finetune_lr",
                                                        "keep_batchnorm_frozen"]


# ------------------------------------------------------------------ presets
def test_every_preset_loads_and_a_grouped_preset_reads_like_its_flat_twin(tmp_path, monkeypatch):
    for name in presets.names():
        assert presets.expand({"preset": name, "data": "/data"})
    head = 'title = "t"\nbackbones = ["simple_cnn", "resnet18"]\n'
    (tmp_path / "flat.toml").write_text(head + "[config]\nlr = 0.01\nfolds = 3\nfrozen_epochs = 1\n"
                                        '[per_backbone.simple_cnn]\npretrained = "none"\n')
    (tmp_path / "grouped.toml").write_text(head + "[config.optimisation]\nlr = 0.01\n[config.dataset]\nfolds = 3\n"
                                           "[config.finetuning]\nfrozen_epochs = 1\n"
                                           '[per_backbone.simple_cnn.model]\npretrained = "none"\n')
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    flat, grouped = presets.load("flat"), presets.load("grouped")
    assert (grouped["config"], grouped["per_backbone"]) == (flat["config"], flat["per_backbone"])
    [scratch, resnet] = presets.expand({"preset": "grouped", "data": "/data", "study": "s"})
    assert (scratch.lr, scratch.folds, scratch.frozen_epochs, scratch.pretrained, resnet.pretrained) == (
        0.01, 3, 1, "none", "auto")


def test_a_smoke_run_without_a_backbone_uses_the_default_backbone():
    [smoke] = presets.expand({"data": "/data", "epochs": 3}, smoke=True)
    assert smoke.backbone == TrainConfig().backbone
    assert smoke.image_size < models.get_spec(smoke.backbone).input_size
    assert (smoke.epochs, smoke.max_per_class) == (3, presets.SMOKE["max_per_class"])


# ------------------------------------------------------------------ the CLI, generated
def _train_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def test_train_options_are_generated_one_argument_group_per_config_group():
    parser = _train_parser()
    sections = {section.title: [a.dest for a in section._group_actions] for section in parser._action_groups}
    for group in GROUPS:
        [title] = [title for title in sections if title.startswith(group.title)]
        assert sections[title] == [s.name for s in settings(group.name)]
    helps = {action.dest: action.help for action in parser._actions}
    assert helps["watch_data"].startswith(settings("evaluation")[3].help[:40])
    assert not hasattr(cli, "TRAIN_HELP")
    args = parser.parse_args(["--amp", "false", "--augment", "hflip,vflip", "--class-names", "A, B", "--lr", "0.01",
                              "--optimizer", "sgd", "--folds", "3"])
    assert (args.amp, args.augment, args.class_names, args.lr, args.optimizer, args.folds) == (
        False, ["hflip", "vflip"], ["A", "B"], 0.01, "sgd", 3)
    assert args.epochs is None, "unset options stay None, so a preset's or a file's value survives"
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "rmsprop"])


def test_train_from_a_config_file_with_options_beside_it(tiny_dataset, tmp_path, capsys):
    saved = TrainConfig(data=str(tiny_dataset / "train"), out=str(tmp_path / "runs"), notes="from a file", **TINY)
    write_file(tmp_path / "settings.json", [saved])
    assert json.loads((tmp_path / "settings.json").read_text())["optimisation"]["epochs"] == 1, "grouped on disk"
    code = cli.main(["train", "--config", str(tmp_path / "settings.json"), "--epochs", "2", "--run-id", "filed",
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    run = runs.open_run("filed", tmp_path / "runs")
    assert run.config["train"] == {**saved.to_flat_dict(), "epochs": 2}, "the file, with --epochs over it"
    assert [row["epoch"] for row in run.metrics()] == [1, 2]
    assert cli.main(["train", "--config", str(tmp_path / "settings.json"), "--preset", "resnet-d"]) == 2


# ------------------------------------------------------------------ background jobs
def _wait_for(job: jobs.Job, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    try:
        while job.alive():
            if time.monotonic() > deadline:
                pytest.fail(f"the background job did not finish within {seconds:.0f} s:\n{job.log_tail()}")
            time.sleep(0.5)
    finally:
        if job.alive():  # never leave the test's own training process behind
            os.killpg(job.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_background_job_trains_exactly_the_config_it_saved(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tiny_dataset))
    root = tmp_path / "runs"
    job = jobs.launch({"data": str(tiny_dataset / "train"), **TINY, "augment": [{"name": "rotate", "degrees": 6}],
                       "lr": 2e-3, "schedule": "cosine", "notes": "job"}, "saved", root=root)
    [saved] = read_file(jobs.config_path(root, "saved"))
    assert job.command[job.command.index("--config") + 1] == str(jobs.config_path(root, "saved"))
    assert "--lr" not in job.command, "the settings travel in the file, not as re-serialised options"
    _wait_for(job)
    assert job.state() == "finished", job.log_tail()
    assert runs.open_run("saved", root).config["train"] == saved.to_flat_dict()
    assert (saved.lr, saved.augment, saved.out) == (2e-3, [{"name": "rotate", "degrees": 6}], str(root.resolve()))
