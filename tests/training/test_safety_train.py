"""Stop must stop a study in every phase (issue 34, item 6): before the first epoch, in an epoch, in the final
validation, while the kept epoch is scored, and between two runs; no STOP file may stay behind. Real tiny
trainings (the scratch CNN on 48 px synthetic films, one epoch per fold), driven through the study loop
in-process: the progress events mark each phase, and the stop is asked for exactly there."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.app.test_app import app_env, runs_root  # noqa: F401 - fixtures
from xraycore.access import policy as access
from xraycore.training import job_queue as jobqueue
from xraycore.training import jobs
from xraycore.runs import directory as runs
from xraycore.training import studies
from xraycore.training.config import TrainConfig


def two_fold_study(data: Path, out: Path, epochs: int = 1) -> list[TrainConfig]:
    return [TrainConfig(data=str(data / "train"), backbone="simple_cnn", pretrained="none", image_size=48,
                        epochs=epochs, batch_size=8, folds=2, fit_ood=False, study="s", out=str(out))]


def run_study(data: Path, out: Path, ask_to_stop: Callable[[dict, list[Path]], None],
              epochs: int = 1) -> tuple[list[Path], list[str]]:
    """Train the two-fold study; ``ask_to_stop(event, started)`` sees every progress event. Returns the runs
    made and the messages said."""
    started: list[Path] = []
    said: list[str] = []

    def progress(event: dict) -> None:
        if event["kind"] == "start":
            started.append(Path(event["run"]))
        if event["kind"] == "message":
            said.append(event["text"])
        ask_to_stop(event, started)

    studies.launch(two_fold_study(data, out, epochs), progress)
    return [run.path for run in runs.list_runs(out)], said


def assert_study_stopped_after_one_run(out: Path, made: list[Path], said: list[str]) -> runs.Run:
    assert len(made) == 1, f"the second fold must not start after a Stop: {[p.name for p in made]}"
    assert "stopped on request; not started: simple_cnn fold 2 of 2" in said
    assert not list(out.rglob(runs.STOP_FILE)), "no STOP file is left behind"
    assert studies.unfinished("s", out), "the study can be continued"
    return runs.Run(made[0])


def touch_stop(started: list[Path]) -> None:
    (started[-1] / runs.STOP_FILE).touch()


def test_stop_while_the_kept_epoch_is_scored_ends_the_study(tiny_dataset, tmp_path):
    """The issue's case: Stop during the final scoring was heard, audited, then ignored."""
    def during_scoring(event: dict, started: list[Path]) -> None:
        if event["kind"] == "message" and event["text"] == "scoring validation and test images" and started:
            touch_stop(started)

    made, said = run_study(tiny_dataset, tmp_path / "runs", during_scoring)
    run = assert_study_stopped_after_one_run(tmp_path / "runs", made, said)
    assert run.status()["state"] == "finished", "the run had trained every epoch: it is scored and usable"
    assert "stop requested while the run ended" in (run.path / runs.LOG_FILE).read_text()


def test_stop_in_the_final_validation_ends_the_study(tiny_dataset, tmp_path):
    def after_last_validation(event: dict, started: list[Path]) -> None:
        if event["kind"] == "epoch" and event["epoch"] == 1:
            touch_stop(started)

    made, said = run_study(tiny_dataset, tmp_path / "runs", after_last_validation)
    assert assert_study_stopped_after_one_run(tmp_path / "runs", made, said).status()["state"] == "finished"


def test_stop_before_the_first_epoch_ends_the_study(tiny_dataset, tmp_path):
    def at_start(event: dict, started: list[Path]) -> None:
        if event["kind"] == "start":
            touch_stop(started)

    made, said = run_study(tiny_dataset, tmp_path / "runs", at_start)
    run = assert_study_stopped_after_one_run(tmp_path / "runs", made, said)
    assert run.status()["state"] == "stopped" and run.metrics() == [], "not one batch trained"


def test_stop_in_an_epoch_ends_the_study(tiny_dataset, tmp_path):
    def first_batch_of_epoch_2(event: dict, started: list[Path]) -> None:
        if event["kind"] == "batch" and (event["epoch"], event["step"]) == (2, 1):
            touch_stop(started)

    made, said = run_study(tiny_dataset, tmp_path / "runs", first_batch_of_epoch_2, epochs=2)
    run = assert_study_stopped_after_one_run(tmp_path / "runs", made, said)
    assert run.status()["state"] == "stopped" and [row["epoch"] for row in run.metrics()] == [1]


