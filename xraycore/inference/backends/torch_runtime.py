"""The torch inference backend: a model directory's network in PyTorch, as training built it.

What it offers beyond ONNX Runtime: GPUs, and every CAM method of the grad-cam package (the backward
pass). Where the registry says Grad-CAM equals CAM (``one_pass_cam``) it takes the one-pass route too:
probability, out-of-domain features and class maps from a single forward without gradients.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError

from xraycore.explain import cam as explain
from xraycore import models
from xraycore.runs import directory as runs
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import load_weights
from xraycore.inference.backends.choice import EngineOutput

NAME = "torch"


class TorchEngine:
    """One network in PyTorch: ``forward`` gives logits, out-of-domain features and heat maps of a batch."""

    name = NAME

    def __init__(self, model: torch.nn.Module, spec: models.BackboneSpec, device: torch.device) -> None:
        self.model, self.spec, self.device = model, spec, device
        self.model.to(device).eval()
        self.cam_weights = models.one_pass_cam_weights(self.model, self.spec)
        self.ood_widths = models.ood_feature_widths(self.model, self.spec)

    @classmethod
    def load(cls, run: runs.Run, config: Mapping[str, Any], device: torch.device,
             delta: Mapping[str, np.ndarray] | None = None) -> "TorchEngine":
        """The network of a model directory (ModelDirectoryError naming what is wrong with it), with a site
        profile's ``delta`` (changed tensors by state-dict name) laid over its weights when given."""
        model = load_model(run, config)  # first: a network this version cannot build is named as such
        if delta:
            _lay_over(model, delta, run)
        return cls(model, models.get_spec(config["backbone"]), device)

    @property
    def one_pass_cam(self) -> bool:
        return self.cam_weights is not None

    def cam_methods(self) -> list[str]:
        return list(explain.CAM_METHODS)

    def outputs(self, batch: torch.Tensor, class_maps: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits, out-of-domain features and (one-pass heads, when asked) the class maps Σ_k w_ck A_k / (h·w),
        all from one forward pass: what the ONNX export writes as the graph's outputs."""
        layer = models.cam_target_layer(self.model, self.spec)
        captured_maps: list[torch.Tensor] = []
        hook = (layer.register_forward_hook(lambda _m, _i, output: captured_maps.append(output))
                if class_maps and self.one_pass_cam else None)
        try:
            with models.OodFeatures(self.model, self.spec) as captured:
                logits = self.model(batch)
        finally:
            if hook is not None:
                hook.remove()
        maps = None
        if captured_maps:
            activations = captured_maps[0].float()
            height, width = activations.shape[-2:]
            maps = torch.nn.functional.conv2d(activations, self.cam_weights.float()[:, :, None, None]) / (height * width)
        return logits, captured.features(0), maps

    def forward(self, batch: np.ndarray, tta: bool, cam: str | None, class_index: int | None) -> EngineOutput:
        """Logits, features and (optionally) CAMs of a batch: one forward without gradients where the head allows
        one-pass CAM (or no CAM is asked for), else one forward + backward through the grad-cam package."""
        inputs = torch.from_numpy(batch).to(self.device)
        one_pass = cam in explain.ONE_PASS_METHODS and self.one_pass_cam
        heatmaps, method = None, None
        if cam and not one_pass:
            layer = models.cam_target_layer(self.model, self.spec)
            with models.OodFeatures(self.model, self.spec) as captured:
                heatmaps, logits = explain.compute_cam(self.model, inputs, layer, class_index, method=cam,
                                                       return_outputs=True)
            feats, method = captured.features(0), cam
        else:
            with torch.no_grad():
                logits, feats, maps = self.outputs(inputs, class_maps=one_pass)
            if maps is not None:
                classes = explain.cam_classes(logits.float().cpu().numpy(), class_index)
                heatmaps = explain.one_pass_cam(maps.cpu().numpy(), classes, tuple(batch.shape[-2:]))
                method = explain.ONE_PASS
        if tta:
            with torch.no_grad():
                logits = (logits + self.model(torch.flip(inputs, dims=[3]))) / 2
        return EngineOutput(logits.float().cpu().numpy(), feats.cpu().numpy(), heatmaps, method)


def _lay_over(model: torch.nn.Module, delta: Mapping[str, np.ndarray], run: runs.Run) -> None:
    """Replace the tensors ``delta`` names (ModelDirectoryError when one is not this network's, or of another shape)."""
    state = model.state_dict()
    misfit = [name for name, array in delta.items() if name not in state or tuple(state[name].shape) != array.shape]
    if misfit:
        raise ModelDirectoryError(run.path, f"does not hold the network this site profile was adapted from "
                                  f"(its tensor {misfit[0]!r} does not fit)")
    with torch.no_grad():
        for name, array in delta.items():
            state[name].copy_(torch.from_numpy(np.asarray(array)).to(state[name].dtype))


def load_model(run: runs.Run, config: Mapping[str, Any]) -> torch.nn.Module:
    """The network config.json describes, with the weights of model.safetensors; ModelDirectoryError when
    the weights are missing, cut short or belong to another network."""
    try:
        head = models.HeadSpec(**config.get("head", {}))
        model, _ = models.build_model(config["backbone"], len(config["class_names"]), pretrained="none", head=head)
    except (ValueError, TypeError):
        raise ModelDirectoryError(run.file(runs.CONFIG_FILE), f"describes a network this version cannot "
                                  f"build (backbone {config['backbone']!r})") from None
    path = run.file(runs.WEIGHTS_FILE)
    if not path.is_file():
        raise ModelDirectoryError(path, "is missing: the model has no trained weights")
    try:
        weights = load_weights(path)
    except (SafetensorError, OSError, ValueError):
        raise ModelDirectoryError(path, "is damaged or cut short: it cannot be read as weights") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError:  # missing, unexpected or differently shaped tensors
        raise ModelDirectoryError(path, f"holds the weights of another network, not of the {config['backbone']} "
                                  f"that {runs.CONFIG_FILE} describes") from None
    return model
