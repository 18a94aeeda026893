"""The run directory: one folder per training run, written so that a killed process never leaves a lie.

A run (and the bundled model in ``models/default/``) is a directory of plain files::

    config.json           every setting of the run
    status.json           state, pid, host, timestamps, progress
    metrics.jsonl         one JSON line per epoch
    model.safetensors     best checkpoint (last.safetensors and train_state.pt for resume)
    <split>_predictions.csv   file, patient, label, prob_<class>..., logit_<class>... (see predictions_csv)
    operating_point.json  threshold, beta, temperature, positive class
    log.txt               human-readable log

Every whole-file write goes through a temp file + ``os.replace`` (:mod:`xraycore.common.files`), so readers
(the app, a second process) see either the old or the new content, never half of it. Appended files (metrics,
log) are read tolerantly instead. Weights and arrays are written and read by :mod:`xraycore.common.tensor_files`,
a model directory's damage is said by :mod:`xraycore.common.model_directory`. This module knows nothing of
models or training: it stores what it is given.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Iterable, Sequence

import numpy as np

from xraycore.common.files import atomic_write_json, atomic_write_text, json_line, plain_name, read_json_file, to_json
from xraycore.common.timestamps import name_stamp, utc_timestamp
from xraycore.runs.liveness import process_alive, started_at
from xraycore.runs.predictions_csv import predictions_file, read_predictions_csv, write_predictions_csv

log = logging.getLogger(__name__)

RUNS_DIR_ENV = "XRAY_RUNS_DIR"
DEFAULT_RUNS_DIR = Path("runs")  # relative: resolved against the working directory at call time

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
OPERATING_POINT_FILE = "operating_point.json"
WEIGHTS_FILE = "model.safetensors"
LAST_WEIGHTS_FILE = "last.safetensors"
CHECKPOINT_FILE = "train_state.pt"  # what resume reads: weights + optimiser + epoch, replaced atomically
STOP_FILE = "STOP"  # created by the app or a user to ask a running run to stop after the current batch
SUMMARY_FILE = "summary.json"
OOD_FILE = "ood.safetensors"

RUNNING = "running"
TERMINAL_STATES = ("finished", "failed", "interrupted", "stopped")
STATES = (RUNNING, *TERMINAL_STATES)
UNKNOWN_STATE = "unknown"  # only ever read, never written: a directory without status.json

_LABEL_JUNK = re.compile(r"[^A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- names and paths


def runs_root(root: Path | str | None = None) -> Path:
    """Where runs live: ``root`` if given, else ``$XRAY_RUNS_DIR``, else ``./runs``."""
    if root is not None:
        return Path(root)
    from_env = os.environ.get(RUNS_DIR_ENV)
    return Path(from_env) if from_env else Path.cwd() / DEFAULT_RUNS_DIR


def sanitize_run_id(run_id: str) -> str:
    """Return ``run_id`` unchanged if it is safe as a single directory name, else raise ValueError.

    Allowed: letters, digits, ``.``, ``_``, ``-``; at most 128 characters; no leading dot and no
    ``..``. That rules out separators, hidden files and every form of path traversal.
    """
    return plain_name(run_id, "run id")


def new_run_id(label: str) -> str:
    """A fresh id like ``20261121-221503-resnet18-3fa2c1``: sortable time, readable label, random tail.

    The random tail keeps ids distinct when two runs start in the same second; ``create_run`` still
    creates the directory exclusively and draws again on the (unlikely) collision.
    """
    slug = _LABEL_JUNK.sub("-", label).strip("-_")[:64] or "run"
    return f"{name_stamp()}-{slug}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Run:
    """A run directory. Cheap to create; every accessor reads the disk, so it is never stale."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        """Path of a file inside the run; ``name`` must be a plain file name (no separators)."""
        return self.path / plain_name(name, "file name")

    # ---- JSON members

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def read_json(self, name: str, default: Any = None) -> Any:
        """Parsed ``name``, or ``default`` if the file does not exist (ValueError if it is corrupt)."""
        return read_json_file(self.file(name), default)

    @property
    def config(self) -> dict:
        return self.read_json(CONFIG_FILE, {})

    @property
    def operating_point(self) -> dict:
        return self.read_json(OPERATING_POINT_FILE, {})

    def save_operating_point(self, **fields: Any) -> None:
        """Merge ``fields`` (threshold, beta, temperature, positive_class, ...) into operating_point.json."""
        self.write_json(OPERATING_POINT_FILE, {**self.operating_point, **fields})

    # ---- status

    def status(self) -> dict:
        """status.json, with a 'running' run whose process has died on this host reported as
        'interrupted' (nothing is written: a reader must not race the writer)."""
        status = self.read_json(STATUS_FILE, None)
        if not isinstance(status, dict):
            return {"state": UNKNOWN_STATE}
        pid = status.get("pid")
        if (
            status.get("state") == RUNNING
            and isinstance(pid, int)
            and status.get("host") == socket.gethostname()
            and not process_alive(pid, status.get("pid_started"))
        ):
            status = {**status, "state": "interrupted"}
            status.setdefault("message", "The training process ended without reporting (killed or crashed).")
        return status

    def set_status(self, state: str, **fields: Any) -> None:
        """Record ``state`` plus any progress fields (epoch, message, best_metric, best_value, ...).

        'started' is kept from the first write; 'updated' is always now; terminal states get 'ended'.
        'running' stamps this process's pid, its start time (a reused pid is not mistaken for it) and host unless
        given, so a resumed run is tracked too.
        """
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {', '.join(STATES)}.")
        now = utc_timestamp()
        status = {**self.read_json(STATUS_FILE, {}), **fields, "state": state, "updated": now}
        status.setdefault("started", now)
        if state == RUNNING:
            status["pid"] = fields.get("pid", os.getpid())
            status["pid_started"] = fields.get("pid_started", started_at(status["pid"]))
            status["host"] = fields.get("host", socket.gethostname())
            status.pop("ended", None)
        else:
            status["ended"] = now
        self.write_json(STATUS_FILE, status)

    # ---- appended files

    def append_metrics(self, row: dict) -> None:
        """Append one epoch's metrics as a JSON line, on disk before returning."""
        path = self.file(METRICS_FILE)
        line = json_line(row)
        with open(path, "a+b") as handle:
            if handle.tell() > 0:  # a killed writer may have left a torn line: start a fresh one
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def metrics(self) -> list[dict]:
        """Every epoch row; lines that do not parse (a torn last line) are skipped."""
        try:
            text = self.file(METRICS_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping unreadable metrics line %d", self.id, number)
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def log(self, message: str) -> None:
        """Append a timestamped line to log.txt."""
        with open(self.file(LOG_FILE), "a", encoding="utf-8") as handle:
            handle.write(f"{utc_timestamp()} {message.rstrip()}\n")

    # ---- predictions

    def write_predictions(
        self,
        split: str,
        files: Sequence[str],
        labels: Iterable[int],
        probs: np.ndarray,
        class_names: Sequence[str],
        patients: Sequence[str] | None = None,
        logits: np.ndarray | None = None,
    ) -> None:
        """Write ``<split>_predictions.csv``: one row per image, one prob_/logit_ column per class."""
        write_predictions_csv(self.file(predictions_file(split)), files, labels, probs, class_names, patients, logits)

    def predictions(self, split: str = "val") -> dict | None:
        """The predictions written for ``split``, or None if there are none."""
        return read_predictions_csv(self.file(predictions_file(split)))

    # ---- overview

    def summary(self) -> dict:
        """One row for a runs table: what it is, how far it got, how good it is."""
        config, status = self.config, self.status()
        return {
            "id": self.id,
            "state": status.get("state"),
            "backbone": config.get("backbone"),
            "study": config.get("study"),
            "started": status.get("started"),
            "ended": status.get("ended"),
            "epochs": len(self.metrics()),
            "best_metric": status.get("best_metric"),
            "best_value": status.get("best_value"),
            "path": str(self.path),
        }


# --------------------------------------------------------------------------- many runs


def create_run(config: dict, root: Path | None = None, run_id: str | None = None) -> Run:
    """Make a new run directory (never an existing one), write its config and mark it running."""
    config_text = to_json(config) + "\n"  # fail on an unstorable config before touching the disk
    root = runs_root(root)
    root.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        path = root / sanitize_run_id(run_id)
        try:
            path.mkdir()
        except FileExistsError:
            raise FileExistsError(f"A run named {run_id!r} already exists in {root}.") from None
    else:
        label = str(config.get("backbone") or "run")
        for _attempt in range(20):
            path = root / new_run_id(label)
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"Could not find a free run id in {root}.")
    run = Run(path)
    atomic_write_text(run.file(CONFIG_FILE), config_text)
    run.set_status(RUNNING)
    return run


