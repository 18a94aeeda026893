"""One-pass CAM equals pytorch-grad-cam's GradCAM for every registry backbone whose default head allows it.

Random weights and 96 px inputs (above every backbone's minimum): what is checked is the algebra of the
head (global average pooling straight into a linear classifier), which the registry's ``one_pass_cam``
asserts, not what a trained network looks at.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xraycore.explain import cam as explain
from xraycore import models
from xraycore.models.registry import REGISTRY
from xraycore.inference.backends.torch_runtime import TorchEngine

SIZE = 96
# The deeper ResNet-D networks share resnet18d–50d's stem, CAM layer and head: the algebra is checked on those, and
# that the deep ones build and run is tests/models/test_models.py's (they cost 2.4 s each here).
SAME_HEAD_AS_A_LIGHTER_ONE = {"resnet101d", "resnet152d", "resnet200d"}
ONE_PASS = [name for name, spec in REGISTRY.items() if spec.one_pass_cam and name not in SAME_HEAD_AS_A_LIGHTER_ONE]
BACKWARD = [name for name, spec in REGISTRY.items() if not spec.one_pass_cam]


def _engine(name: str, head: models.HeadSpec = models.HeadSpec()) -> TorchEngine:
    torch.manual_seed(0)
    model, _ = models.build_model(name, 2, pretrained="none", head=head)
    return TorchEngine(model, models.get_spec(name), torch.device("cpu"))


def _batch() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ONE_PASS)
def test_one_pass_cam_equals_grad_cam(name):
    engine, batch = _engine(name), _batch()
    assert engine.one_pass_cam
    layer = models.cam_target_layer(engine.model, engine.spec)
    for class_index in (1, None):
        expected = explain.compute_cam(engine.model, torch.from_numpy(batch), layer, class_index, method="gradcam")
        got = engine.forward(batch, tta=False, cam="gradcam", class_index=class_index)
        assert got.cam_method == explain.ONE_PASS and got.heatmaps.shape == expected.shape
        assert float(np.mean(np.abs(got.heatmaps - expected))) <= 0.005, name


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in BACKWARD if not REGISTRY[name].heavy])
def test_heads_without_the_algebra_take_the_backward_pass(name):
    got = _engine(name).forward(_batch(), tta=False, cam="gradcam", class_index=1)
    assert got.cam_method == "gradcam" and got.heatmaps.shape == (2, SIZE, SIZE)


def test_custom_head_takes_the_backward_pass_and_default_head_does_not():
    custom = _engine("simple_cnn", models.HeadSpec(hidden=8))
    assert not custom.one_pass_cam
    assert custom.forward(_batch(), tta=False, cam="gradcam", class_index=1).cam_method == "gradcam"
    plain = _engine("simple_cnn")
    batch = _batch()
    expected = explain.compute_cam(plain.model, torch.from_numpy(batch), models.cam_target_layer(plain.model, "simple_cnn"),
                                   1, method="gradcam")
    got = plain.forward(batch, tta=False, cam="gradcam", class_index=1)
    assert got.cam_method == explain.ONE_PASS and float(np.mean(np.abs(got.heatmaps - expected))) <= 0.005
