"""Run directories: safe ids, honest status, tolerant readers (atomic files and weights: tests/common/)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from xraycore.runs import directory as runs
from xraycore.runs.directory import Run, create_run, list_runs, new_run_id, open_run, sanitize_run_id


# --------------------------------------------------------------------------- ids and opening


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/b", "..", ".hidden", "", "a..b", "x" * 129, "a\\b", "é"])
def test_sanitize_rejects_unsafe_ids(bad):
    with pytest.raises(ValueError):
        sanitize_run_id(bad)


@pytest.mark.parametrize("good", ["20261121-221503-resnet18-3fa2", "my_run.v2", "A-b_c.d", "x" * 128])
def test_sanitize_accepts_normal_ids(good):
    assert sanitize_run_id(good) == good


def test_new_run_ids_are_safe_readable_and_distinct():
    ids = {new_run_id("ResNet 18 / ../evil") for _ in range(50)}
    assert len(ids) == 50
    for run_id in ids:
        assert sanitize_run_id(run_id) == run_id
        assert "-ResNet-18-evil-" in run_id


def test_open_run_refuses_traversal_even_to_a_real_run(tmp_path):
    root = tmp_path / "runs"
    create_run({"backbone": "outside"}, root=tmp_path, run_id="victim")
    root.mkdir()
    for ref in ["../victim", "..", "/etc", f"{tmp_path}/victim"]:
        with pytest.raises(ValueError):
            open_run(ref, root=root)


def test_open_run_refuses_a_symlink_leading_out_of_root(tmp_path):
    outside = create_run({}, root=tmp_path / "elsewhere", run_id="secret")
    root = tmp_path / "runs"
    root.mkdir()
    (root / "link").symlink_to(outside.path)
    with pytest.raises(ValueError):
        open_run("link", root=root)


def test_open_run_by_id_and_by_explicit_directory(tmp_path):
    created = create_run({"backbone": "resnet18"}, root=tmp_path, run_id="abc")
    assert open_run("abc", root=tmp_path).path == created.path
    assert open_run(created.path).config == {"backbone": "resnet18"}
    with pytest.raises(FileNotFoundError, match="No run named"):
        open_run("missing", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        open_run(tmp_path / "empty")


def test_runs_root_follows_environment_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(runs.RUNS_DIR_ENV, raising=False)
    assert runs.runs_root() == tmp_path / "runs"
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert runs.runs_root() == tmp_path / "elsewhere"
    assert create_run({}).path.parent == tmp_path / "elsewhere"
    assert runs.runs_root(tmp_path / "given") == tmp_path / "given"


# --------------------------------------------------------------------------- creating and status


def test_create_run_writes_config_and_running_status(tmp_path):
    run = create_run({"backbone": "resnet18", "lr": np.float64(1e-3)}, root=tmp_path)
    assert run.config == {"backbone": "resnet18", "lr": 1e-3}
    status = run.status()
    assert status["state"] == "running"
    assert status["pid"] == os.getpid()
    assert status["started"] and "ended" not in status
    assert "resnet18" in run.id


def test_create_run_never_reuses_a_directory(tmp_path):
    first = create_run({"n": 1}, root=tmp_path, run_id="same")
    with pytest.raises(FileExistsError):
        create_run({"n": 2}, root=tmp_path, run_id="same")
    assert first.config == {"n": 1}


def test_generated_id_collision_draws_a_new_id(tmp_path, monkeypatch):
    drawn = iter(["dup", "dup", "fresh"])
    monkeypatch.setattr(runs, "new_run_id", lambda label: next(drawn))
    first = create_run({"n": 1}, root=tmp_path)
    second = create_run({"n": 2}, root=tmp_path)
    assert (first.id, second.id) == ("dup", "fresh")
    assert first.config == {"n": 1} and second.config == {"n": 2}


def test_unstorable_config_leaves_no_directory(tmp_path):
    with pytest.raises(TypeError):
        create_run({"model": object()}, root=tmp_path, run_id="bad")
    assert not (tmp_path / "bad").exists()


def test_running_status_with_dead_pid_reads_interrupted_without_writing(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    finished_process = subprocess.Popen([sys.executable, "-c", "pass"])
    finished_process.wait()
    run.set_status("running", pid=finished_process.pid, epoch=3)
    assert run.status()["state"] == "interrupted"
    assert run.status()["epoch"] == 3
    assert json.loads((run.path / "status.json").read_text())["state"] == "running"


def test_running_status_is_trusted_for_live_pid_and_other_hosts(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    assert run.status()["state"] == "running"  # our own pid
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.set_status("running", pid=dead.pid, host="some-other-machine")
    assert run.status()["state"] == "running"  # cannot check another host's processes


def test_set_status_keeps_started_and_stamps_ended_for_terminal_states(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    started = run.status()["started"]
    run.set_status("finished", best_metric="val_auroc", best_value=0.93)
    status = run.status()
    assert status["state"] == "finished" and status["started"] == started
    assert status["ended"] and status["updated"] and status["best_value"] == 0.93
    run.set_status("running")  # resumed
    assert "ended" not in run.status() and run.status()["best_metric"] == "val_auroc"
    with pytest.raises(ValueError):
        run.set_status("exploded")


# --------------------------------------------------------------------------- appended files


def test_metrics_survive_a_torn_last_line_and_appending_after_it(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    run.append_metrics({"epoch": 1, "val_loss": np.float32(0.5)})
    run.append_metrics({"epoch": 2, "val_loss": 0.4})
    with open(run.path / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "val_lo')  # the process was killed mid-write
    assert [row["epoch"] for row in run.metrics()] == [1, 2]
    run.append_metrics({"epoch": 3, "val_loss": 0.3})  # resumed run appends on a fresh line
    assert [row["epoch"] for row in run.metrics()] == [1, 2, 3]


def test_log_appends_timestamped_lines(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    run.log("epoch 1 done")
    run.log("epoch 2 done")
    lines = (run.path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith(" epoch 2 done") and lines[1][:4].isdigit()


def test_json_members_and_operating_point_merge(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    assert run.read_json("extra.json", default={"none": True}) == {"none": True}
    run.write_json("extra.json", {"k": 1})
    assert run.read_json("extra.json") == {"k": 1}
    assert run.operating_point == {}
    run.save_operating_point(threshold=0.4, beta=2.0)
    run.save_operating_point(temperature=1.5)
    assert run.operating_point == {"threshold": 0.4, "beta": 2.0, "temperature": 1.5}
    with pytest.raises(ValueError):
        run.write_json("../escape.json", {})


# --------------------------------------------------------------------------- predictions


def test_binary_predictions_roundtrip(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [1 / 3, 2 / 3]])
    run.write_predictions(
        "val", ["a.png", "dir/b, c.png", "d.png"], [0, 1, 1], probs, ["NORMAL", "PNEUMONIA"],
        patients=["p1", "p2", "p2"],
    )
    got = run.predictions("val")
    assert got["file"] == ["a.png", "dir/b, c.png", "d.png"]
    assert got["patient"] == ["p1", "p2", "p2"]
    assert got["label"].tolist() == [0, 1, 1] and got["label"].dtype.kind == "i"
    np.testing.assert_array_equal(got["probs"], probs)  # exact, not approximate
    assert got["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert got["logits"] is None
    assert run.predictions("test") is None


def test_multiclass_predictions_with_logits_roundtrip(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    run.write_predictions("test", [f"{i}.png" for i in range(5)], [0, 1, 2, 3, 0], probs, classes, logits=logits)
    got = run.predictions("test")
    assert got["class_names"] == classes
    assert got["probs"].shape == (5, 4) and got["logits"].shape == (5, 4)
    np.testing.assert_array_equal(got["probs"], probs.astype(float))
    np.testing.assert_array_equal(got["logits"], logits.astype(float))
    assert got["patient"] == [""] * 5


def test_predictions_reject_mismatched_shapes(tmp_path):
    run = create_run({}, root=tmp_path, run_id="r")
    with pytest.raises(ValueError):
        run.write_predictions("val", ["a.png"], [0], np.array([[0.5, 0.5, 0.0]]), ["A", "B"])
    with pytest.raises(ValueError):
        run.write_predictions("../val", ["a.png"], [0], np.array([[0.5, 0.5]]), ["A", "B"])
    assert run.predictions("val") is None


# --------------------------------------------------------------------------- listing


def test_list_runs_newest_first_and_ignores_junk(tmp_path):
    ordered = ["zz-oldest", "aa-middle", "mm-newest"]  # names deliberately not in time order
    for seconds, run_id in zip((1_000, 2_000, 3_000), ordered):
        run = create_run({"backbone": run_id}, root=tmp_path, run_id=run_id)
        status = run.read_json("status.json")
        status["started"] = f"2026-01-01T00:{seconds // 100:02d}:00+00:00"
        run.write_json("status.json", status)
    (tmp_path / "no-config").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text('{"backbone": ')
    (tmp_path / "no-status").mkdir()
    (tmp_path / "no-status" / "config.json").write_text("{}")
    os.utime(tmp_path / "no-status" / "config.json", (0, 0))  # created long ago
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "config.json").write_text("{}")
    (tmp_path / "stray-file.txt").write_text("not a run")

    listed = list_runs(tmp_path)
    assert [run.id for run in listed] == ["mm-newest", "aa-middle", "zz-oldest", "no-status"]
    assert listed[-1].status() == {"state": "unknown"}
    assert list_runs(tmp_path / "does-not-exist") == []


def test_summary_reports_progress(tmp_path):
    run = create_run({"backbone": "resnet50", "study": "convnext-vs-resnet50"}, root=tmp_path, run_id="r")
    run.append_metrics({"epoch": 1})
    run.append_metrics({"epoch": 2})
    run.set_status("finished", best_metric="val_f1", best_value=0.9)
    summary = run.summary()
    assert summary == {
        "id": "r",
        "state": "finished",
        "backbone": "resnet50",
        "study": "convnext-vs-resnet50",
        "started": run.status()["started"],
        "ended": run.status()["ended"],
        "epochs": 2,
        "best_metric": "val_f1",
        "best_value": 0.9,
        "path": str(run.path),
    }
    assert Run(run.path) == run
