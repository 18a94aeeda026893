"""`python -m xraycore sweep` (issue 32): Optuna trials are training runs, a falling curve is pruned (and says so in
its run and in MLflow), and a killed sweep continued by the same command ends with exactly N trials. The scratch
CNN on tiny synthetic images keeps every trial to a second or two."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.synthetic import make_dataset
from xraycore.cli.main import main
from xraycore.runs import directory as runs
from xraycore.training import loop, sweep, tracking

REPO = Path(__file__).resolve().parents[2]
FAST = ["--backbone", "simple_cnn", "--pretrained", "none", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("sweep-data"), per_class=12, size=40)


def finished(storage: Path) -> dict[str, int]:
    """Trials per state in the sweep's journal; {} while the journal holds no study yet (the file exists a moment
    before the study's first record is written)."""
    import optuna

    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    if not optuna.get_all_study_names(journal):
        return {}
    study = optuna.load_study(study_name=None, storage=journal)
    states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
    return {state: states.count(state) for state in set(states)}


def test_smoke_sweep_of_three_trials_prunes_a_trial_whose_curve_falls(data, tmp_path, monkeypatch, capsys):
    """The first trial's validation AUROC is made 1 at every epoch and every later trial's 0 (the tiny images give
    ties otherwise), so the MedianPruner stops each later trial after its first epoch: its run ends cleanly and says it was pruned, in its status and in MLflow."""
    monkeypatch.setenv(tracking.OFF_ENV, "on")
    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    real, calls = loop.epoch_metrics, []

    def falling(*args, **kwargs):
        found = real(*args, **kwargs)
        calls.append(found)
        return {**found, "val_auroc": 1.0 if len(calls) <= sweep.SMOKE_EPOCHS else 0.0}

    monkeypatch.setattr(loop, "epoch_metrics", falling)
    out = tmp_path / "runs"
    assert main(["sweep", "--preset", "xray-default", "--data", str(data), "--trials", "3", "--smoke",
                 "--out", str(out), *FAST]) == 0
    best = Path(capsys.readouterr().out.strip())
    rows = sweep.trial_rows("sweep-xray-default-smoke", out)
    assert len(rows) == 3 and rows[0]["state"] == "complete" and best.name == rows[0]["run"]
    pruned = [row for row in rows if row["state"] == "pruned"]
    assert pruned and all(row["pruned_after_epoch"] == 1 for row in pruned)
    run = runs.Run(out / pruned[0]["run"])
    assert run.status()["state"] == "stopped" and run.status()["pruned"] is True and len(run.metrics()) == 1
    assert set(rows[0]) >= {"lr", "weight_decay", "augment_strength"}  # searched; backbone was fixed by --backbone
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / tracking.DB_FILE}")
    found = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    parent = next(r for r in found if r.data.tags.get(tracking.PARENT_TAG) == "sweep-xray-default-smoke")
    children = {r.data.tags["xray.run"]: r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {row["run"] for row in rows}
    assert children[pruned[0]["run"]].data.tags["xray.pruned"] == "true"
    assert children[pruned[0]["run"]].info.status == "KILLED" and children[rows[0]["run"]].info.status == "FINISHED"


@pytest.mark.slow
def test_a_killed_sweep_continued_by_the_same_command_ends_with_exactly_n_trials(data, tmp_path):
    out, storage = tmp_path / "runs", tmp_path / "sweep.journal"
    command = [sys.executable, "-m", "xraycore", "sweep", "--preset", "xray-default", "--data", str(data), "--trials",
               "3", "--smoke", "--storage", str(storage), "--out", str(out), "--no-tracking", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:  # killed while a trial's run trains
        if storage.is_file() and finished(storage).get("RUNNING") and any(out.glob("*/metrics.jsonl")):
            break
        time.sleep(0.05)
    assert first.poll() is None, "the sweep ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    states = finished(storage)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 3 and states.get("FAIL") == 1
    assert "RUNNING" not in states
    interrupted = [run for run in runs.list_runs(out) if run.status().get("state") == "interrupted"]
    assert len(interrupted) == 1
