"""Which inference backend answers: torch (training's own code, GPUs, every CAM method) or ONNX Runtime (the
graph ``python -m xraycore export --format onnx`` writes next to each network's weights: no torch needed).

Automatic unless asked: ONNX Runtime on the CPU when every network of the model directory has a graph exported
from its current weights, torch otherwise (and whenever a GPU device is asked for). Nothing here imports torch.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
AUTO = "auto"
BACKENDS = (TORCH, ONNXRUNTIME)
GRAPH_FILE = "model.onnx"
log = logging.getLogger(__name__)


class EngineOutput(NamedTuple):
    """What one network's engine returns for a batch: raw logits (N, K), out-of-domain features (N, D), heat maps
    (N, H, W) in [0, 1] when asked for, and the CAM method that made them (explain.ONE_PASS for one-pass CAM)."""

    logits: np.ndarray
    features: np.ndarray
    heatmaps: np.ndarray | None
    cam_method: str | None


class BackendUnavailable(ValueError):
    """The backend asked for cannot answer here; the message says what to install or run."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (torch alone takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import blocker, or a half-removed package
        return False


def check_request(requested: str | None) -> str:
    """The backend asked for (``auto`` when None); ValueError naming the choices otherwise."""
    requested = requested or AUTO
    if requested not in (AUTO, *BACKENDS):
        raise ValueError(f"unknown backend {requested!r}; choose {AUTO}, {TORCH} or {ONNXRUNTIME}")
    return requested


def graph_missing(network_dirs: list[Path]) -> str | None:
    """Why ONNX Runtime cannot serve these networks (no onnxruntime, a network without a graph), or None."""
    if not installed("onnxruntime"):
        return "onnxruntime is not installed"
    missing = [path for path in network_dirs if not (path / GRAPH_FILE).is_file()]
    if missing:
        return f"no exported graph in {missing[0]} (python -m xraycore export --model MODEL --format onnx)"
    return None


def no_torch_message(reason: str) -> str:
    return (f"this install has no torch, and ONNX Runtime cannot answer: {reason}. Export the model with the full "
            "install (python -m xraycore export --model MODEL --format onnx), or install it: pip install '.[full]'")


def fell_back(reason: str) -> str:
    """Torch answers although the model directory holds an exported graph (damaged, or of other weights): never
    silently. Logged as a warning, which reaches stderr (Python's last-resort handler when the program set none,
    as the CLI does not), and returned as the reason the backend was chosen."""
    message = f"ONNX Runtime cannot serve the exported graph, so torch answers: {reason}"
    log.warning(message)
    return message
