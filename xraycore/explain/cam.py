"""Class activation maps and their overlays on the scan.

For a network whose CAM layer is globally average-pooled straight into a linear classifier (the registry's
``one_pass_cam``: most backbones with their default head, not MobileNetV3, ConvNeXt or VGG), Grad-CAM's
channel weights are the classifier's weights divided by h·w, so Grad-CAM is CAM: ReLU(Σ_k w_ck A_k),
computable from the activations of the forward pass that gives the probability, with no backward pass
(:func:`one_pass_cam`).
Every other method, and other heads, go through the grad-cam package (:func:`compute_cam`, torch).
This module imports neither torch nor grad-cam until :func:`compute_cam` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch
    from torch import nn

# The fast methods: one forward and (except EigenCAM) one backward pass per batch; the grad-cam class of each.
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
}
ONE_PASS = "cam"  # the method a Prediction reports when Grad-CAM was computed in one pass, as CAM
ONE_PASS_METHODS = ("gradcam",)  # the methods that equal CAM for a GAP + linear head
METHOD_LABELS: dict[str, str] = {
    ONE_PASS: "Grad-CAM (one forward pass, as CAM)",
    "gradcam": "Grad-CAM (forward + backward pass)",
    "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "layercam": "Layer-CAM", "hirescam": "HiRes-CAM",
    "eigencam": "Eigen-CAM",
}


def check_method(method: str) -> str:
    if method not in CAM_METHODS:
        raise ValueError(f"Unknown CAM method {method!r}. Known methods: {', '.join(CAM_METHODS)}.")
    return method


def cam_classes(logits: np.ndarray, class_index: int | None) -> np.ndarray:
    """The class each image's heat map explains: ``class_index``, or (None) its top class, as grad-cam picks it."""
    logits = np.asarray(logits)
    return np.argmax(logits, axis=-1) if class_index is None else np.full(len(logits), class_index)


def one_pass_cam(class_maps: np.ndarray, classes: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """(N, K, h, w) class maps Σ_k w_ck A_k / (h·w) → (N, H, W) float32 heat maps in [0, 1] of each image's class.

    Scaled exactly as pytorch-grad-cam scales its Grad-CAM (ReLU, min-max, bilinear to the input's
    ``size`` = (H, W), min-max again), so the two agree to float rounding.
    """
    chosen = np.maximum(np.asarray(class_maps, dtype=np.float32)[np.arange(len(classes)), np.asarray(classes)], 0)
    heatmaps = np.empty((len(chosen), *size), dtype=np.float32)
    for i, cam in enumerate(chosen):
        heatmaps[i] = _unit_range(resize_bilinear(_unit_range(cam), size))
    return np.clip(np.nan_to_num(heatmaps), 0.0, 1.0)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resized bilinearly to ``size`` = (H, W), with Pillow (the serving install has no OpenCV).

    Enlarging equals OpenCV's INTER_LINEAR, which pytorch-grad-cam uses, to float rounding; shrinking
    averages over the footprint (Pillow's antialiasing) where OpenCV would sample.
    """
    height, width = int(size[0]), int(size[1])
    image = np.asarray(image, dtype=np.float32)
    if image.shape == (height, width):  # a stored heat map redrawn at its own size (every opacity change)
        return image.copy()
    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


# The jet colour map as a 256-entry RGB table (OpenCV's COLORMAP_JET to within one grey level, tested).
_LEVELS = np.linspace(0.0, 1.0, 256)
JET = np.uint8(np.round(255 * np.clip(1.5 - np.abs(4 * _LEVELS[:, None] - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)))


def _unit_range(cam: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image for one map, without the resize."""
    cam = np.float32(cam - np.min(cam))
    return np.float32(cam / (1e-7 + np.max(cam)))


def compute_cam(
    model: nn.Module,
    input_tensor: torch.Tensor,
    target_layer: nn.Module,
    class_index: int | None,
    method: str = "gradcam",
    return_outputs: bool = False,
) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
    """Heat maps of `class_index` for a batch (N, C, H, W) -> (N, H, W) float32 in [0, 1].

    Works from inside torch.no_grad() and on a frozen backbone: gradients flow from an input
    that requires grad, while the parameters are temporarily excluded from autograd (no
    parameter .grad is accumulated; existing ones are cleared by grad-cam's zero_grad).
    The model is left in eval mode with its requires_grad flags as they were.
    class_index None explains each image's top class. return_outputs also returns the logits of
    the same forward pass, so a caller that needs both pays for one forward, not two.
    """
    import pytorch_grad_cam  # lazy, with torch: 4-5 s to import, and only this function needs them
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = getattr(pytorch_grad_cam, CAM_METHODS[check_method(method)])
    model.eval()
    original_flags = [(p, p.requires_grad) for p in model.parameters()]
    inputs = input_tensor.detach().clone().requires_grad_(True)
    targets = None if class_index is None else [ClassifierOutputTarget(class_index)] * inputs.shape[0]
    # Not grad-cam's context manager: its __exit__ swallows IndexError (e.g. a bad class_index).
    cam = cam_class(model=model, target_layers=[target_layer])
    try:
        model.requires_grad_(False)
        with torch.enable_grad():
            heatmaps = cam(input_tensor=inputs, targets=targets)
    finally:
        cam.activations_and_grads.release()
        for parameter, flag in original_flags:
            parameter.requires_grad_(flag)
    heatmaps = np.clip(np.nan_to_num(heatmaps.astype(np.float32)), 0.0, 1.0)
    if return_outputs:
        return heatmaps, cam.outputs.detach()
    return heatmaps


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a heat map (any size, [0, 1]) over a scan (H, W or H, W, 3 float in [0, 1]).

    Returns an (H, W, 3) uint8 RGB image: (1 - alpha) * scan + alpha * jet(heatmap), so
    alpha=0 gives back the plain scan and the scan's brightness is never rescaled.
    """
    scan = np.asarray(image)
    if scan.dtype != np.uint8:  # float in [0, 1]
        scan = np.uint8(np.round(255 * np.clip(scan, 0.0, 1.0)))
    if scan.ndim == 2:
        scan = np.repeat(scan[:, :, None], 3, axis=2)
    height, width = scan.shape[:2]
    heat = resize_bilinear(heatmap, (height, width))
    colour = JET[np.uint8(np.round(255 * np.clip(heat, 0.0, 1.0)))]
    # Pillow's blend is one uint8 pass in C: fast at full resolution
    return np.array(Image.blend(Image.fromarray(scan), Image.fromarray(colour), alpha))