def open_run(ref: str | Path, root: Path | None = None) -> Run:
    """Open an existing run.

    A ``str`` is a run id inside ``root`` (sanitised; this is what a UI must pass). A ``Path`` is a
    directory the user named on the command line, such as ``Path("models/default")``.
    """
    if isinstance(ref, PurePath):
        path = Path(ref)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a run or model directory: it has no {CONFIG_FILE}.")
        return Run(path)

    root = runs_root(root)
    path = root / sanitize_run_id(ref)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"Run {ref!r} points outside {root}.")
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"No run named {ref!r} in {root}.")
    return Run(path)


def is_run_dir(ref: str | Path, root: Path | None = None) -> bool:
    """Whether ``ref`` (a run id under ``root`` or a directory) names an existing run."""
    path = Path(ref)
    if not path.is_dir():
        try:
            path = runs_root(root) / sanitize_run_id(str(ref))
        except ValueError:
            return False
    return (path / CONFIG_FILE).is_file()


def list_runs(root: Path | None = None) -> list[Run]:
    """Every run under ``root``, newest first. Directories without a readable config.json
    (junk, hidden, half-created) are skipped rather than failing the listing."""
    root = runs_root(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        try:
            run = Run(root / sanitize_run_id(child.name))
            if child.is_dir() and (child / CONFIG_FILE).is_file():
                run.config  # noqa: B018 - parse it now so a corrupt run is skipped, not shown broken
                found.append((_creation_order(run), run))
        except (ValueError, OSError) as error:  # junk names, corrupt JSON, deleted meanwhile
            log.debug("ignoring %s in runs directory: %s", child.name, error)
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [run for _order, run in found]


def _creation_order(run: Run) -> tuple[float, int, str]:
    """Sort key: the recorded start time (survives copying), then config.json's mtime, then id."""
    config_mtime = (run.path / CONFIG_FILE).stat().st_mtime_ns
    try:
        started = dt.datetime.fromisoformat(read_json_file(run.path / STATUS_FILE, {})["started"])
        started_at = started.timestamp()
    except (KeyError, TypeError, ValueError, OSError):
        started_at = config_mtime / 1e9
    return (started_at, config_mtime, run.id)
