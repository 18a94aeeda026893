"""The inference backends: which one answers, torch and ONNX Runtime.

    choice         Which inference backend answers: torch (training's own code, GPUs, every CAM method) or
                   ONNX Runtime (the graph `python -m xraycore export --format onnx` writes next to each
                   network's weights: no torch needed)
    onnx_runtime   The ONNX Runtime inference backend: the graph `python -m xraycore export --format onnx`
                   wrote for a network
    torch_runtime  The torch inference backend: a model directory's network in PyTorch, as training built it

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "choice": ("EngineOutput", "BackendUnavailable", "installed", "check_request", "graph_missing",
        "no_torch_message", "fell_back"),
    "onnx_runtime": ("StaleGraph", "OnnxEngine"),
    "torch_runtime": ("TorchEngine", "load_model"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use: importing the package itself costs nothing."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, *_EXPORTS})
