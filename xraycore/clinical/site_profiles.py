"""Site profiles: a model adapted to one hospital, stored as what changed, and answering as an operating point.

``adapt`` fine-tunes part of every network of a model on a site's labelled films (:mod:`xraycore.training.adaptation`)
and keeps the original weights untouched: the profile is a folder ``sites/<name>/`` inside the model directory with
``profile.json`` (method, temperature and F2 threshold, counts per class, data fingerprint, date, who made it, the
cross-fitted figures before and after, the held-fold logits of the site films: the reference distribution that
monitoring compares later films to) and one ``<network>.delta.safetensors`` per network holding only the tensors
that changed, named as in the network's state dict. Both backends lay the delta over the original weights: torch
through the state dict, ONNX Runtime by overriding the exported graph's initializers of the same names (graphs
exported with named initializers; the profile records each graph's sha256 it was checked against).

Which profile answers is an operating point of kind :data:`PROFILE_KIND` in ``operating_points.json`` whose
``profile`` key names the folder: clinical stays the one owner of "which threshold answers", and activation,
rollback and history are those of :mod:`operating_points`. A profile is written under a temporary name and renamed
into place; the operating point is written last, atomically: a killed ``adapt`` leaves the model as it was.
Torch-free: the reading-room install loads profiles too.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xraycore.common.files import atomic_write_json, plain_name, read_json_file
from xraycore.common.hashing import sha256_of_file
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import load_arrays, save_arrays

PROFILE_KIND = "site profile"
SITES_DIR = "sites"
PROFILE_FILE = "profile.json"
DELTA_SUFFIX = ".delta.safetensors"
SINGLE_NETWORK = "model"  # the network key of a model directory that is one network, not an ensemble
GRAPH_PREFIX = "model."  # the exported graph names a state-dict tensor "model.<name>" (inference.export)
MAX_MEMBER_BYTES = 5 * 1024 * 1024  # what a shipped profile may weigh per network (issue 29; a test holds the bundle to it)


def check_profile_name(name: str) -> str:
    """``name`` if it can name a profile folder, else ValueError in one sentence."""
    return plain_name(str(name).strip(), "site profile name")


def profile_dir(model_dir: str | Path, name: str) -> Path:
    return Path(model_dir) / SITES_DIR / check_profile_name(name)


def is_profile_point(point: Mapping[str, Any] | None) -> bool:
    return bool(point) and point.get("kind") == PROFILE_KIND


def load_profile(model_dir: str | Path, name: str) -> dict[str, Any]:
    """profile.json of profile ``name`` (ModelDirectoryError when it is missing or damaged)."""
    path = profile_dir(model_dir, name) / PROFILE_FILE
    if not path.is_file():
        raise ModelDirectoryError(path, "is missing: the site profile this operating point names is not there")
    try:
        profile = read_json_file(path)
    except ValueError:
        raise ModelDirectoryError(path, "is damaged: it is not valid JSON") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("networks"), dict):
        raise ModelDirectoryError(path, "is damaged: it does not list its networks")
    return profile


def network_key(member_dir: Path, model_dir: Path) -> str:
    """The key a network's delta is stored under: its member folder's name, or ``model`` for a one-network model."""
    return SINGLE_NETWORK if Path(member_dir).resolve() == Path(model_dir).resolve() else Path(member_dir).name


def load_delta(model_dir: str | Path, name: str, key: str) -> dict[str, np.ndarray]:
    """The changed tensors of one network of profile ``name`` as numpy arrays ({} when it changed nothing)."""
    profile = load_profile(model_dir, name)
    entry = profile["networks"].get(key)
    if entry is None:
        raise ModelDirectoryError(profile_dir(model_dir, name) / PROFILE_FILE,
                                  f"has no weights for the network {key!r}: it was adapted from another model")
    path = profile_dir(model_dir, name) / plain_name(entry["file"], "delta file")
    try:
        return load_arrays(path)
    except Exception:  # safetensors' own errors, a missing or cut file: one plain sentence
        raise ModelDirectoryError(path, "is damaged or missing: the site profile's weights cannot be read") from None


def deltas_for(model_dir: str | Path, point: Mapping[str, Any] | None, keys: list[str]) -> dict[str, dict[str, np.ndarray]] | None:
    """{network key: delta} when ``point`` is a site profile, else None."""
    if not is_profile_point(point):
        return None
    return {key: load_delta(model_dir, point["profile"], key) for key in keys}


def graph_overrides(model_dir: str | Path, name: str, key: str, graph: Path) -> dict[str, np.ndarray]:
    """The initializers ONNX Runtime replaces to answer with the profile: the delta named as the graph names it.
    ModelDirectoryError unless the graph is the one the profile was checked against (same names)."""
    entry = load_profile(model_dir, name)["networks"].get(key) or {}
    if entry.get("graph_sha256") != sha256_of_file(graph):
        raise ModelDirectoryError(graph, f"is not the graph site profile {name!r} was checked against, so its tensor "
                                  "names may differ; adapt again, or use the torch backend")
    return {GRAPH_PREFIX + tensor: array for tensor, array in load_delta(model_dir, name, key).items()}


# An ONNX graph with some initializers replaced, written straight in protobuf's wire format: ONNX Runtime ignores
# SessionOptions.add_initializer for any weight its optimiser folds (every convolution's, with batch norm), and the
# serving install has no onnx package. The graph is a ModelProto (field 7: GraphProto, whose field 5 is each
# initializer, a TensorProto: 1 dims, 2 data type, 4 float data, 8 name, 9 raw data).
_GRAPH, _INITIALIZER, _DIMS, _DATA_TYPE, _FLOAT_DATA, _NAME, _RAW_DATA, _FLOAT = 7, 5, 1, 2, 4, 8, 9, 1


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(data: bytes):
    """(field number, wire type, value: int or bytes, the field's raw bytes) of one protobuf message."""
    at = 0
    while at < len(data):
        start = at
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = data[at:at + size], at + size
        else:
            raise ValueError("the exported graph is not a protobuf message this reader knows")
        yield number, wire, value, data[start:at]


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _replaced_tensor(tensor: bytes, array: np.ndarray, name: str) -> bytes:
    kept, dims, data_type = [], [], None
    for number, wire, value, raw in _fields(tensor):
        if number == _DIMS:
            dims += [value] if wire == 0 else _packed(value)
        if number == _DATA_TYPE:
            data_type = value
        if number not in (_FLOAT_DATA, _RAW_DATA):
            kept.append(raw)
    if data_type != _FLOAT or tuple(dims) != tuple(array.shape):
        raise ValueError(f"The exported graph's {name} is not a float tensor of shape {tuple(array.shape)}.")
    return b"".join(kept) + _length_field(_RAW_DATA, np.ascontiguousarray(array, dtype="<f4").tobytes())


def _packed(data: bytes) -> list[int]:
    values, at = [], 0
    while at < len(data):
        value, at = _varint(data, at)
        values.append(value)
    return values


def with_initializers(model: bytes, overrides: Mapping[str, np.ndarray]) -> bytes:
    """The serialized ONNX ``model`` with the named initializers' values replaced (ValueError naming one the graph
    lacks or whose shape differs): what ONNX Runtime loads to answer with a site profile, fully optimised."""
    done: set[str] = set()

    def graph(data: bytes) -> bytes:
        out = []
        for number, wire, value, raw in _fields(data):
            if number == _INITIALIZER and wire == 2:
                name = next((v.decode() for n, w, v, _ in _fields(value) if n == _NAME and w == 2), None)
                if name in overrides:
                    done.add(name)
                    raw = _length_field(_INITIALIZER, _replaced_tensor(value, np.asarray(overrides[name]), name))
            out.append(raw)
        return b"".join(out)

    rewritten = b"".join(_length_field(_GRAPH, graph(value)) if number == _GRAPH and wire == 2 else raw
                         for number, wire, value, raw in _fields(model))
    if missing := sorted(set(overrides) - done):
        raise ValueError(f"The exported graph has no weight named {missing[0]!r}: it was exported before site "
                         "profiles; export it again (python -m xraycore export --model MODEL --format onnx).")
    return rewritten


def missing_graph_names(delta: Mapping[str, Any], initializer_names: set[str]) -> list[str]:
    """The delta's tensors the graph has no initializer for (empty: every name matches)."""
    return [tensor for tensor in delta if GRAPH_PREFIX + tensor not in initializer_names]


def write_profile(model_dir: str | Path, name: str, profile: dict[str, Any],
                  deltas: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """Write profile ``name`` under a temporary folder of ``sites/`` and rename it into place (ValueError when a
    profile of that name exists: profiles are never rewritten). Returns its folder."""
    final = profile_dir(model_dir, name)
    if final.exists():
        raise ValueError(f"This model already has a site profile named {name!r}; choose another name.")
    temporary = final.parent / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        networks = {}
        for key, delta in deltas.items():
            file = f"{plain_name(key, 'network name')}{DELTA_SUFFIX}"
            save_arrays(temporary / file, {tensor: np.ascontiguousarray(array, dtype=np.float32)
                                           for tensor, array in delta.items()})
            networks[key] = {**profile.get("networks", {}).get(key, {}), "file": file, "tensors": len(delta),
                             "bytes": (temporary / file).stat().st_size}
        atomic_write_json(temporary / PROFILE_FILE, {**profile, "name": name, "networks": networks})
        os.replace(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final


def remove_stale_temporaries(model_dir: str | Path) -> None:
    """Temporary profile folders a killed ``adapt`` left behind (they were never in use)."""
    sites = Path(model_dir) / SITES_DIR
    for leftover in sites.glob(".tmp-*") if sites.is_dir() else ():
        shutil.rmtree(leftover, ignore_errors=True)


def profile_refusal(point: Mapping[str, Any]) -> str | None:
    """Why a site-profile operating point may not be saved or activated, in one sentence (None: it may)."""
    if not is_profile_point(point):
        return None
    if not point.get("profile"):
        return "This site profile operating point does not name its profile."
    return None
