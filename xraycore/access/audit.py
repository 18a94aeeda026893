"""The audit trail: one JSON line per action that scores images or changes shared state.

Each line holds when, who (user, role, how they were known), the action and its outcome (ok, refused,
failed), and what it touched: the model (name, network, version, weights sha256: :func:`model_info`, the
one model identity), the operating point, counts, old → new values, a run or job id. Never a patient name
or ID, an upload's file name or pixels: callers pass counts and settings only, and :func:`record` accepts
nothing else.

The log is append-only (``runs/audit.jsonl``, or ``$XRAY_AUDIT_LOG``): every line goes out in one
``os.write`` on a file opened with O_APPEND, then fsync, so concurrent writers never interleave and a
crash leaves at most a torn last line, which :func:`read` skips (and the next writer starts on a fresh
line). No torch and no Streamlit here: the Audit page and the CLI read it cheaply.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from xraycore.common.hashing import sha256_of_file
from xraycore.common.timestamps import utc_now, utc_timestamp

if TYPE_CHECKING:
    from xraycore.access.identity import Identity

AUDIT_LOG_ENV = "XRAY_AUDIT_LOG"
LOG_NAME = "audit.jsonl"
OK, REFUSED, FAILED = "ok", "refused", "failed"
DETAIL_MAX = 300  # characters of an error message kept
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def log_path() -> Path:
    """``$XRAY_AUDIT_LOG``, else ``audit.jsonl`` in the runs folder (``$XRAY_RUNS_DIR`` or ./runs)."""
    from_env = os.environ.get(AUDIT_LOG_ENV)
    if from_env:
        return Path(from_env)
    runs_dir = os.environ.get("XRAY_RUNS_DIR")
    return (Path(runs_dir) if runs_dir else Path.cwd() / "runs") / LOG_NAME


def record(action: str, identity: Identity | None, *, outcome: str = OK, model: dict[str, Any] | None = None,
           operating_point: str | None = None, threshold: float | None = None,
           counts: dict[str, int] | None = None, old: Any = None,
           new: Any = None, target: str | None = None, detail: str | None = None,
           path: Path | None = None) -> dict[str, Any]:
    """Append one line and return it. Only these fields exist, so nothing else can slip in."""
    entry: dict[str, Any] = {
        "time": utc_timestamp("milliseconds"),
        "user": identity.user if identity is not None else None,
        "role": identity.role if identity is not None else None,
        "via": identity.via if identity is not None else None,
        "action": action, "outcome": outcome,
    }
    optional = {"model": model, "operating_point": operating_point, "threshold": threshold, "counts": counts,
                "old": old, "new": new, "target": target, "detail": None if detail is None else str(detail)[:DETAIL_MAX]}
    entry.update({key: value for key, value in optional.items() if value is not None})
    append(entry, path)
    return entry


def append(entry: dict[str, Any], path: Path | None = None) -> None:
    """One line, one ``os.write`` with O_APPEND, fsync. A torn line left by a crash gets a newline first."""
    path = Path(path) if path is not None else log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode("ascii")
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)  # read: the torn-line check
    try:
        # The torn-line check and the write must not interleave with another writer's (a writer caught
        # mid-write would look torn and earn a stray blank line): one advisory lock across processes.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            line = b"\n" + line  # the previous writer died mid-line: keep ours whole and readable
        written = os.write(descriptor, line)
        if written != len(line):
            raise OSError(f"the audit log {path} took {written} of {len(line)} bytes (disk full?)")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Pending:
    """An action under way: the caller notes what it changed; :func:`performing` writes the line."""

    def __init__(self, identity: Identity, fields: dict[str, Any]) -> None:
        self.identity = identity
        self.fields = fields

    def note(self, **fields: Any) -> None:
        self.fields.update(fields)


@contextmanager
def performing(action: str, identity: Identity, **fields: Any) -> Iterator[Pending]:
    """Exactly one line for the block: 'ok' when it ends, 'failed' (with the error) when it raises."""
    pending = Pending(identity, dict(fields))
    succeeded = False
    try:
        yield pending
        succeeded = True
    finally:
        if succeeded:
            record(action, identity, outcome=OK, **pending.fields)
        else:
            error = sys.exc_info()[1]
            detail = f"{type(error).__name__}: {error}" if error is not None else "interrupted"
            outcome = REFUSED if isinstance(error, PermissionError) else FAILED  # e.g. a path outside the roots
            record(action, identity, outcome=outcome, **{**pending.fields, "detail": detail})


# --------------------------------------------------------------------------- reading


def parse_since(text: str) -> datetime:
    """'30m', '24h', '7d', '2w' before now, or an ISO date / date-time (local time when no zone is given).
    ValueError in words that fit any caller (the CLI's option, the Audit page's field)."""
    relative = _RELATIVE.match(text)
    if relative:
        return utc_now() - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise ValueError(f"{text.strip()!r} is not a time: give a span back from now such as 30m, 24h, 7d or 2w, "
                         "or a date such as 2026-11-29") from error
    return moment if moment.tzinfo else moment.astimezone()


def read(path: Path | None = None, *, since: datetime | None = None, user: str | None = None,
         action: str | None = None) -> list[dict[str, Any]]:
    """Every readable line, oldest first, filtered. A torn or corrupt line is skipped, never fatal.

    ``user`` matches case-insensitively; ``action`` matches the action or its family
    ('operating_point' matches 'operating_point.save').
    """
    path = Path(path) if path is not None else log_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in raw.split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:  # blank, or torn by a crash mid-write
            continue
        if isinstance(entry, dict) and _matches(entry, since, user, action):
            entries.append(entry)
    return entries


def table_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One line as the Audit page's table shows it: the model by name and the first 12 hex of its weights."""
    model = entry.get("model") or {}
    return {"time": entry.get("time"), "user": entry.get("user"), "role": entry.get("role"),
            "action": entry.get("action"), "outcome": entry.get("outcome"), "model": model.get("name"),
            "weights sha256": str(model.get("sha256") or "")[:12], "operating point": entry.get("operating_point"),
            "target": entry.get("target"), "counts": str(entry["counts"]) if "counts" in entry else None,
            "old → new": f"{entry.get('old')} → {entry.get('new')}" if "old" in entry or "new" in entry else None,
            "detail": entry.get("detail")}


