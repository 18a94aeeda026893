"""Export a model directory to TorchScript or ONNX, and prove the export answers like PyTorch.

The exported graph takes the normalised 3xHxW input (see ``Predictor.to_tensor``) and returns
calibrated probabilities (temperature applied), so a hospital's serving stack needs no xraycore.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .predict import Predictor


class _Calibrated(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x) / self.temperature, dim=1)


def export_model(model_dir: str | Path, fmt: str, output: Path | None = None, atol: float = 1e-4) -> tuple[Path, float]:
    """Write the export and return (path, largest probability difference against PyTorch on random inputs)."""
    predictor = Predictor(model_dir, device="cpu")
    wrapped = _Calibrated(predictor.model, predictor.temperature).eval()
    size = predictor.image_size
    example = torch.randn(2, 3, size, size)
    output = output or predictor.run.path / ("model.ts" if fmt == "torchscript" else "model.onnx")
    with torch.no_grad():
        expected = wrapped(example).numpy()
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapped, example)
            traced.save(str(output))
            got = torch.jit.load(str(output))(example).numpy()
        elif fmt == "onnx":
            torch.onnx.export(wrapped, (example,), str(output), input_names=["image"], output_names=["probabilities"],
                              dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}}, dynamo=False)
            got = _run_onnx(output, example.numpy())
        else:
            raise ValueError("format must be torchscript or onnx")
    difference = float(np.max(np.abs(expected - got)))
    if difference > atol:
        raise RuntimeError(f"the exported model disagrees with PyTorch by {difference:.2e} (> {atol:g})")
    return output, difference


def _run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    """Check with onnxruntime when installed, else with the ONNX reference evaluator."""
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": batch})[0]
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(str(path)).run(None, {"image": batch})[0]
