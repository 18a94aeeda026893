"""How long a planned run will take here, from the speed finished runs measured on this machine.

Every epoch row of ``metrics.jsonl`` records ``images_per_second`` (training images per second of the
epoch's training pass). A plan for a backbone at some image size is estimated from the runs of that
backbone on this host, scaled by pixels (cost grows with the pixel count); without any, the estimate
says "no measurement yet" rather than guessing. The same arithmetic gives a running run its time left.
Pure functions, except :func:`measurements` and :func:`count_images`, which read the disk.
"""
from __future__ import annotations

import math
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from xraycore import models
from xraycore.runs import directory as runs
from xraycore.data import folders
from xraycore.training.config import TrainConfig

# Validation and the final scoring only run forward passes: about a third of a training step's cost per image.
FORWARD_SHARE = 1 / 3
OOD_TRAIN_IMAGES = 3000  # the most training images the out-of-domain fit scores (training.validation.finish)
NO_MEASUREMENT = "no measurement yet"


@dataclass(frozen=True)
class Measurement:
    """The median training speed of one run: images per second at its training image size."""

    run_id: str
    backbone: str
    image_size: int
    images_per_second: float
    frozen: bool = False  # measured with the backbone frozen (only the head trains: much faster)

    def at(self, image_size: int) -> float:
        """Images per second at another size, scaled by the pixel count."""
        return self.images_per_second * (self.image_size / max(1, image_size)) ** 2


def measurement_of(run_id: str, config: dict[str, Any], rows: Sequence[dict[str, Any]]) -> Measurement | None:
    """A run's speed from its config.json and metrics.jsonl rows; None without a usable row."""
    speeds = [float(row["images_per_second"]) for row in rows
              if isinstance(row.get("images_per_second"), (int, float)) and row["images_per_second"] > 0]
    size = config.get("train_image_size") or config.get("image_size")
    if not speeds or not size or not config.get("backbone"):
        return None
    frozen = all(row.get("frozen_backbone") for row in rows)
    return Measurement(run_id, str(config["backbone"]), int(size), statistics.median(speeds), frozen)


def measurements(root: Path | None = None, host: str | None = None) -> list[Measurement]:
    """Every run under ``root`` trained on ``host`` (default: this machine) that logged an epoch, newest first."""
    host = host or platform.node()
    found = []
    for run in runs.list_runs(root):
        config = run.config
        if (config.get("environment") or {}).get("host") != host:
            continue
        measured = measurement_of(run.id, config, run.metrics())
        if measured is not None:
            found.append(measured)
    return found


def best_measurement(known: Sequence[Measurement], backbone: str, image_size: int,
                     frozen: bool = False) -> Measurement | None:
    """The measurement of ``backbone`` closest in image size (same frozen phase preferred; ties: the first,
    i.e. the newest), or None."""
    candidates = [m for m in known if m.backbone == backbone]
    if not candidates:
        return None
    return min(candidates, key=lambda m: (m.frozen != frozen, abs(math.log(m.image_size / max(1, image_size)))))


@dataclass(frozen=True)
class ImageCounts:
    """Images per class in a data folder: its train (or only) pool, its val/ and test/ folders."""

    pool: dict[str, int]
    val: dict[str, int]
    test: dict[str, int]


def count_images(folder: str | Path) -> ImageCounts:
    """Count images the way training finds them (split folders, then class folders), without decoding or
    hashing anything: cheap enough for every redraw of a form."""
    root = Path(folder)
    splits = {folders.SPLIT_FOLDER_NAMES[p.name.lower()]: p for p in sorted(root.iterdir())
              if p.is_dir() and p.name.lower() in folders.SPLIT_FOLDER_NAMES}

    def per_class(where: Path | None) -> dict[str, int]:
        if where is None:
            return {}
        return {c.name: len(folders.list_images(c)) for c in sorted(where.iterdir()) if c.is_dir()}

    if not splits:
        return ImageCounts(per_class(root), {}, {})
    return ImageCounts(per_class(splits.get("train")), per_class(splits.get("val")), per_class(splits.get("test")))


def planned_images(config: TrainConfig, counts: ImageCounts) -> tuple[int, int, int]:
    """(training, validation, test) images one run of ``config`` will use (as run_data.prepare_data splits)."""
    cap = config.max_per_class

    def total(per_class: dict[str, int]) -> int:
        return sum(min(n, cap) if cap else n for n in per_class.values())

    pool, test, val_folder = total(counts.pool), total(counts.test), sum(counts.val.values())
    if config.folds:
        return pool - pool // config.folds, pool // config.folds, test
    if config.split == "folder" or (config.split == "auto" and val_folder >= 50):
        return pool, val_folder, test
    val = int(round(pool * config.val_fraction))
    return pool - val, val, test


