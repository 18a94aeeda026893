"""Grad-CAM heat maps and overlays."""

import numpy as np
import pytest
import torch
from torch import nn

from xraycore.explain import cam as explain
from xraycore import models
from xraycore.explain.cam import CAM_METHODS, compute_cam, overlay

GRADIENT_METHODS = [name for name in CAM_METHODS if name != "eigencam"]  # eigencam ignores the class
SIZE = 32
TOP_LEFT = (slice(2, 10), slice(2, 10))
BOTTOM_RIGHT = (slice(22, 30), slice(22, 30))


class TwoBlobNet(nn.Module):
    """Hand-set weights: feature map k copies input channel k, logit k is the mean of map k.

    Class 0 is therefore "evidence in channel 0", class 1 "evidence in channel 1"; a correct
    class-discriminative CAM must follow the class asked for, not just the brightest spot.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)).mean(dim=(2, 3))


def _two_blob_batch() -> torch.Tensor:
    """Image 0: channel-0 blob top-left, channel-1 blob bottom-right. Image 1: swapped."""
    batch = torch.zeros(2, 3, SIZE, SIZE)
    batch[(0, 0, *TOP_LEFT)] = 1.0
    batch[(0, 1, *BOTTOM_RIGHT)] = 1.0
    batch[(1, 0, *BOTTOM_RIGHT)] = 1.0
    batch[(1, 1, *TOP_LEFT)] = 1.0
    return batch


def _peak_in(heatmap: np.ndarray, region) -> bool:
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return region[0].start <= row < region[0].stop and region[1].start <= col < region[1].stop


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_cam_follows_the_requested_class(method):
    model = TwoBlobNet()
    batch = _two_blob_batch()
    class0 = compute_cam(model, batch, model.act, class_index=0, method=method)
    class1 = compute_cam(model, batch, model.act, class_index=1, method=method)
    assert _peak_in(class0[0], TOP_LEFT) and _peak_in(class0[1], BOTTOM_RIGHT)
    assert _peak_in(class1[0], BOTTOM_RIGHT) and _peak_in(class1[1], TOP_LEFT)
    assert class0[0][BOTTOM_RIGHT].max() < 0.1  # the other class's evidence stays cold


def test_cam_works_inside_no_grad_and_with_every_parameter_frozen():
    model = TwoBlobNet().requires_grad_(False)
    with torch.no_grad():
        heatmaps = compute_cam(model, _two_blob_batch(), model.act, class_index=0)
    assert _peak_in(heatmaps[0], TOP_LEFT) and _peak_in(heatmaps[1], BOTTOM_RIGHT)
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cam_on_a_timm_backbone_has_image_shape_and_unit_range(method):
    torch.manual_seed(0)
    model, _ = models.build_model("resnet18", 2)
    heatmaps = compute_cam(
        model, torch.rand(2, 3, 64, 48), models.cam_target_layer(model, "resnet18"), 1, method
    )
    assert heatmaps.shape == (2, 64, 48) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


def test_cam_leaves_flags_gradients_and_eval_mode_as_promised():
    model, _ = models.build_model("simple_cnn", 2)
    models.freeze_backbone(model)
    model.train()
    flags_before = {name: p.requires_grad for name, p in model.named_parameters()}
    with torch.no_grad():
        compute_cam(model, torch.rand(1, 3, 32, 32), models.cam_target_layer(model, "simple_cnn"), 0)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags_before
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_bad_method_and_bad_class_are_reported():
    model = TwoBlobNet()
    with pytest.raises(ValueError, match="gradcam"):
        compute_cam(model, _two_blob_batch(), model.act, 0, method="magic")
    with pytest.raises(IndexError):
        compute_cam(model, _two_blob_batch(), model.act, class_index=5)


def test_overlay_resizes_the_heatmap_onto_the_scan():
    scan = np.linspace(0, 1, 50 * 40, dtype=np.float32).reshape(50, 40)
    heatmap = np.zeros((7, 7), dtype=np.float32)
    heatmap[:3, :3] = 1.0  # hot top-left
    blended = overlay(scan, heatmap, alpha=1.0)
    assert blended.shape == (50, 40, 3) and blended.dtype == np.uint8
    red, blue = 0, 2
    assert blended[0, 0, red] > 100 and blended[0, 0, blue] < 50  # jet: hot is (dark) red
    assert blended[-1, -1, blue] > 100 and blended[-1, -1, red] < 50  # cold is blue


def test_overlay_with_alpha_zero_is_the_plain_grey_scan():
    scan = np.random.default_rng(0).uniform(0, 0.6, size=(30, 20)).astype(np.float32)
    blended = overlay(scan, np.random.default_rng(1).uniform(size=(4, 4)), alpha=0.0)
    grey = np.round(scan * 255).astype(np.uint8)
    assert np.array_equal(blended, np.stack([grey] * 3, axis=-1))


def test_overlay_accepts_an_rgb_scan():
    scan = np.full((16, 16, 3), 0.5, dtype=np.float32)
    assert overlay(scan, np.ones((2, 2)), alpha=0.4).shape == (16, 16, 3)


def test_jet_and_bilinear_resize_match_opencv_which_the_serving_install_does_without() -> None:
    cv2 = pytest.importorskip("cv2")  # the full install has it (pytorch-grad-cam needs it); the serving one does not
    levels = np.arange(256, dtype=np.uint8)[:, None]
    opencv_jet = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[:, 0]
    assert np.abs(explain.JET.astype(int) - opencv_jet.astype(int)).max() <= 1
    cam = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    ours = explain.resize_bilinear(cam, (224, 300))
    assert ours.shape == (224, 300)
    np.testing.assert_allclose(ours, cv2.resize(cam, (300, 224), interpolation=cv2.INTER_LINEAR), atol=1e-5)
