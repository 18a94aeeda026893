"""One liveness check (psutil) for the queue, the jobs and the run directories: alive, dead, zombie, reused pid."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from xraycore.training import jobs
from xraycore.training import job_queue as jobqueue
from xraycore.runs import directory as runs
from xraycore.runs.liveness import process_alive, started_at


def test_a_running_process_is_alive_and_one_that_ended_is_not():
    assert process_alive(os.getpid()) and process_alive(os.getpid(), started_at(os.getpid()))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: its pid names nothing now
    assert not process_alive(ended.pid) and started_at(ended.pid) is None
    assert not process_alive(None) and not process_alive(0)


def test_a_zombie_is_dead_for_the_queue_the_jobs_and_the_runs(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for: a zombie once it exits
    started = started_at(child.pid)
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            if time.monotonic() > deadline:
                pytest.fail("the child did not exit within 30 s")
            time.sleep(0.05)
        assert not process_alive(child.pid) and not process_alive(child.pid, started)
        record = {"id": "zombie", "pid": child.pid, "pid_started": started, "command": [], "root": str(tmp_path),
                  "started": "now", "seq": 1}
        assert not jobs.Job(**record).alive() and jobqueue.waiting(tmp_path) == []
        run = runs.create_run({"backbone": "simple_cnn"}, root=tmp_path, run_id="zombie")
        run.set_status("running", pid=child.pid)
        assert run.status()["state"] == "interrupted"
    finally:
        child.wait()


def test_a_pid_given_to_another_process_is_not_the_recorded_one(tmp_path):
    """Where the start time was recorded, the same pid started at another time is someone else."""
    now = started_at(os.getpid())
    assert not process_alive(os.getpid(), now - 3600)
    run = runs.create_run({"backbone": "simple_cnn"}, root=tmp_path, run_id="reused")
    assert run.status()["state"] == "running" and run.status()["pid_started"] == now
    run.set_status("running", pid=os.getpid(), pid_started=now - 3600)
    assert run.status()["state"] == "interrupted"
    job = jobs.Job(id="reused", pid=os.getpid(), command=[], root=str(tmp_path), started="now", pid_started=now - 3600)
    assert not job.alive() and jobs.Job(id="old-record", pid=os.getpid(), command=[], root=str(tmp_path),
                                        started="now").alive(), "a record without a start time: the pid decides"
