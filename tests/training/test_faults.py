"""Runs survive faults: a kill, a corrupt image, a neighbour run, a STOP request, a hostile run name.

The kill test is the heart: SIGKILL in the middle of epoch 2 of 3, ``train --resume``, and the run
must end exactly where an uninterrupted run with the same seed ends (augmentation included, because
every epoch reseeds torch from (seed, epoch)).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.corpus import make_corpus
from tests.helpers.synthetic import make_dataset
from xraycore.cli import main as cli
from xraycore.evaluation import comparison
from xraycore.training import jobs
from xraycore.runs import directory as runs
from xraycore.common.tensor_files import load_weights
from xraycore.training import studies
from xraycore.evaluation.model_card import model_card
from xraycore.training.config import TrainConfig
from xraycore.runs.directory import STOP_FILE
from xraycore.training.loop import resume, train

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "XRAY_OFFLINE": "1"}
TOLERANCE = 1e-5
TIMING_KEYS = ("seconds", "images_per_second")  # wall-clock numbers legitimately differ between runs


def xraycore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "xraycore", *args]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


# ------------------------------------------------------------------ SIGKILL mid-epoch, then resume
KILL_SETTINGS = dict(backbone="simple_cnn", pretrained="none", image_size=64, epochs=3, batch_size=16, lr=2e-3,
                     augment=["hflip", {"name": "rotate", "degrees": 10}], fit_ood=False, seed=7)


@pytest.mark.slow
def test_killed_run_is_interrupted_and_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=150, size=64)  # 240 training images: an epoch takes ~2 s
    root = tmp_path / "runs"
    options = ["--data", str(data), "--backbone", "simple_cnn", "--pretrained", "none", "--image-size", "64",
               "--epochs", "3", "--batch-size", "16", "--lr", "2e-3", "--augment", json.dumps(KILL_SETTINGS["augment"]),
               "--fit-ood", "false", "--seed", "7", "--out", str(root), "--run-id", "killed", "--quiet"]
    victim = subprocess.Popen(xraycore_command("train", *options), cwd=REPO, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = runs.Run(root / "killed")
    try:
        # status.json reports epoch 1 only after its checkpoint is on disk; epoch 2 is then under way
        wait_for(lambda: victim.poll() is not None or (run.read_json("status.json", {}) or {}).get("epoch") == 1,
                 timeout=120, what="epoch 1 to be checkpointed")
        assert victim.poll() is None, victim.stderr.read()[-2000:]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.stderr.close()

    assert len(run.metrics()) == 1, "the kill must land inside epoch 2"
    status = run.status()
    assert status["state"] == "interrupted" and "killed or crashed" in status["message"]

    resumed = subprocess.run(xraycore_command("train", "--resume", "killed", "--out", str(root), "--quiet"),
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.splitlines()[-1] == str(run.path)
    assert run.status()["state"] == "finished"
    assert "resumed" in (run.path / "log.txt").read_text()
    assert [p.name for p in root.iterdir()] == ["killed"], "resume continues the run, it does not start another"

    reference = runs.Run(train(TrainConfig(data=str(data), out=str(tmp_path / "reference"), **KILL_SETTINGS)))
    assert run.config["train"] == reference.config["train"] | {"out": str(root)}
    resumed_rows, reference_rows = comparable(run.metrics()), comparable(reference.metrics())
    assert len(resumed_rows) == len(reference_rows)
    for resumed_row, reference_row in zip(resumed_rows, reference_rows):  # approx takes flat dicts only
        assert resumed_row == pytest.approx(reference_row, abs=TOLERANCE)
    for weights in ("last.safetensors", "model.safetensors"):
        resumed_weights, reference_weights = load_weights(run.path / weights), load_weights(reference.path / weights)
        for name, tensor in reference_weights.items():
            torch.testing.assert_close(resumed_weights[name], tensor, atol=TOLERANCE, rtol=0, msg=f"{weights}: {name}")
    np.testing.assert_allclose(run.predictions("val")["probs"], reference.predictions("val")["probs"], atol=TOLERANCE)


def test_a_run_stopped_before_its_first_epoch_can_be_continued_from_the_beginning(tiny_dataset, tmp_path):
    config = TrainConfig(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                         epochs=2, batch_size=8, val_fraction=0.25, fit_ood=False, out=str(tmp_path))

    def stop_at_once(event: dict) -> None:
        if event["kind"] == "start":
            (Path(event["run"]) / STOP_FILE).touch()

    run = runs.Run(train(config, progress=stop_at_once, run_id="early"))
    status = run.status()
    assert status["state"] == "stopped" and not (run.path / "model.safetensors").exists()
    assert "Continue starts it again" in status["message"]
    assert jobs.resumable(tmp_path) == ["early"], "offered to continue, not left stuck"
    assert resume("early", root=tmp_path) == run.path
    assert run.status()["state"] == "finished" and [row["epoch"] for row in run.metrics()] == [1, 2]
    assert [found.id for found in runs.list_runs(tmp_path)] == ["early"], "the same directory, not a new run"
    assert "started again from the beginning" in (run.path / "log.txt").read_text()
    assert jobs.resumable(tmp_path) == []


def test_resume_refuses_a_directory_without_training_settings(tmp_path):
    run = runs.create_run({"backbone": "simple_cnn"}, root=tmp_path, run_id="bare")
    run.set_status("failed", message="crashed while decoding")
    with pytest.raises(RuntimeError, match="no training settings"):
        resume("bare", root=tmp_path)


# ------------------------------------------------------------------ corrupt images
def test_corrupt_training_images_are_skipped_counted_and_logged(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=12, size=48)
    corpus = make_corpus(tmp_path / "corpus")
    shutil.copy(corpus["truncated_jpeg"].path, data / "NORMAL" / "IM-0900-0001.jpeg")
    shutil.copy(corpus["html_named_jpg"].path, data / "PNEUMONIA" / "person900_bacteria_1.jpeg")

    run = runs.Run(train(TrainConfig(data=str(data), backbone="simple_cnn", pretrained="none", image_size=32, epochs=1,
                                     batch_size=8, val_fraction=0.25, fit_ood=False, out=str(tmp_path / "runs"))))
    assert run.status()["state"] == "finished"
    assert run.config["skipped_files"] == 2
    assert run.config["skipped_by_reason"] == {"damaged or truncated": 1, "not an image": 1}
    card = model_card(run, "python -m xraycore train")
    assert "Unreadable files skipped: 2 (damaged or truncated: 1, not an image: 1)." in card
    assert sum(run.config["counts"].values()) == 24, "the 24 good images are all used"
    log = (run.path / "log.txt").read_text()
    for name in ("IM-0900-0001.jpeg", "person900_bacteria_1.jpeg"):
        assert f"skipped unreadable training image {name}" in log


# ------------------------------------------------------------------ two runs at once
@pytest.mark.slow
def test_two_runs_started_at_once_never_share_a_directory(tiny_dataset, tmp_path):
    root = tmp_path / "runs"
    base = ["train", "--data", str(tiny_dataset / "train"), "--backbone", "simple_cnn", "--pretrained", "none",
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25",
            "--fit-ood", "false", "--out", str(root), "--quiet"]
    learning_rates = ("0.001", "0.002")
    processes = [subprocess.Popen(xraycore_command(*base, "--lr", lr, "--notes", f"run with lr {lr}"), cwd=REPO,
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for lr in learning_rates]
    outputs = [process.communicate(timeout=180) for process in processes]
    for process, (_stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]

    printed = [Path(stdout.splitlines()[-1]) for stdout, _ in outputs]
    assert len(set(printed)) == 2 and sorted(printed) == sorted(root.iterdir())
    for path, lr, process in zip(printed, learning_rates, processes):
        run = runs.Run(path)
        assert run.config["train"]["lr"] == float(lr) and run.config["train"]["notes"] == f"run with lr {lr}"
        assert run.status()["state"] == "finished" and len(run.metrics()) == 1
        assert run.status()["pid"] == process.pid, "each run's status belongs to its own process"


# ------------------------------------------------------------------ STOP file
def test_stop_file_ends_the_run_as_stopped_with_its_best_checkpoint_and_it_can_be_resumed(tiny_dataset, tmp_path):
    config = TrainConfig(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                         epochs=3, batch_size=8, val_fraction=0.25, fit_ood=False, out=str(tmp_path))
    run_dir: list[Path] = []

    def ask_to_stop_in_epoch_2(event: dict) -> None:
        if event["kind"] == "start":
            run_dir.append(Path(event["run"]))
        if event["kind"] == "batch" and event["epoch"] == 2 and event["step"] == 1:
            (run_dir[0] / STOP_FILE).touch()

    run = runs.Run(train(config, progress=ask_to_stop_in_epoch_2))
    assert run.status()["state"] == "stopped"
    assert [row["epoch"] for row in run.metrics()] == [1]
    best, last = load_weights(run.path / "model.safetensors"), load_weights(run.path / "last.safetensors")
    assert all(torch.equal(best[name], last[name]) for name in best), "the kept checkpoint is epoch 1's"
    predictions = run.predictions("val")
    assert predictions is not None and len(predictions["file"]) == run.config["counts"]["val"]
    assert "threshold" in run.operating_point

    resume(run.id, root=tmp_path)  # a stale STOP file must not stop the resumed run at once
    assert run.status()["state"] == "finished"
    assert [row["epoch"] for row in run.metrics()] == [1, 2, 3]


def test_stop_during_a_study_stops_the_study_not_just_its_current_run(tiny_dataset, tmp_path):
    base = TrainConfig(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                       epochs=2, batch_size=8, folds=3, fit_ood=False, out=str(tmp_path), study="stopped-study")
    messages: list[str] = []
    started: list[Path] = []

    def stop_in_epoch_2_of_the_first_fold(event: dict) -> None:
        if event["kind"] == "message":
            messages.append(event["text"])
        if event["kind"] == "start":
            started.append(Path(event["run"]))
        if event["kind"] == "batch" and event["epoch"] == 2 and event["step"] == 1 and len(started) == 1:
            (started[0] / STOP_FILE).touch()

    paths = studies.launch([base], stop_in_epoch_2_of_the_first_fold)
    assert len(paths) == 1, "folds 2 and 3 must not start after a stop"
    assert runs.Run(paths[0]).status()["state"] == "stopped"
    assert [run.config["study"] for run in runs.list_runs(tmp_path)] == ["stopped-study"]
    assert any("not started: simple_cnn fold 2 of 3, simple_cnn fold 3 of 3" in text for text in messages), messages
    assert jobs.resumable(tmp_path) == ["stopped-study"]

    # Continuing the study by name: fold 1 resumes in its own directory, folds 2 and 3 start.
    assert cli.main(["train", "--resume", "stopped-study", "--out", str(tmp_path), "--quiet"]) == 0
    made = comparison.study_runs("stopped-study", tmp_path)
    assert sorted(run.config["train"]["fold"] for run in made) == [0, 1, 2]
    assert all(run.status()["state"] == "finished" and [r["epoch"] for r in run.metrics()] == [1, 2] for run in made)
    assert runs.Run(paths[0]).status()["message"] == "finished" and jobs.resumable(tmp_path) == []
    assert cli.main(["train", "--resume", "stopped-study", "--out", str(tmp_path), "--quiet"]) == 0
    assert len(runs.list_runs(tmp_path)) == 3, "a finished study is kept as it is"


# ------------------------------------------------------------------ hostile run names
@pytest.mark.parametrize("ref", ["../x", "../../etc", "a/../../b", "..", ".hidden"])
def test_open_run_refuses_names_that_leave_the_runs_folder(ref, tmp_path):
    with pytest.raises(ValueError, match="not a valid run id"):
        runs.open_run(ref, root=tmp_path)


def test_cli_resume_refuses_paths_outside_the_runs_folder_with_a_plain_message(tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "a" / "b"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    for ref in ("../../etc", "../x", "/etc"):
        assert cli.main(["train", "--resume", ref, "--out", str(tmp_path / "runs")]) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("error:") and "Traceback" not in message and len(message.splitlines()) == 1, message
    assert not (tmp_path / "runs").exists()