def test_sigterm_between_two_runs_ends_the_study_without_starting_the_next(tiny_dataset, tmp_path):
    """What the app sends a job that trains no run right now (jobs.stop_job): here, just as fold 2 begins."""
    def between_runs(event: dict, started: list[Path]) -> None:
        if event["kind"] == "message" and event["text"] == "training simple_cnn fold 2 of 2":
            os.kill(os.getpid(), signal.SIGTERM)

    heard_by_the_test: list[int] = []  # where the trainer does not listen, the signal lands here, not on pytest
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: heard_by_the_test.append(signum))
    try:
        made, said = run_study(tiny_dataset, tmp_path / "runs", between_runs)
        assert signal.getsignal(signal.SIGTERM) is not previous, "the test's own handler is back in place"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert heard_by_the_test == [], "the trainer heard the stop itself"
    assert len(made) == 1 and runs.Run(made[0]).status()["state"] == "finished", "fold 2 never made a run"
    assert "stopped on request before training began" in said
    assert not list((tmp_path / "runs").rglob(runs.STOP_FILE))


def _wait_until_began(job: jobs.Job) -> None:
    """Until the job's training process has begun; a job that ends before that fails the test at once."""
    while not job.began():
        assert job.alive(), "the job ended before its training began"
        time.sleep(0.2)


def _wait_for_exit(job: jobs.Job) -> None:
    """Until the job's process is gone: the stop under test is what ends it (no clock involved)."""
    import psutil

    try:
        psutil.Process(job.pid).wait()
    except psutil.NoSuchProcess:
        pass
    while job.alive():  # the record may lag the process by a poll
        time.sleep(0.2)


@pytest.mark.slow
def test_the_app_stops_a_background_study_whatever_phase_it_is_in(tiny_dataset, tmp_path, monkeypatch):
    """A real job (the waiter, then `train --config` in its own process): stopped as soon as it began, in
    whatever phase that is (importing, loading, training), it ends without finishing a run or leaving a file."""
    root = tmp_path / "runs"
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tiny_dataset))
    job = jobs.launch({"data": str(tiny_dataset / "train"), "backbone": "simple_cnn", "pretrained": "none",
                       "image_size": 48, "epochs": 3, "batch_size": 8, "folds": 2, "fit_ood": False}, "study-job",
                      root=root)
    try:
        _wait_until_began(job)
        time.sleep(1.0)
        jobs.stop_job(job)
        _wait_for_exit(job)
    finally:
        if job.alive():
            os.killpg(job.pid, signal.SIGKILL)
    states = [run.status().get("state") for run in job.runs()]
    assert "finished" not in states and len(states) <= 1, states
    assert not list(root.rglob(runs.STOP_FILE))



# ------------------------------------------------------------------ the Train page


def live_study_between_runs(root: Path, tiny_run: Path) -> jobs.Job:
    """A study job that is alive (this very process stands in for it) and has begun; its first run finished,
    the next not made yet: no run is 'running'."""
    import json
    import shutil

    shutil.copytree(tiny_run, root / "fold-1")
    first = runs.Run(root / "fold-1")
    first.write_json(runs.CONFIG_FILE, {**first.config, "study": "between"})
    jobs_dir = root / jobs.JOBS_DIR
    jobs_dir.mkdir()
    record = {"id": "between", "pid": os.getpid(), "command": [], "root": str(root), "study": "between",
              "started": "2026-11-21T22:15:03+00:00"}
    (jobs_dir / "between.json").write_text(json.dumps(record))
    (jobs_dir / f"between{jobqueue.BEGAN_SUFFIX}").write_text("now")
    return jobs.Job(**record)


def test_train_page_offers_stop_between_a_studys_runs_and_keeps_saying_so(app_env, tiny_run, monkeypatch):
    from tests.app.test_app import start_app

    job = live_study_between_runs(app_env, tiny_run)
    assert job.state() == runs.RUNNING and not any(r.status().get("state") == runs.RUNNING for r in job.runs())
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(jobs.os, "killpg", lambda pid, sig: signalled.append((pid, sig)))  # not pytest's group
    at = start_app()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="stopjob:between").click().run()
    assert signalled == [(os.getpid(), signal.SIGTERM)], "the job is asked to stop"
    said = "Asked the job to stop: no further run of it starts."
    assert [m.value for m in at.info].count(said) == 1
    at.run()  # the page's next redraw (its own two-second refresh is the same) keeps the outcome
    at.run()
    assert [m.value for m in at.info].count(said) == 1, "the outcome stays until the next action"


def test_train_page_launch_message_stays_until_the_next_action(app_env, tiny_dataset, monkeypatch):
    from tests.app.test_app import record_launches, start_app, start_button

    at = start_app()
    at.switch_page("pages/train.py").run()
    at.text_input(key="train_data").set_value(str(tiny_dataset / "train"))
    at.selectbox(key="train_backbone").set_value("simple_cnn").run()
    record_launches(monkeypatch)
    start_button(at).click().run()
    started = [m.value for m in at.success if m.value.startswith("Started ")]
    assert len(started) == 1
    at.run()
    at.run()
    assert [m.value for m in at.success if m.value.startswith("Started ")] == started
