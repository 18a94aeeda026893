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

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "choice": ("EngineOutput", "BackendUnavailable", "installed", "check_request", "graph_missing",
        "no_torch_message", "fell_back"),
    "onnx_runtime": ("StaleGraph", "OnnxEngine"),
    "torch_runtime": ("TorchEngine", "load_model"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
