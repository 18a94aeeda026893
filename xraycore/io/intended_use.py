"""What a model was trained to read (ages, views, body parts, population), kept as ``intended_use.json``.

The file is a fact of the model directory, e.g.::

    {"age_years": [1, 5], "views": ["PA", "AP"], "body_parts": ["CHEST"],
     "population": "pediatric chest X-rays from one hospital (Kermany et al. 2018)"}

The DICOM reader compares each file's own description with it (``xraycore.io.reader.read_xray(intended=...)``)
and keeps only yes/no flags, so a patient's age is never stored or shown; :func:`guard_warnings` turns the
flags into the sentences that lead a prediction. A model directory without the file skips these checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from xraycore.common.files import atomic_write_json
from xraycore.common.model_directory import ModelDirectoryError, read_model_json

INTENDED_USE_FILE = "intended_use.json"
GUARDS = ("non_frontal", "non_chest", "age_outside_range")
"""The flags xraycore.io.reader.read_xray may set in metadata["dicom_guards"] (True: the DICOM says the film is outside)."""


@dataclass(frozen=True)
class IntendedUse:
    """The population a model's training images came from; empty fields are not checked."""

    age_years: tuple[float, float] | None = None  # completed years, both ends included
    views: tuple[str, ...] = ()  # DICOM View Position values, e.g. ("PA", "AP")
    body_parts: tuple[str, ...] = ()  # DICOM Body Part Examined values, e.g. ("CHEST",)
    population: str | None = None  # one line for people

    @classmethod
    def from_json(cls, data: Any) -> IntendedUse:
        """Parse and check the file's content; ValueError says what is wrong (the caller names the file)."""
        if not isinstance(data, dict):
            raise ValueError("is not a JSON object")
        age = data.get("age_years")
        if age is not None and not _is_age_range(age):
            raise ValueError('has an "age_years" that is not [youngest, oldest] in years')
        views, body_parts = _names(data, "views"), _names(data, "body_parts")
        population = data.get("population")
        if population is not None and not isinstance(population, str):
            raise ValueError('has a "population" that is not text')
        return cls(age_years=None if age is None else (float(age[0]), float(age[1])), views=views,
                   body_parts=body_parts, population=population)

    def to_json(self) -> dict[str, Any]:
        return {"age_years": None if self.age_years is None else list(self.age_years), "views": list(self.views),
                "body_parts": list(self.body_parts), "population": self.population}


def _is_age_range(value: Any) -> bool:
    numbers = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return numbers and 0 <= value[0] <= value[1]


def _names(data: dict, key: str) -> tuple[str, ...]:
    values = data.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f'has "{key}" that is not a list of names')
    return tuple(v.strip().upper() for v in values)


def load(model_dir: str | Path) -> IntendedUse | None:
    """The model directory's intended use; None without the file; ModelDirectoryError when it is damaged."""
    path = Path(model_dir) / INTENDED_USE_FILE
    data = read_model_json(model_dir, INTENDED_USE_FILE)
    if data is None:
        return None
    try:
        return IntendedUse.from_json(data)
    except ValueError as error:
        raise ModelDirectoryError(path, str(error)) from None


def save(model_dir: str | Path, intended: IntendedUse) -> None:
    atomic_write_json(Path(model_dir) / INTENDED_USE_FILE, intended.to_json())


def guard_warnings(guards: Mapping[str, bool], intended: IntendedUse) -> list[str]:
    """The sentences that lead an answer when the DICOM says the film is outside the intended population.

    They name the model's range, never the patient's own value.
    """
    warnings = []
    if guards.get("non_frontal") and intended.views:
        warnings.append(f"The DICOM marks this film as a view this model does not read: it was trained on "
                        f"{'/'.join(intended.views)} (frontal) films only, so its answer does not apply.")
    if guards.get("non_chest") and intended.body_parts:
        parts = " or ".join(part.lower() for part in intended.body_parts)
        warnings.append(f"The DICOM says the body part examined is not the {parts}: this model was trained on "
                        f"{parts} films only, so its answer does not apply.")
    if guards.get("age_outside_range") and intended.age_years:
        low, high = intended.age_years
        warnings.append(f"The patient is outside the age range this model was trained on ({low:g}–{high:g} "
                        "years): treat its answer with caution.")
    return warnings


def card_section(intended: IntendedUse) -> list[str]:
    """The model card's 'Intended population' section."""
    lines = ["## Intended population",
             f"From `{INTENDED_USE_FILE}`. The app and the CLI lead their answer with a warning when a DICOM's own "
             "description says otherwise (the patient's age is compared, never shown or stored).", ""]
    if intended.population:
        lines.append(f"- Population: {intended.population}")
    if intended.age_years:
        lines.append(f"- Age: {intended.age_years[0]:g}–{intended.age_years[1]:g} years")
    if intended.views:
        lines.append(f"- Views (DICOM View Position): {', '.join(intended.views)}")
    if intended.body_parts:
        lines.append(f"- Body part (DICOM Body Part Examined): {', '.join(intended.body_parts)}")
    return lines


@dataclass
class SkipNonFrontal:
    """A ``skip`` for Predictor.predict_sources: drops DICOMs that say they are not a frontal view, and
    remembers their names (``predict --skip-non-frontal``; a worklist can reuse it)."""

    skipped: list[str] = field(default_factory=list)

    def __call__(self, name: str, metadata: Mapping[str, Any]) -> bool:
        if metadata.get("dicom_guards", {}).get("non_frontal"):
            self.skipped.append(name)
            return True
        return False
