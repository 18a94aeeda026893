"""One stop request per training process, honoured in every phase of a run and of a study.

A stop is asked for in two ways: the STOP file in the run being trained (``jobs.stop`` / ``jobs.stop_job``, seen
between batches by every rank alike) and SIGTERM or SIGINT (Ctrl-C; the app stopping a job that trains no run right
now: still loading its data, or between two runs of a study). Both end up as one flag for the whole process, kept
until the command ends. So a Stop that arrives while a run scores its kept epoch, or between runs, still ends the
study after the current run instead of being forgotten; and a STOP file is removed as soon as it is seen, so none
is left in a run that ended. Kept apart from :mod:`loop` so the study loop (:mod:`studies`) can ask too.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from xraycore.runs.directory import STOP_FILE

_state = {"requested": False, "depth": 0}
_previous: dict[int, object] = {}


def _handler(signum, frame) -> None:  # noqa: ANN001 - a signal handler's signature
    _state["requested"] = True


@contextmanager
def listening() -> Iterator[None]:
    """While a training command runs: SIGTERM / SIGINT become a stop request (main thread only; the previous
    handlers come back afterwards, so in-process callers keep theirs). Nested uses share the outermost one; the
    outermost starts with no request pending."""
    outermost = _state["depth"] == 0
    if outermost:
        _state["requested"] = False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                _previous[sig] = signal.signal(sig, _handler)
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if outermost:
            for sig, handler in _previous.items():
                signal.signal(sig, handler)
            _previous.clear()


def request() -> None:
    """Record a stop request (another rank saw the STOP file, say)."""
    _state["requested"] = True


def requested() -> bool:
    """Whether a stop was asked for since the current training command began."""
    return _state["requested"]


def consume(run_path: Path | None) -> bool:
    """:func:`requested`, after taking in ``run_path``'s STOP file (removed: it has been heard)."""
    if run_path is not None:
        stop_file = Path(run_path) / STOP_FILE
        if stop_file.exists():
            stop_file.unlink(missing_ok=True)
            _state["requested"] = True
    return _state["requested"]
