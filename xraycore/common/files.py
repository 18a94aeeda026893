"""Files written so that a killed process never leaves a lie, and JSON read so that a damaged file is one
plain sentence.

Every whole-file write in xraycore goes through a temp file in the same folder + fsync + ``os.replace``, so
readers (the app, a second process) see either the old or the new content, never half of it. Run and model
directories, the operating points, releases, evaluations, job records and caches all write this way; they
live in different rooms, so the helpers live here, in the leaf room every room may import. ``plain_name`` is
the one check that a name read from a user or a file is a single safe file or directory name.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Iterator

import numpy as np

_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def plain_name(name: str, what: str) -> str:
    """``name`` unchanged if it is safe as a single file or directory name, else ValueError naming ``what``.

    Allowed: letters, digits, ``.``, ``_``, ``-``; at most 128 characters; no leading dot and no ``..``.
    That rules out separators, hidden files and every form of path traversal.
    """
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid {what}: use 1-128 letters, digits, '.', '_' or '-'."
        )
    if name.startswith(".") or ".." in name:
        raise ValueError(f"{name!r} is not a valid {what}: it may not start with '.' or contain '..'.")
    return name


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers never see a partly written file."""
    with atomic_stream(path) as stream:
        stream.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so readers never see a partly written file."""
    atomic_write_bytes(path, text.encode("utf-8"))


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


def to_json(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as key-sorted JSON (numpy values, paths, sets and datetimes allowed); TypeError otherwise."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=_json_default)


def json_line(row: dict) -> str:
    """One JSON-lines line (compact JSON + newline), as metrics.jsonl holds them."""
    return to_json(row, indent=None) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON, atomically. Serialises first, so a bad object
    changes nothing on disk."""
    atomic_write_text(path, to_json(obj) + "\n")


# --------------------------------------------------------------------------- reading


def read_json_file(path: Path, default: Any = None) -> Any:
    """Parsed JSON of ``path``, or ``default`` if the file does not exist; ValueError naming the file if it
    is not valid JSON (a torn or hand-edited file is said, not guessed at)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
