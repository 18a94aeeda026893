"""The images a run learns from: class folders → patient-grouped split (or fold) → one decoded cache, plus the
``--watch-data`` images scored every epoch.

Kept out of the loop because it is the one part of training that touches the dataset on disk (and the one a
benchmark or a test calls on its own); it knows nothing of networks or devices.
"""
from __future__ import annotations

from pathlib import Path

from xraycore import data as xdata
from xraycore.training.config import TrainConfig
from xraycore.training.session import Progress, Splits, silent


def prepare_data(config: TrainConfig, progress: Progress = silent) -> Splits:
    """Folders → patient-grouped split (or fold) → one decoded cache for every image used."""
    pattern = config.patient_pattern or xdata.DEFAULT_PATIENT_PATTERN
    found, class_names = xdata.discover_splits(config.data, config.class_names, pattern=pattern)
    if not class_names or not any(found.values()):
        raise ValueError(f"no images in class folders under {config.data}")
    pool = found.get("train") or found.get("all") or []
    test = found.get("test", [])
    if config.max_per_class:
        pool = xdata.subsample(pool, config.max_per_class, seed=config.seed)
        test = xdata.subsample(test, config.max_per_class, seed=config.seed) if test else []

    use_folder_val = config.split == "folder" or (
        config.split == "auto" and len(found.get("val", [])) >= 50 and not config.folds
    )
    if config.folds:
        fold = config.fold or 0
        train, val = xdata.kfold_splits(pool, config.folds, seed=config.split_seed_or_seed)[fold]
        description = f"fold {fold + 1} of {config.folds} (stratified, grouped by patient)"
    elif use_folder_val:
        train, val = pool, found["val"]
        description = "train/val folders as given"
    else:
        train, val = xdata.split_by_ratio(pool, config.val_fraction, seed=config.split_seed_or_seed)
        description = f"{config.val_fraction:.0%} validation, stratified and grouped by patient"

    everything = list(dict.fromkeys(train + val + test))  # a sample may not be decoded twice
    cache_dir = Path(config.cache_dir) if config.cache_dir else None
    size = config.load_size or config.image_size
    cache = xdata.ImageCache(
        everything, size, cache_dir=cache_dir, intensity=config.intensity, margin=config.crop_margin,
        progress=lambda done, total: progress({"kind": "cache", "done": done, "total": total}),
    )
    train_idx = cache.indices_of(train)
    if config.grow_minority:
        grown = xdata.grow_minority([cache.samples[i] for i in train_idx], config.grow_minority, seed=config.seed)
        train_idx = cache.indices_of(grown)
    watch, watch_labels = _watch_set(config, class_names, size)
    return Splits(cache, class_names, train_idx, cache.indices_of(val), cache.indices_of(test), description,
                  watch, watch_labels)


def _watch_set(config: TrainConfig, class_names: list[str], size: int) -> tuple[xdata.ImageCache | None, list[int] | None]:
    """The --watch-data images decoded like the training images, labelled in the run's class order."""
    if not config.watch_data:
        return None, None
    samples, folder_classes = xdata.scan_class_folders(config.watch_data)
    unknown = sorted(set(folder_classes) - set(class_names))
    if not samples or unknown:
        raise ValueError(f"--watch-data needs class folders named like the training classes ({', '.join(class_names)})"
                         + (f"; it has {', '.join(unknown)}" if unknown else ""))
    cache = xdata.ImageCache(samples, size, intensity=config.intensity, margin=config.crop_margin)
    kept = {s.path: s for s in cache.samples}
    return cache, [class_names.index(folder_classes[kept[s.path].label]) for s in cache.samples]
