"""Self-check after installing: does this installation give the answers the model was shipped with?

The sample scans are scored with Grad-CAM and compared with reference values kept in the model
directory (``selfcheck.json``): each sample's probabilities, and its heat map reduced to a coarse grid.
The weights' sha256 is checked too. A different library version, a broken decoder or swapped weights
shows up here, before a patient's film is read. ``write_reference`` (maintainers, after training or
bundling) records the values this installation gives.

Tolerances: probabilities within PROBABILITY_TOLERANCE (absolute), heat maps within HEATMAP_TOLERANCE
(mean absolute difference on a HEATMAP_GRID × HEATMAP_GRID grid, heat in [0, 1]): wide enough for
another CPU, thread count or BLAS, far too narrow for other weights or preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from xraycore.inference import samples as bundled_samples
from xraycore.common.files import atomic_write_json
from xraycore.common.model_directory import ModelDirectoryError, read_model_json
from xraycore.common.timestamps import utc_timestamp
from xraycore.inference.predictor import Predictor
from xraycore.inference.provenance import software_version, weights_sha256

REFERENCE_FILE = "selfcheck.json"
PROBABILITY_TOLERANCE = 1e-3
HEATMAP_TOLERANCE = 0.05
HEATMAP_GRID = 16
CAM = "gradcam"


class ReferenceMissing(FileNotFoundError):
    """The model directory has no reference values: a maintainer runs ``selfcheck --write-reference``."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.detail}"


