"""The run directory: one folder per training run, written so that a killed process never leaves a lie.

A run (and the bundled model in ``models/default/``) is a directory of plain files::

    config.json           every setting of the run
    status.json           state, pid, host, timestamps, progress
    metrics.jsonl         one JSON line per epoch
    model.safetensors     best checkpoint (last.safetensors / optimizer.pt for resume)
    <split>_predictions.csv   file, patient, label, prob_<class>..., logit_<class>...
    operating_point.json  threshold, beta, temperature, positive class
    log.txt               human-readable log

Every whole-file write goes through a temp file + ``os.replace``, so readers (the app, a second
process) see either the old or the new content, never half of it. Appended files (metrics, log) are
read tolerantly instead. This module knows nothing of models or training: it stores what it is given.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import logging
import os
import pickle
import re
import secrets
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator, Sequence

import numpy as np
import safetensors.numpy

from xraycore.runs.liveness import process_alive, started_at

if TYPE_CHECKING:
    import torch

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

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts nest weights
TORCH_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
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
    return _plain_name(run_id, "run id")


def _plain_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid {what}: use 1-128 letters, digits, '.', '_' or '-'."
        )
    if name.startswith(".") or ".." in name:
        raise ValueError(f"{name!r} is not a valid {what}: it may not start with '.' or contain '..'.")
    return name


def new_run_id(label: str) -> str:
    """A fresh id like ``20261121-221503-resnet18-3fa2c1``: sortable time, readable label, random tail.

    The random tail keeps ids distinct when two runs start in the same second; ``create_run`` still
    creates the directory exclusively and draws again on the (unlikely) collision.
    """
    slug = _LABEL_JUNK.sub("-", label).strip("-_")[:64] or "run"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{slug}-{secrets.token_hex(3)}"


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_stream(path: Path) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` only when the block completes (temp file in the same
    folder, fsync, ``os.replace``): readers and a kill mid-write never see a partial file. The one way
    xraycore replaces a file, also for what is streamed rather than held in memory (caches, checkpoints)."""
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp:
            yield temp
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_stream(path) as stream:
        stream.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so readers never see a partly written file."""
    _atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    """Let numpy numbers/arrays, paths, sets and datetimes through ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def _to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=True, default=_json_default)


def json_line(row: dict) -> str:
    """One metrics.jsonl line (compact JSON + newline)."""
    return _to_json(row, indent=None) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON, atomically. Serialises first, so a bad object
    changes nothing on disk."""
    atomic_write_text(path, _to_json(obj) + "\n")


def _read_json_file(path: Path, default: Any = None) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error


class ModelDirectoryError(ValueError):
    """A model directory that cannot be loaded: one plain sentence naming the file and the remedy.

    A ValueError, so the CLI's ``error: ...`` (exit 2) and the app's message show it instead of a traceback.
    """

    REMEDY = ("Copy the model directory again from its source (a run of your own: train it again), "
              "or choose another model.")

    def __init__(self, path: Path, problem: str, remedy: str = REMEDY) -> None:
        path = Path(path)
        super().__init__(f"The model in {path.parent} cannot be loaded: {path.name} {problem}. {remedy}")
        self.path = path


def read_model_json(model_dir: str | Path, name: str, default: Any = None) -> Any:
    """A JSON file of a model directory (``default`` when absent); a damaged one is a ModelDirectoryError."""
    try:
        return Run(Path(model_dir)).read_json(name, default)
    except ValueError:
        raise ModelDirectoryError(Path(model_dir) / name, "is damaged: it is not valid JSON") from None


# --------------------------------------------------------------------------- weights


def save_weights(
    path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save a state dict as safetensors, atomically.

    Every tensor is copied to its own contiguous CPU storage first, because safetensors refuses
    views and tied weights (two names sharing one storage).
    """
    import safetensors.torch  # lazy, as torch: a serving install reads arrays only

    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}
    _atomic_write_bytes(Path(path), safetensors.torch.save(tensors, metadata=metadata))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors``, or from a torch pickle with ``weights_only=True``.

    Pickles are never unpickled freely: a file that needs anything beyond tensors and plain
    containers is refused with ValueError instead of running its code. A training checkpoint
    (``{"state_dict": ..., "epoch": ...}``) is unwrapped to its state dict.
    """
    import safetensors.torch
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return safetensors.torch.load_file(path, device="cpu")
    if suffix not in TORCH_PICKLE_SUFFIXES:
        raise ValueError(
            f"{path.name}: unsupported weights file type; use .safetensors or one of "
            f"{', '.join(TORCH_PICKLE_SUFFIXES)}."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path.name} was refused: it holds Python objects beyond plain tensors, and loading "
            "them could run arbitrary code. Re-save it as a state dict "
            "(torch.save(model.state_dict(), ...)) or as .safetensors."
        ) from error
    return _unwrap_state_dict(loaded, path)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Plain numpy arrays (e.g. the out-of-domain model) as safetensors, atomically (no torch needed)."""
    _atomic_write_bytes(Path(path), safetensors.numpy.save({name: np.ascontiguousarray(value)
                                                            for name, value in arrays.items()}))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(Path(path))


