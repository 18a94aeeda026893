"""Class activation maps (through the grad-cam package) and their overlays on the scan."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

# The fast methods: one forward and (except EigenCAM) one backward pass per batch.
CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
}


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
    try:
        cam_class = CAM_METHODS[method]
    except KeyError:
        raise ValueError(
            f"Unknown CAM method {method!r}. Known methods: {', '.join(CAM_METHODS)}."
        ) from None

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
        scan = cv2.cvtColor(scan, cv2.COLOR_GRAY2RGB)
    height, width = scan.shape[:2]
    heat = cv2.resize(np.asarray(heatmap, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat_uint8 = np.uint8(np.round(255 * np.clip(heat, 0.0, 1.0)))
    colour = cv2.cvtColor(cv2.applyColorMap(heat_uint8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(scan, 1.0 - alpha, colour, alpha, 0.0)  # one uint8 pass: fast at full resolution
