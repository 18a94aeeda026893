"""The training queue: at most ``$XRAY_MAX_TRAINING_JOBS`` (default 1) jobs train at once; the rest wait in order.

Every launched job is this small waiter process (``python -m xraycore.training.job_queue RECORD``), started at once
in its own session. It waits until its turn, marks ``<id>.began`` beside its record and only then runs the
training command as its child. The turn is decided under an exclusive lock on ``.jobs/queue.lock``: the
jobs that began and still live hold the slots; of the ones still waiting, the lowest sequence numbers go
first. So the queue needs no scheduler, survives a restart of the app and keeps its order; stopping a
waiting job (SIGTERM to its session) just removes it.

Standard library and psutil only (:mod:`xraycore.runs.liveness`, :mod:`xraycore.common.timestamps`): a waiting
job must not load torch, and the app's first page load imports this.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from xraycore.runs.liveness import process_alive
from xraycore.common.timestamps import utc_timestamp

MAX_JOBS_ENV = "XRAY_MAX_TRAINING_JOBS"
LOCK_FILE = "queue.lock"
BEGAN_SUFFIX = ".began"
POLL_SECONDS = 1.0


def max_jobs() -> int:
    """How many jobs may train at once (``$XRAY_MAX_TRAINING_JOBS``, default 1, at least 1)."""
    try:
        return max(1, int(os.environ.get(MAX_JOBS_ENV, "1")))
    except ValueError:
        return 1


@contextlib.contextmanager
def locked(jobs_dir: Path) -> Iterator[None]:
    """Exclusive lock for deciding turns and handing out sequence numbers."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    with open(jobs_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def records(jobs_dir: Path) -> list[dict[str, Any]]:
    """Every readable job record; junk is skipped."""
    found = []
    for path in sorted(jobs_dir.glob("*.json")) if jobs_dir.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "id" in record:
            found.append(record)
    return found


def began(jobs_dir: Path, record: dict[str, Any]) -> bool:
    """True once the job left the queue; a record without a sequence number predates the queue and
    started at once."""
    return not record.get("seq") or (jobs_dir / f"{record['id']}{BEGAN_SUFFIX}").exists()


def next_sequence(jobs_dir: Path) -> int:
    """One more than any record's (call under :func:`locked`)."""
    return 1 + max((int(record.get("seq") or 0) for record in records(jobs_dir)), default=0)


def waiting(jobs_dir: Path) -> list[dict[str, Any]]:
    """Live jobs that have not begun, in queue order."""
    return sorted((r for r in records(jobs_dir) if not began(jobs_dir, r) and _alive(r)),
                  key=lambda r: (int(r.get("seq") or 0), r["id"]))


def training(jobs_dir: Path) -> list[dict[str, Any]]:
    """Live jobs that have begun: they hold the slots."""
    return [r for r in records(jobs_dir) if began(jobs_dir, r) and _alive(r)]


def _alive(record: dict[str, Any]) -> bool:
    """The job's waiter still runs (the same process that was recorded, when its start time was)."""
    return process_alive(record.get("pid"), record.get("pid_started"))


def ahead_of_new(jobs_dir: Path) -> int:
    """How many jobs one launched now would wait for (0: it starts at once; call under the lock)."""
    return max(0, len(training(jobs_dir)) + len(waiting(jobs_dir)) - max_jobs() + 1)


def my_turn(jobs_dir: Path, job_id: str, limit: int) -> bool:
    """True when ``job_id`` is among the first free slots' worth of waiting jobs (call under the lock)."""
    free = limit - len([r for r in training(jobs_dir) if r["id"] != job_id])
    first = [r["id"] for r in waiting(jobs_dir)][:max(0, free)]
    return job_id in first


def wait_for_turn(jobs_dir: Path, job_id: str, poll: float = POLL_SECONDS) -> None:
    while True:
        with locked(jobs_dir):
            if my_turn(jobs_dir, job_id, max_jobs()):
                (jobs_dir / f"{job_id}{BEGAN_SUFFIX}").write_text(utc_timestamp())
                return
        time.sleep(poll)


def run(record_path: Path) -> int:
    """Wait for the turn, then train; SIGTERM while waiting ends the wait, while training it goes to the
    trainer (same process group), which stops cleanly; this process waits for it and passes its code on."""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    jobs_dir = record_path.parent
    print(f"queued as number {record.get('seq')}; waiting for a free training slot", flush=True)
    wait_for_turn(jobs_dir, record["id"])
    stop_asked: list[int] = []
    # From here on SIGTERM is the trainer's business (it is in our process group and stops cleanly);
    # this process only remembers it, in case it came before the trainer existed.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_asked.append(signum))
    print("starting", flush=True)
    child = subprocess.Popen(record["command"], cwd=record.get("cwd") or None)
    if stop_asked and child.poll() is None:
        child.send_signal(signal.SIGTERM)
    return child.wait()


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
