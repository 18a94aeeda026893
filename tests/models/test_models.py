"""Backbone registry, heads, weights sources and freezing (tiny inputs, no network)."""

import hashlib
import os

import pytest
import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file
from torch import nn

from xraycore import data
from xraycore.training import config
from xraycore import models
from xraycore.models import weights
from xraycore.models.builder import HeadSpec, build_model
from xraycore.models.registry import INPUT_NORMALISATIONS, PROBE_SIZE, REGISTRY

# Every backbone named in docs/presets.md.
PRESET_BACKBONES = {
    "resnet18", "resnet50", "resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d",
    "resnet200d", "resnext50_32x4d", "densenet121", "densenet161", "efficientnet_b0",
    "efficientnet_b3", "inception_v3", "mobilenetv2_100", "mobilenetv3_large_100", "vgg16",
    "xception", "convnext_tiny", "efficientnet_lite0", "simple_cnn",
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may reach the network: hub downloads are switched off."""
    monkeypatch.setenv("XRAY_OFFLINE", "1")


def _batch(name: str, n: int = 2) -> torch.Tensor:
    """Images of the smallest size the registry allows for ``name``: every build below runs at it."""
    size = models.min_input_size(name)
    return torch.rand(n, 3, size, size)


# ---------------------------------------------------------------- registry


def test_registry_covers_every_preset_backbone():
    assert PRESET_BACKBONES <= set(models.list_backbones())


def test_registry_facts_equal_timms_pretrained_cfg():
    """The registry writes size and normalisation out (no timm lookups at import); timm's cfg is the source."""
    for spec in REGISTRY.values():
        if spec.builder is not None:
            continue
        cfg = timm.models.get_pretrained_cfg(spec.timm_id)
        assert cfg is not None, spec.timm_id
        assert spec.input_size == cfg.input_size[-1], spec.name
        assert (spec.mean, spec.std) == (tuple(cfg.mean), tuple(cfg.std)), spec.name
        assert spec.min_input_size >= (cfg.min_input_size or (0, 0, 0))[-1], spec.name
    xception = models.get_spec("xception")
    assert xception.timm_id == "legacy_xception" and xception.input_size == 299
    assert models.get_spec("vgg16").heavy and not models.get_spec("resnet18d").heavy


def test_input_normalisation_follows_the_configs_mode():
    assert models.input_normalisation("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert models.input_normalisation("xception", "backbone") == ((0.5,) * 3, (0.5,) * 3)
    assert models.input_normalisation("xception", "imagenet") == models.input_normalisation("resnet18")
    assert models.input_normalisation("resnet18", "half") == ((0.5,) * 3, (1.0,) * 3)  # pixels/255 - 0.5
    assert set(config.NORMALISATIONS) == {"backbone", *INPUT_NORMALISATIONS}
    assert INPUT_NORMALISATIONS["imagenet"] == (data.IMAGENET_MEAN, data.IMAGENET_STD)  # serving's default
    with pytest.raises(ValueError, match="normalisation must be one of"):
        models.input_normalisation("resnet18", "dataset")


def test_min_input_size_comes_from_the_registry():
    assert models.min_input_size("inception_v3") == models.min_input_size("xception") == 96
    assert models.min_input_size("resnet18") == 32
    assert PROBE_SIZE == 96  # ood_feature_widths' one forward must run every backbone


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet18d.*convnext_tiny"):
        models.get_spec("resnet9000")


def _smoke_cases():
    """Every backbone with 3 classes through the custom head (every classifier slot is tested);
    the light ones also with 2 classes through timm's own head. Heavy ones are built once."""
    for name in models.list_backbones():
        if not models.get_spec(name).heavy:
            yield pytest.param(name, 2, HeadSpec(), id=f"{name}-2")
        yield pytest.param(name, 3, HeadSpec(hidden=8, dropout=0.4), id=f"{name}-3")


@pytest.mark.parametrize("name, num_classes, head", _smoke_cases())
def test_every_backbone_builds_runs_and_has_its_cam_layer(name, num_classes, head):
    """One cheap forward per build, at the registry's min_input_size: logits shape, CAM layer on the path,
    2-D features."""
    model, source = build_model(name, num_classes=num_classes, head=head)
    assert source == "random initialisation (no pretrained weights requested)"
    cam_shapes = []
    models.cam_target_layer(model, name).register_forward_hook(
        lambda module, inputs, output: cam_shapes.append(output.shape)
    )
    x = _batch(name, n=1)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, num_classes)
        pre_logits = models.features(model, x)
    assert len(cam_shapes[0]) == 4, "the CAM layer must run and produce a spatial map"
    assert pre_logits.ndim == 2 and pre_logits.shape[0] == 1
    if head.is_custom:
        assert isinstance(model.get_classifier(), nn.Sequential)


# ---------------------------------------------------------------- heads and freezing


def test_custom_head_replaces_the_classifier_and_feeds_on_pre_logits():
    model, _ = build_model("xception", 1, head=HeadSpec(hidden=1028))
    head = model.get_classifier()
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 1028), (1028, 1)]
    model.eval()
    x = _batch("xception")
    with torch.no_grad():
        assert torch.allclose(model(x), head(models.features(model, x)))


