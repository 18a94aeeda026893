"""The Train page's form as plain data, so the page only lays out widgets and every translation is tested here.

The form offers every TrainConfig setting (see config.settings) except where a run goes and which study or
fold it is (config.PLACEMENT, decided at launch) and the preset (its own selector). Each setting's widget
lives in session state under ``train_<name>``; this module turns setting values into widget values (an
empty box for None, comma-separated class names, augmentation names with their parameters kept aside) and
back, and says what a launch passes on: only what differs from the preset's (or the defaults') baseline, so
a preset's per-backbone overrides still apply wherever the user changed nothing.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from xraycore.training import config
from xraycore.training import jobs
from xraycore.training import presets

PRESET_BACKBONES = "(every backbone of the preset)"
DEFAULT_PRESET = "xray-default"  # the form opens on the bundled model's own recipe, not on bare defaults
WEIGHTS_FILE = "file"  # the "pretrained" choice that means: the local weights file typed beside it
PRETRAINED_CHOICES = (*jobs.PRETRAINED_WORDS, WEIGHTS_FILE)
FORM_STATE = {  # the form's own entries beside the settings'
    "train_preset": "", "train_run_id": "", "train_weights_file": "", "train_smoke": False, "train_processes": 1,
    "train_augment_specs": [],  # the specs behind the augmentation names shown (a preset's parameters)
}


def shown() -> tuple[config.Setting, ...]:
    """The settings the form offers, in group order."""
    return tuple(s for s in config.settings() if s.name not in (*config.PLACEMENT, "preset"))


def key(setting: config.Setting) -> str:
    return f"train_{setting.name}"


def widget_state(values: Mapping[str, Any], augmentations: Sequence[str]) -> dict[str, Any]:
    """Session-state entries showing flat setting ``values`` (defaults for those missing). ``augmentations``
    are the names the augmentation widget offers."""
    state: dict[str, Any] = {}
    for setting in shown():
        value = values.get(setting.name, setting.default)
        if setting.kind == "specs":
            state["train_augment_specs"] = list(value or [])
            value = [name for name in map(jobs.augment_name, value or []) if name in augmentations]
        elif setting.kind == "names":
            value = ", ".join(value or [])
        elif setting.kind == "text":
            value = "" if value is None else str(value)
        elif setting.kind in ("int", "float") and value is not None:
            value = int(value) if setting.kind == "int" else float(value)
        state[key(setting)] = value
    pretrained = state["train_pretrained"]
    state["train_pretrained"] = pretrained if pretrained in jobs.PRETRAINED_WORDS else WEIGHTS_FILE
    state["train_weights_file"] = "" if pretrained in jobs.PRETRAINED_WORDS else pretrained
    return state


def setting_values(state: Mapping[str, Any]) -> dict[str, Any]:
    """Flat setting values from the widgets' state (the inverse of :func:`widget_state`; paths as typed)."""
    values: dict[str, Any] = {}
    for setting in shown():
        value = state[key(setting)]
        if setting.kind == "specs":
            value = jobs.augment_specs(value, state["train_augment_specs"])
        elif setting.kind == "names":
            value = [name.strip() for name in value.split(",") if name.strip()] or None
        elif setting.kind == "text":
            value = value.strip() or (None if setting.optional else "")
        values[setting.name] = value
    if values["pretrained"] == WEIGHTS_FILE:
        values["pretrained"] = state["train_weights_file"].strip()
    if values["backbone"] == PRESET_BACKBONES:
        values["backbone"] = None
    return values


def launch_options(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a launch passes on (see jobs.launch): the preset, the data folder, the backbone (None: every
    backbone of the preset) and every other setting that differs from the preset's or the defaults' baseline."""
    preset = state["train_preset"] or None
    values = setting_values(state)
    if values["backbone"] is None and not preset:
        raise ValueError("Choose a backbone (or a preset whose backbones should all be trained).")
    return {**presets.changes(values, preset), "preset": preset, "data": values["data"], "backbone": values["backbone"]}


def from_preset(name: str, augmentations: Sequence[str]) -> dict[str, Any]:
    """The form's state for preset ``name`` ("": none): its base recipe, the backbone when it has one only; the
    data folder typed so far stays."""
    state = widget_state(presets.baseline(name or None), augmentations)
    del state["train_data"]
    if name:
        backbones = presets.load(name)["backbones"]
        state["train_backbone"] = backbones[0] if len(backbones) == 1 else PRESET_BACKBONES
    return state


def initial_state(augmentations: Sequence[str]) -> dict[str, Any]:
    """The form as a new visitor finds it: the bundled default model's recipe (DEFAULT_PRESET), no data folder."""
    return {**FORM_STATE, **from_preset(DEFAULT_PRESET, augmentations), "train_preset": DEFAULT_PRESET,
            "train_data": ""}


def from_run(train_settings: Mapping[str, Any], augmentations: Sequence[str]) -> dict[str, Any]:
    """The form's state for an earlier run's settings (its config.json "train"), less where it went and which
    study and fold it was: "start again from this run's settings"."""
    values = config.from_record(dict(train_settings)).to_flat_dict()
    return {**FORM_STATE, **widget_state(values, augmentations), "train_preset": values["preset"] or ""}
