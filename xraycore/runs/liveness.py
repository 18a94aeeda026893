"""Is a recorded process still running? One answer for the training queue, the jobs and the run directories.

A pid alone can lie twice: an exited child that its parent has not reaped yet (a zombie) still has it, and
after a restart or a long uptime another process may be given it. So a zombie counts as dead, and where the
process's start time was recorded beside its pid (:func:`started_at`), a process started at another time is
someone else.
"""
from __future__ import annotations

import psutil

SAME_START_SECONDS = 1.0  # create times are read from /proc with clock-tick resolution; a reused pid is far off


def started_at(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), to record beside it; None when it is not running."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """True while ``pid`` runs and is not a zombie; with ``started`` (from :func:`started_at`), only if it is
    still the process that started then."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < SAME_START_SECONDS
    except psutil.NoSuchProcess:  # ZombieProcess is one too
        return False
    except psutil.AccessDenied:  # it exists, owned by someone else: alive as far as we can tell
        return True