def test_default_head_is_timms_classifier_with_dropout():
    model, _ = build_model("resnet18d", 2, head=HeadSpec(dropout=0.4))
    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.drop_rate == 0.4


@pytest.mark.parametrize("head", [HeadSpec(init="zero"), HeadSpec(hidden=16, batchnorm=True, init="zero")],
                         ids=["linear", "dense"])
def test_a_zero_head_starts_at_even_odds_and_leaves_the_backbone_alone(head):
    model, _ = build_model("resnet18", 2, head=head)
    x = torch.randn(4, 3, 64, 64)
    logits = model(x)
    assert torch.equal(logits, torch.zeros(4, 2))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 0])).backward()
    classifier = {id(p) for p in model.get_classifier().parameters()}
    backbone_grads = [p.grad for p in model.parameters() if id(p) not in classifier]
    assert all(g is None or not g.any() for g in backbone_grads)
    last = [m for m in model.get_classifier().modules() if isinstance(m, nn.Linear)][-1]
    assert last.weight.grad.abs().sum() > 0


def test_timms_own_head_init_is_kept_unless_zero_is_asked():
    model, _ = build_model("mobilenetv2_100", 2)  # timm's EfficientNet-family init: up to ±1/sqrt(2)
    assert model.get_classifier().weight.abs().max() > 0.5


def _bn_head_model():
    return build_model("resnet18", 2, head=HeadSpec(hidden=16, dropout=0.4, batchnorm=True))[0]


def test_freeze_backbone_leaves_only_the_head_trainable():
    model = _bn_head_model()
    models.freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("fc.") for name in trainable)
    head_size = sum(p.numel() for p in model.get_classifier().parameters())
    assert models.trainable_parameter_count(model) == head_size
    # The head still trains: a step changes it and nothing else.
    model.train()
    models.set_batchnorm_eval(model)
    loss = model(torch.rand(4, 3, 32, 32)).sum()
    loss.backward()
    assert model.layer1[0].conv1.weight.grad is None
    assert model.get_classifier()[1].weight.grad is not None


def test_unfreeze_keeps_backbone_batchnorm_frozen_and_in_eval_mode():
    model = _bn_head_model()
    models.freeze_backbone(model)
    models.unfreeze(model, keep_batchnorm_frozen=True)
    head = model.get_classifier()
    backbone_bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    head_bn = [m for m in head if isinstance(m, nn.BatchNorm1d)]
    assert backbone_bn and head_bn
    assert not any(p.requires_grad for m in backbone_bn for p in m.parameters())
    bn_params = {id(p) for m in backbone_bn for p in m.parameters()}
    assert all(p.requires_grad for p in model.parameters() if id(p) not in bn_params)

    model.train()
    models.set_batchnorm_eval(model)
    assert not any(m.training for m in backbone_bn)
    assert all(m.training for m in head_bn) and model.layer4.training
    running_mean = model.bn1.running_mean.clone()
    model(torch.rand(4, 3, 32, 32))
    assert torch.equal(model.bn1.running_mean, running_mean)

    models.unfreeze(model, keep_batchnorm_frozen=False)
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- local weights


def _file_sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_weights_with_other_key_names_load_in_order(tmp_path):
    torch.manual_seed(1)
    source_model = models.create_network(models.get_spec("resnet18"), num_classes=1000)
    # torchvision-like checkpoint: same tensors in the same order, unrelated key names.
    renamed = {f"tensor_{i:03d}": t for i, t in enumerate(source_model.state_dict().values())}
    path = tmp_path / "imagenet.pth"
    torch.save(renamed, path)

    model, source = build_model("resnet18", 2, pretrained=str(path))
    assert torch.equal(model.conv1.weight, source_model.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source_model.layer4[1].bn2.running_var)
    assert model.fc.weight.shape == (2, 512)  # the 1000-class classifier was left out
    backbone_count = len(source_model.state_dict()) - 2
    assert f"sha256 {_file_sha256(path)[:8]}" in source
    assert f"{backbone_count}/{backbone_count} backbone tensors matched" in source
    assert str(path) in source


