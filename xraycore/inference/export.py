"""Export a model directory to TorchScript or ONNX, and prove the export answers like PyTorch.

ONNX: one graph per network (each member of an ensemble gets its own, in its directory), the one the onnxruntime
backend serves (:mod:`xraycore.inference.backends.onnx_runtime`). Input ``image``: the normalised (N, 3, H, W)
network input (``data.decode.network_input``). Outputs, all from one run: ``logits`` (raw: divide by the operating
point's temperature and take the softmax; the temperature is left out because a named operating point can change it
after the export), ``features`` (what the out-of-domain detector scores) and, for heads where Grad-CAM equals CAM,
``class_maps`` (N, classes, h, w) = Σ_k w_ck A_k / (h·w). The graph's metadata records the weights' sha256, so a
graph of older weights is never served.

TorchScript: the network with its temperature, returning calibrated probabilities.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from xraycore.runs import directory as runs
from xraycore.clinical.operating_points import INTERNAL
from xraycore.inference.backends.choice import GRAPH_FILE
from xraycore.inference.networks import Network
from xraycore.inference.predictor import Predictor
from xraycore.metrics.decision import softmax
from xraycore.common.hashing import sha256_of_file
from xraycore.inference.backends.torch_runtime import TorchEngine

OPSET = 17


class _Calibrated(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x) / self.temperature, dim=1)


class _ServingGraph(torch.nn.Module):
    """What the ONNX graph computes: TorchEngine.outputs, one forward."""

    def __init__(self, engine: TorchEngine) -> None:
        super().__init__()
        self.engine = engine
        self.model = engine.model  # registered, so the export sees the parameters

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, features, class_maps = self.engine.outputs(x)
        return (logits, features) if class_maps is None else (logits, features, class_maps)


def export_model(model_dir: str | Path, fmt: str, output: Path | None = None, atol: float = 1e-4) -> tuple[Path, float]:
    """Write the export and return (path, largest probability difference against PyTorch on random inputs).

    ONNX of an ensemble: one graph per member (``output`` must then be left out); the path returned is the
    model directory's first graph.
    """
    if fmt == "torchscript":
        return _export_torchscript(model_dir, output, atol)
    if fmt != "onnx":
        raise ValueError("format must be torchscript or onnx")
    # the original weights, whatever point is active: a site profile lays its delta over this graph
    predictor = Predictor(model_dir, device="cpu", backend="torch", operating_point=INTERNAL)
    networks = predictor.networks
    if output is not None and len(networks) > 1:
        raise ValueError("an ensemble's graphs go into its members' directories: leave out the output path")
    written, worst = [], 0.0
    for network in networks:
        path, difference = export_onnx(network, predictor.temperature if len(networks) == 1 else network.temperature,
                                       output or network.run.file(GRAPH_FILE), atol)
        written.append(path)
        worst = max(worst, difference)
    return written[0], worst


def export_onnx(network: Network, temperature: float, output: Path, atol: float = 1e-4) -> tuple[Path, float]:
    """One network's serving graph, checked with ONNX Runtime against PyTorch on random inputs: probabilities
    at ``temperature``, features and class maps. Returns (path, largest probability difference)."""
    import onnx

    engine = network.engine
    if not isinstance(engine, TorchEngine):
        raise TypeError("export needs the network on the torch backend")
    graph = _ServingGraph(engine).eval()
    size = network.image_size
    example = torch.randn(2, 3, size, size)
    names = ["logits", "features"] + (["class_maps"] if engine.one_pass_cam else [])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter: hooks trace into it
        expected = [tensor.numpy() for tensor in graph(example)]
        # Named initializers (no batch-norm folding, no constant folding): every weight keeps its state-dict name,
        # so a site profile's delta overrides it in ONNX Runtime (clinical.site_profiles); ONNX Runtime folds the
        # batch norms itself when it loads the graph, so serving is as fast.
        torch.onnx.export(graph, (example,), str(output), input_names=["image"], output_names=names,
                          dynamic_axes={name: {0: "batch"} for name in ["image", *names]}, opset_version=OPSET,
                          dynamo=False, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    model = onnx.load(str(output))
    metadata = {"xraycore.weights_sha256": sha256_of_file(network.run.file(runs.WEIGHTS_FILE)),
                "xraycore.image_size": str(size), "xraycore.ood_widths": json.dumps(list(engine.ood_widths)),
                "xraycore.backbone": network.backbone, "xraycore.class_names": ",".join(network.class_names),
                "xraycore.temperature_at_export": f"{temperature:.6g}"}
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(output))
    got = _run_onnx(output, example.numpy(), names)
    difference = float(np.max(np.abs(softmax(expected[0], temperature) - softmax(got[0], temperature))))
    others = [float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a))))) for a, b in zip(expected[1:], got[1:])]
    if difference > atol or any(value > 1e-3 for value in others):
        raise RuntimeError(f"the exported model disagrees with PyTorch by {difference:.2e} in probability "
                           f"(> {atol:g}) or by {max(others, default=0):.2e} in features / class maps")
    return output, difference


def _export_torchscript(model_dir: str | Path, output: Path | None, atol: float) -> tuple[Path, float]:
    predictor = Predictor(model_dir, device="cpu", backend="torch")
    wrapped = _Calibrated(predictor.model, predictor.temperature).eval()
    size = predictor.image_size
    example = torch.randn(2, 3, size, size)
    output = output or predictor.run.path / "model.ts"
    with torch.no_grad():
        expected = wrapped(example).numpy()
        traced = torch.jit.trace(wrapped, example)
        traced.save(str(output))
        got = torch.jit.load(str(output))(example).numpy()
    difference = float(np.max(np.abs(expected - got)))
    if difference > atol:
        raise RuntimeError(f"the exported model disagrees with PyTorch by {difference:.2e} (> {atol:g})")
    return output, difference


def _run_onnx(path: Path, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Check with onnxruntime when installed, else with the ONNX reference evaluator."""
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(names, {"image": batch})
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(str(path)).run(names, {"image": batch})