def grid(heatmap: np.ndarray, size: int = HEATMAP_GRID) -> np.ndarray:
    """A heat map averaged down to size × size cells: its shape, not its pixels."""
    heat = Image.fromarray(np.asarray(heatmap, dtype=np.float32))
    return np.asarray(heat.resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def score(model_dir: str | Path, samples: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """sample label → probabilities and heat-map grid, as this installation computes them."""
    predictor = Predictor(model_dir)
    found: dict[str, dict[str, Any]] = {}
    for path, prediction in zip(samples, predictor.predict_files(samples, cam=CAM)):
        label = bundled_samples.sample_label(path)
        if not prediction.ok:
            found[label] = {"error": prediction.error}
            continue
        found[label] = {"positive_class": predictor.positive_class,
                        "probabilities": {k: float(v) for k, v in prediction.probabilities.items()},
                        "heatmap": None if prediction.heatmap is None else grid(prediction.heatmap)}
    return found


def write_reference(model_dir: str | Path, samples: Sequence[Path] | None = None) -> Path:
    """Record this installation's answers on the samples as the model's reference (maintainers)."""
    samples = list(samples if samples is not None else bundled_samples.sample_images())
    if not samples:
        raise ValueError("no sample scans to take reference values from (models/samples or $XRAY_SAMPLES_DIR)")
    found = score(model_dir, samples)
    failed = [label for label, values in found.items() if "error" in values]
    if failed:
        raise ValueError(f"these samples could not be read, so no reference was written: {', '.join(failed)}")
    reference = {
        "weights_sha256": weights_sha256(model_dir), "written": utc_timestamp(),
        "software": software_version(), "cam": CAM, "heatmap_grid": HEATMAP_GRID,
        "tolerance": {"probability": PROBABILITY_TOLERANCE, "heatmap_mean_abs": HEATMAP_TOLERANCE},
        "samples": {label: {"positive_class": values["positive_class"],
                            "probabilities": {k: round(v, 6) for k, v in values["probabilities"].items()},
                            "heatmap": None if values["heatmap"] is None else np.round(values["heatmap"], 4).tolist()}
                    for label, values in found.items()},
    }
    path = Path(model_dir) / REFERENCE_FILE
    atomic_write_json(path, reference)
    return path


def load_reference(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / REFERENCE_FILE
    reference = read_model_json(model_dir, REFERENCE_FILE)
    if reference is None:
        raise ReferenceMissing(f"{path} is missing: this model has no reference values to check against "
                               "(a maintainer writes them with `python -m xraycore selfcheck --write-reference`)")
    if not isinstance(reference, dict) or not isinstance(reference.get("samples"), dict):
        raise ModelDirectoryError(path, "is damaged: it lists no samples")
    return reference


def run(model_dir: str | Path, samples_dir: str | Path | None = None) -> list[Check]:
    """Every check, in order: the weights, then each reference sample."""
    reference = load_reference(model_dir)
    checks = []
    sha, expected_sha = weights_sha256(model_dir), str(reference.get("weights_sha256", ""))
    checks.append(Check("weights sha256", sha == expected_sha,
                        f"{sha[:16]}… matches the reference" if sha == expected_sha else
                        f"{sha[:16]}… differs from the reference {expected_sha[:16]}…: these are not the weights the "
                        "reference values were made with"))
    root = Path(samples_dir) if samples_dir else bundled_samples.samples_dir()
    present = {label: root / label for label in reference["samples"] if (root / label).is_file()}
    found = score(model_dir, list(present.values())) if present else {}
    tolerance = reference.get("tolerance", {})
    p_tolerance = float(tolerance.get("probability", PROBABILITY_TOLERANCE))
    h_tolerance = float(tolerance.get("heatmap_mean_abs", HEATMAP_TOLERANCE))
    for label, expected in reference["samples"].items():
        checks.append(_compare(label, expected, found.get(label), p_tolerance, h_tolerance))
    return checks


def _compare(label: str, expected: dict[str, Any], found: dict[str, Any] | None, p_tolerance: float,
             h_tolerance: float) -> Check:
    if found is None:
        return Check(label, False, "the sample scan is missing from this installation")
    if "error" in found:
        return Check(label, False, f"could not be read here: {found['error']}")
    problems, notes = [], []
    reference_p = expected.get("probabilities", {})
    if set(reference_p) != set(found["probabilities"]):
        return Check(label, False, f"the model's classes ({', '.join(found['probabilities'])}) differ from the "
                                   f"reference's ({', '.join(reference_p)})")
    positive = expected.get("positive_class")
    worst = positive if positive in reference_p else max(
        reference_p, key=lambda name: abs(found["probabilities"][name] - reference_p[name]))
    worst = max(reference_p, key=lambda name: (abs(found["probabilities"][name] - reference_p[name]) > p_tolerance,
                                               name == worst))
    difference = abs(found["probabilities"][worst] - reference_p[worst])
    shown = f"P({worst}) {found['probabilities'][worst]:.4f}, reference {reference_p[worst]:.4f} (|Δ| {difference:.4f}"
    (problems if difference > p_tolerance else notes).append(f"{shown} {'>' if difference > p_tolerance else '≤'} "
                                                             f"{p_tolerance:g})")
    if expected.get("heatmap") is not None:
        if found.get("heatmap") is None:
            problems.append("no heat map was computed")
        else:
            heat = float(np.mean(np.abs(found["heatmap"] - np.asarray(expected["heatmap"], dtype=np.float32))))
            (problems if heat > h_tolerance else notes).append(
                f"heat map mean |Δ| {heat:.4f} {'>' if heat > h_tolerance else '≤'} {h_tolerance:g}")
    return Check(label, not problems, "; ".join(problems + notes))


def summary(checks: Sequence[Check]) -> str:
    passed = sum(check.passed for check in checks)
    if passed == len(checks):
        return (f"self-check passed: {passed} of {len(checks)} checks (weights sha256; probabilities within "
                f"±{PROBABILITY_TOLERANCE:g}, heat maps within mean |Δ| {HEATMAP_TOLERANCE:g} on a "
                f"{HEATMAP_GRID}×{HEATMAP_GRID} grid)")
    return (f"self-check FAILED: {len(checks) - passed} of {len(checks)} checks did not match. Do not use this "
            "installation on patients' films until it is explained (wrong weights, other library versions, a "
            "broken image decoder).")