def _matches(entry: dict[str, Any], since: datetime | None, user: str | None, action: str | None) -> bool:
    if user is not None and str(entry.get("user") or "").lower() != user.strip().lower():
        return False
    if action is not None:
        name = str(entry.get("action") or "")
        if name != action and not name.startswith(action + "."):
            return False
    if since is not None:
        try:
            return datetime.fromisoformat(str(entry.get("time"))) >= since
        except ValueError:
            return False
    return True


# --------------------------------------------------------------------------- the model a line names


def _json_file(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


ENSEMBLE_FILE, MEMBERS_DIR, WEIGHTS_FILE = "ensemble.json", "members", "model.safetensors"


def model_info(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Which model: {"name", "network", "version", "sha256"} of a model directory. The one model identity:
    audit lines carry it as is, and every result that leaves the app (DICOM SR and overlay, PDF, CSV, the
    self-check) quotes it through :func:`xraycore.inference.provenance.of_model`, so both name a model alike.

    name     the directory's name (real path: "." and links resolved)
    network  its backbone (config.json), "ensemble", or "unknown network"
    version  the version its config gives, else when its training ended (status.json), else
             "weights <first 12 hex of the sha256>" (a bundle carries no status.json); None without weights
    sha256   of model.safetensors; for an ensemble, of its members' weight hashes, one a line, in order;
             None when weights (or a member's) are missing
    """
    model_dir = Path(model_dir).resolve()
    config, status = _json_file(model_dir / "config.json"), _json_file(model_dir / "status.json")
    is_ensemble = (model_dir / ENSEMBLE_FILE).is_file()
    sha256 = _weights_sha256(model_dir)
    network = config.get("backbone") or ("ensemble" if is_ensemble else "unknown network")
    version = config.get("version") or status.get("ended") or (f"weights {sha256[:12]}" if sha256 else None)
    return {"name": model_dir.name, "network": str(network), "version": None if version is None else str(version),
            "sha256": sha256}


def _weights_sha256(model_dir: Path) -> str | None:
    members = _json_file(model_dir / ENSEMBLE_FILE).get("members")
    if isinstance(members, list) and members:  # members are networks, never ensembles themselves
        weights = [model_dir / MEMBERS_DIR / str(name) / WEIGHTS_FILE for name in members]
        if not all(path.is_file() for path in weights):
            return None
        return hashlib.sha256("\n".join(sha256_of_file(path) for path in weights).encode()).hexdigest()
    weights_file = model_dir / WEIGHTS_FILE
    return sha256_of_file(weights_file) if weights_file.is_file() else None
