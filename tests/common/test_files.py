"""Atomic writes: a failed write keeps the old content and leaves no temp file; JSON stores numpy values and paths."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xraycore.common import files
from xraycore.common.files import atomic_write_json, atomic_write_text


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- atomic writes


def test_atomic_json_write_roundtrips_numpy_and_paths_without_temp_files(tmp_path):
    target = tmp_path / "data.json"
    atomic_write_json(target, {"b": np.float32(0.5), "a": np.arange(3), "p": Path("x/y"), "n": np.int64(7)})
    assert json.loads(target.read_text()) == {"a": [0, 1, 2], "b": 0.5, "n": 7, "p": "x/y"}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # sorted keys
    assert _leftovers(tmp_path) == []


def test_failed_json_serialisation_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running"})

    def broken_dumps(*args, **kwargs):
        raise RuntimeError("serialiser exploded")

    monkeypatch.setattr(files.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"state": "finished"})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"state": "running"}
    assert _leftovers(tmp_path) == []


def test_failure_after_temp_file_written_keeps_old_content_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "log.txt"
    atomic_write_text(target, "old")

    def broken_replace(*args, **kwargs):
        raise OSError("disk vanished")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