def run_seconds(train_images: int, val_images: int, test_images: int, epochs: int, images_per_second: float,
                fit_ood: bool = True, outlier_images: int = 0) -> float:
    """One run, end to end: every epoch's training and validation, then the final scoring of validation,
    test and (for the out-of-domain fit) up to 3000 training images, and with ``outlier_images`` (--ood-outliers)
    the outlier exposure's scoring of them and of training images, each also after every kind of processing."""
    forward = images_per_second / FORWARD_SHARE
    per_epoch = train_images / images_per_second + val_images / forward
    final = (val_images + test_images + (min(train_images, OOD_TRAIN_IMAGES) if fit_ood else 0)) / forward
    if fit_ood and outlier_images:
        from xraycore.training.outlier_exposure import PROCESSING, SCORED_TRAINING_IMAGES, PROCESSED_SHARE

        passes = 1 + PROCESSED_SHARE * len(PROCESSING)
        final += ((min(train_images, SCORED_TRAINING_IMAGES) + outlier_images) * passes + val_images) / forward
    return epochs * per_epoch + final


def seconds_left(step: int, steps: int, elapsed: float, images_seen: int, epoch: int, epochs: int,
                 val_images: int, epoch_seconds: float | None = None) -> float | None:
    """Time left of a running run after ``step`` of ``steps`` batches (``images_seen`` images in ``elapsed``
    seconds) of epoch ``epoch`` (0-based): this epoch's remaining batches and its validation, then the
    remaining epochs at the last whole epoch's duration (``epoch_seconds``), else at this epoch's pace.
    None before the first batch (no pace yet). Early stopping can only make it shorter."""
    if step <= 0 or elapsed <= 0 or images_seen <= 0:
        return None
    per_batch = elapsed / step
    validation = val_images * FORWARD_SHARE * elapsed / images_seen
    this_epoch = (steps - step) * per_batch + validation
    whole_epoch = epoch_seconds if epoch_seconds else steps * per_batch + validation
    return max(0.0, this_epoch + (epochs - epoch - 1) * whole_epoch)


def format_duration(seconds: float | None) -> str:
    """'about 40 s', 'about 12 min', 'about 3 h 10 min': rounded as an estimate deserves."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds < 60:
        return f"about {round(seconds / 5) * 5 if seconds >= 5 else max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours >= 10:
        return f"about {round(minutes / 60)} h"
    return f"about {hours} h {rest} min" if rest else f"about {hours} h"


def plan_rows(configs: Sequence[TrainConfig], counts: ImageCounts | None, known: Sequence[Measurement],
              weights: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per planned run (a backbone, or a fold of it): size, epochs, images, the measured speed it is
    scaled from and the estimated duration; ``weights`` (backbone -> what it starts from) adds a column.
    Without an image size, the backbone's own is used, as training does."""
    rows = []
    for config in configs:
        size, measured = _size_and_measurement(config, known)
        row: dict[str, Any] = {"backbone": config.backbone}
        if _runs_of(config) > 1:
            row["runs"] = f"{config.folds} folds"
        row.update({"image size": size, "epochs": config.epochs})
        if weights is not None:
            row["weights"] = weights.get(config.backbone, "")
        duration = None
        if counts is not None:
            train_images, val_images, test_images = planned_images(config, counts)
            row["training images"] = train_images
            if measured is not None:
                duration = run_seconds(train_images, val_images, test_images, config.epochs, measured.at(size),
                                       config.fit_ood, _outlier_images(config))
                duration *= _runs_of(config)
        row["measured speed"] = (f"{measured.at(size):.1f} images/s (from run {measured.run_id} at "
                                 f"{measured.image_size} px)" if measured is not None else NO_MEASUREMENT)
        row["estimated time"] = (format_duration(duration) if duration is not None
                                 else NO_MEASUREMENT if measured is None else "choose a data folder")
        rows.append(row)
    return rows


def total_seconds(configs: Sequence[TrainConfig], counts: ImageCounts, known: Sequence[Measurement]) -> float | None:
    """The whole plan's duration, or None when any of its runs has no measurement."""
    total = 0.0
    for config in configs:
        size, measured = _size_and_measurement(config, known)
        if measured is None:
            return None
        train_images, val_images, test_images = planned_images(config, counts)
        total += run_seconds(train_images, val_images, test_images, config.epochs, measured.at(size),
                             config.fit_ood, _outlier_images(config)) * _runs_of(config)
    return total


def _outlier_images(config: TrainConfig) -> int:
    """How many films --ood-outliers names (0 when none, or the folder cannot be read)."""
    if not config.ood_outliers:
        return 0
    from xraycore.training.outlier_exposure import images_in

    try:
        return len(images_in(config.ood_outliers))
    except (ValueError, OSError):
        return 0


def _runs_of(config: TrainConfig) -> int:
    """A k-fold config without a chosen fold trains k runs."""
    return config.folds if config.folds and config.fold is None else 1


def _size_and_measurement(config: TrainConfig, known: Sequence[Measurement]) -> tuple[int, Measurement | None]:
    size = int(config.image_size or models.get_spec(config.backbone).input_size)
    frozen = config.frozen_epochs >= config.epochs or (config.frozen_epochs > 0 and not config.unfreeze)
    return size, best_measurement(known, config.backbone, size, frozen=frozen)
