"""The studies of ``shared/seeds`` as named recipes, stored as data in ``presets/*.toml``, and how a user's
options become configs.

A preset holds a base config (flat or grouped, see config.flatten), the backbones it compares, per-backbone
overrides and the study's reported numbers. :func:`expand` turns a preset plus the user's options into one
``TrainConfig`` per backbone (a study, which :mod:`studies` plans and trains); ``smoke`` shrinks any of them to
a quick check. :func:`baseline` and :func:`changes` are what a form needs to pass only what the user changed.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Sequence

from xraycore import models
from xraycore.common.timestamps import name_stamp
from xraycore.training.config import TrainConfig, flatten

PRESET_DIR = Path(__file__).parent / "presets"
SMOKE = {"max_per_class": 6, "epochs": 1, "batch_size": 4, "fit_ood": False, "patience": None}
SMOKE_IMAGE_SIZE = 64


def names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.toml"))


def load(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.toml"
    if name not in names():
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(names())}")
    with path.open("rb") as handle:
        preset = tomllib.load(handle)
    preset["config"] = flatten(preset.get("config", {}))
    preset["per_backbone"] = {backbone: flatten(values) for backbone, values in preset.get("per_backbone", {}).items()}
    preset["name"] = name
    return preset


def _shrink(values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """--smoke: few images, tiny sizes, the fewest epochs that still exercise every phase of the recipe.

    Options the user gave explicitly (say --epochs 3) still win over the smoke defaults.
    """
    values = {"backbone": TrainConfig().backbone, **values, **SMOKE}
    size = max(SMOKE_IMAGE_SIZE, models.min_input_size(values["backbone"]))
    full = values.get("image_size") or models.get_spec(values["backbone"]).input_size
    scale = size / full
    values["image_size"] = size
    for key in ("load_size", "eval_size"):
        if values.get(key):
            values[key] = max(size, int(round(values[key] * scale)))
    values["augment"] = [_scale_sizes(spec, scale, size) for spec in values.get("augment", [])]
    if values.get("frozen_epochs"):
        values["frozen_epochs"] = 1
        values["epochs"] = 1 if not values.get("unfreeze", True) else 2
    if values.get("folds"):
        values["max_per_class"] = max(SMOKE["max_per_class"], 2 * values["folds"])
    return {**values, **{key: value for key, value in given.items() if key in SMOKE}}


def _scale_sizes(spec: Any, scale: float, floor: int) -> Any:
    if isinstance(spec, dict) and "size" in spec:
        return {**spec, "size": max(floor // 2, int(round(spec["size"] * scale)))}
    return spec


def expand(given: dict[str, Any], smoke: bool = False) -> list[TrainConfig]:
    """The user's options (+ an optional preset) → one config per backbone; given options win."""
    name = given.get("preset")
    if not name:
        values = {**given}
        return [TrainConfig.from_dict(_shrink(values, given) if smoke else values)]
    preset = load(name)
    backbones = [given["backbone"]] if given.get("backbone") else list(preset["backbones"])
    several = len(backbones) > 1 or preset["config"].get("folds") or given.get("folds")
    study = given.get("study") or (f"{name}-{name_stamp()}" if several else None)
    configs = []
    for backbone in backbones:
        values = {**preset["config"], **preset["per_backbone"].get(backbone, {}), "backbone": backbone,
                  "preset": name, "study": study, **{k: v for k, v in given.items() if k != "backbone"}}
        if smoke:
            values = _shrink(values, given)
        configs.append(TrainConfig.from_dict(values))
    return configs


def override(configs: Sequence[TrainConfig], given: dict[str, Any], smoke: bool = False) -> list[TrainConfig]:
    """Configs read from a file (``train --config``) with the user's options over them, shrunk by ``smoke``."""
    if given.get("preset"):
        raise ValueError("--preset cannot be combined with --config: the file holds the complete settings")
    changed = []
    for config in configs:
        values = {**config.to_flat_dict(), **given}
        changed.append(TrainConfig.from_dict(_shrink(values, given) if smoke else values))
    return changed


def baseline(name: str | None = None) -> dict[str, Any]:
    """Every setting (flat) as a launch of preset ``name``, or of no preset, starts from before any per-backbone
    override: what a form shows until the user changes it."""
    values = TrainConfig().to_flat_dict()
    return {**values, **load(name)["config"]} if name else values


def changes(values: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The settings in ``values`` that differ from :func:`baseline`: what a form passes on as the user's options,
    so a preset's per-backbone overrides still apply wherever the user changed nothing."""
    start = baseline(name)
    return {key: value for key, value in values.items() if key not in start or value != start[key]}