def test_local_safetensors_checkpoint_restores_the_whole_model(tmp_path):
    trained, _ = build_model("simple_cnn", 2, head=HeadSpec(hidden=8))
    path = tmp_path / "model.safetensors"
    save_file(trained.state_dict(), str(path))
    restored, source = build_model("simple_cnn", 2, head=HeadSpec(hidden=8), pretrained=str(path))
    for key, value in trained.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert "classifier loaded from the file" in source


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "effnet.pth"
    torch.save(models.create_network(models.get_spec("efficientnet_b0"), num_classes=2).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit this model"):
        build_model("resnet18", 2, pretrained=str(path))


class _CodePayload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _CodePayload(str(marker))}, path)
    with pytest.raises(ValueError, match="(?i)refused"):
        build_model("resnet18", 2, pretrained=str(path))
    assert not marker.exists()


def test_missing_weights_file_is_a_plain_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        build_model("resnet18", 2, pretrained=str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------- the model hub


@pytest.mark.parametrize("variable", ["XRAY_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_hub_falls_back_to_scratch_quickly(monkeypatch, variable):
    monkeypatch.delenv("XRAY_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    assert weights.hub_reachable() is False
    model, source = build_model("resnet18", 2, pretrained="hub")
    assert source.startswith("random initialisation") and "trained from scratch" in source
    assert "offline" in source
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("hub", ["closed port", "silent port"])
def test_an_unreachable_hub_falls_back_to_scratch_within_two_seconds(monkeypatch, hub):
    """docs/training.md's promise (pretrained weights), on a real socket: the hub's address leads to a loopback
    port that is closed (the connection is refused) or that never answers (a listener whose queue is full: SYNs
    are dropped), so the 2-second connect timeout itself is what bounds the wait."""
    import socket
    import time

    monkeypatch.delenv("XRAY_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    held: list[socket.socket] = []
    if hub == "closed port":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        held.append(listener)
        for _ in range(3):  # fill the accept queue; later connections get no answer at all
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            held.append(client)
    connect = socket.create_connection
    asked: list[tuple[str, int]] = []

    def to_the_test_port(address, timeout=None, *rest, **kwargs):
        asked.append(address)
        return connect(("127.0.0.1", port), timeout, *rest, **kwargs)

    monkeypatch.setattr(weights.socket, "create_connection", to_the_test_port)
    weights._can_connect.cache_clear()
    try:
        started = time.monotonic()
        model, source = build_model("resnet18", 2, pretrained="hub")
        took = time.monotonic() - started
    finally:
        weights._can_connect.cache_clear()
        for sock in held:
            sock.close()
    assert asked and asked[0][1] == 443, "the hub's own address was tried"
    assert source.startswith("random initialisation") and "unreachable" in source and "trained from scratch" in source
    assert took < 3.0, f"fell back after {took:.1f} s"
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def _hub_download_raising(monkeypatch, error: BaseException) -> None:
    """The hub looks reachable, and every pretrained download raises ``error``."""
    monkeypatch.delenv("XRAY_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "hub_reachable", lambda **kwargs: True)
    real_create = timm.create_model

    def create_without_network(model_id, pretrained=False, **kwargs):
        if pretrained:
            raise error
        return real_create(model_id, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_without_network)


@pytest.mark.parametrize("error", [OSError("connection reset"), RuntimeError("PytorchStreamReader failed"),
                                   LocalEntryNotFoundError("not in the local cache")], ids=["network", "damaged", "not-cached"])
def test_failed_hub_download_falls_back_instead_of_raising(monkeypatch, error):
    _hub_download_raising(monkeypatch, error)
    model, source = build_model("resnet18", 2, pretrained="hub")
    assert f"download failed: {error}" in source and "trained from scratch" in source
    assert isinstance(model, nn.Module)


def test_a_bug_during_the_hub_download_is_not_taken_for_a_failed_download(monkeypatch):
    _hub_download_raising(monkeypatch, TypeError("create_model() got an unexpected keyword argument"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        build_model("resnet18", 2, pretrained="hub")


def test_scratch_cnn_asked_for_hub_weights_says_it_has_none():
    _, source = build_model("simple_cnn", 2, pretrained="hub")
    assert "simple_cnn has no pretrained weights" in source


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_pick_device_defaults_and_overrides():
    if not torch.backends.mps.is_available():
        assert models.pick_device() == torch.device("cpu")
    assert models.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not available"):
            models.pick_device("cuda")