def _unwrap_state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(loaded, dict):
        nested = next((loaded[key] for key in CHECKPOINT_KEYS if isinstance(loaded.get(key), dict)), None)
        if nested is not None:
            loaded = nested
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path.name} does not contain a state dict (a mapping of names to tensors).")
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path.name}: these entries are not tensors: {', '.join(not_tensors[:5])}.")
    return dict(loaded)


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
        return self.path / _plain_name(name, "file name")

    # ---- JSON members

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def read_json(self, name: str, default: Any = None) -> Any:
        """Parsed ``name``, or ``default`` if the file does not exist (ValueError if it is corrupt)."""
        return _read_json_file(self.file(name), default)

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
        now = _now()
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
            handle.write(f"{_now()} {message.rstrip()}\n")

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
        class_names = [str(name) for name in class_names]
        probs = np.asarray(probs, dtype=float)
        count = len(files)
        labels = np.asarray(list(labels), dtype=int).reshape(-1)
        patients = [""] * count if patients is None else [str(patient) for patient in patients]
        if len(set(class_names)) != len(class_names) or not class_names:
            raise ValueError("class_names must be non-empty and unique.")
        _check_shape("probs", probs, (count, len(class_names)))
        if logits is not None:
            logits = np.asarray(logits, dtype=float)
            _check_shape("logits", logits, (count, len(class_names)))
        if len(labels) != count or len(patients) != count:
            raise ValueError(f"files, labels and patients must all have {count} entries.")

        header = ["file", "patient", "label", *(f"prob_{name}" for name in class_names)]
        if logits is not None:
            header += [f"logit_{name}" for name in class_names]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for index in range(count):
            numbers = list(probs[index]) + (list(logits[index]) if logits is not None else [])
            writer.writerow(
                [files[index], patients[index], int(labels[index]), *(repr(float(x)) for x in numbers)]
            )
        atomic_write_text(self.file(f"{_plain_name(split, 'split name')}_predictions.csv"), buffer.getvalue())

    def predictions(self, split: str = "val") -> dict | None:
        """The predictions written for ``split``, or None if there are none."""
        path = self.file(f"{_plain_name(split, 'split name')}_predictions.csv")
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except FileNotFoundError:
            return None
        if not rows:
            raise ValueError(f"{path} is empty (no header).")
        header, body = rows[0], rows[1:]
        prob_columns = [i for i, name in enumerate(header) if name.startswith("prob_")]
        logit_columns = [i for i, name in enumerate(header) if name.startswith("logit_")]
        if "file" not in header or "label" not in header or not prob_columns:
            raise ValueError(f"{path} lacks the file, label or prob_<class> columns.")

        def column(name: str) -> list[str]:
            index = header.index(name)
            return [row[index] for row in body]

        def matrix(indices: list[int]) -> np.ndarray:
            return np.array([[float(row[i]) for i in indices] for row in body], dtype=float).reshape(
                len(body), len(indices)
            )

        return {
            "file": column("file"),
            "patient": column("patient") if "patient" in header else [""] * len(body),
            "label": np.array([int(value) for value in column("label")], dtype=int),
            "probs": matrix(prob_columns),
            "logits": matrix(logit_columns) if logit_columns else None,
            "class_names": [header[i][len("prob_"):] for i in prob_columns],
        }

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


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, int]) -> None:
    if array.shape != expected:
        raise ValueError(f"{name} has shape {array.shape}; expected {expected} (images x classes).")


# --------------------------------------------------------------------------- many runs


def create_run(config: dict, root: Path | None = None, run_id: str | None = None) -> Run:
    """Make a new run directory (never an existing one), write its config and mark it running."""
    config_text = _to_json(config) + "\n"  # fail on an unstorable config before touching the disk
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
        started = dt.datetime.fromisoformat(_read_json_file(run.path / STATUS_FILE, {})["started"])
        started_at = started.timestamp()
    except (KeyError, TypeError, ValueError, OSError):
        started_at = config_mtime / 1e9
    return (started_at, config_mtime, run.id)
