"""What the app offers and how it keeps results: models to choose, sample images, compact results.

The pages stay thin by asking this module: which models a person is offered (the bundled default, then the runs
that finished or were stopped with their best checkpoint kept; for a reader only those released for reading, see
:mod:`releases`), which answers by default, which sample scans ship with
the app, and how a :class:`predict.Prediction` shrinks into a :class:`DisplayResult` small enough
to keep in a browser session (images at most 512 px, no full-resolution copy, no file metadata).
No Streamlit here.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.metrics.decision import is_positive
from xraycore.clinical import releases
from xraycore.runs import directory as runs
from xraycore.clinical import triage
from xraycore.inference.backends.choice import installed
from xraycore.data.folders import IMAGE_SUFFIXES
from xraycore.evaluation.external import EVALUATIONS_DIR
from xraycore.inference.model_directory import ENSEMBLE_FILE
from xraycore.inference.prediction import OUT_OF_DOMAIN_WARNING, Prediction
from xraycore.clinical.releases import BUNDLED_MODEL_DIR, MODEL_DIR_ENV, bundled_model_dir  # noqa: F401 - the pages ask here
from xraycore.clinical.triage import UNRELIABLE_NOTE, flag, triage_key, triage_score  # noqa: F401 - one triage, asked for here

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR_ENV = "XRAY_SAMPLES_DIR"
BUNDLED_SAMPLES_DIR = REPO_ROOT / "models" / "samples"
SAMPLE_CLASSES = ("NORMAL", "PNEUMONIA")
DISPLAY_MAX_SIDE = 512  # what a session keeps per image: enough for the screen, bounded for 50 scans


# --------------------------------------------------------------------------- install

# What training, comparing runs and choosing operating points need beyond a serving install (`.[serve]`).
FULL_INSTALL_MODULES = ("torch", "timm", "pytorch_grad_cam", "sklearn", "scipy", "plotly")
FULL_INSTALL_NOTE = ("This is a reading-room install (Diagnose only): {what} needs the full install, with "
                     "{missing}. Install it with `pip install -r requirements.txt` (or `pip install '.[full]'`).")


def full_install_missing() -> list[str]:
    """The full install's modules that cannot be imported here (empty in a full install); none is imported."""
    return [module for module in FULL_INSTALL_MODULES if not installed(module)]


def full_install_note(what: str) -> str | None:
    """The sentence a page shows instead of itself in a serving install, or None when everything is there."""
    missing = full_install_missing()
    return FULL_INSTALL_NOTE.format(what=what, missing=", ".join(missing)) if missing else None


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker: what people read, and the directory it loads."""

    label: str
    path: Path
    released: bool = True  # False: offered to researchers as a research preview only


def is_model_dir(path: Path) -> bool:
    """A directory a Predictor can load: a config and trained weights (or an ensemble of such directories)."""
    weights = (path / runs.WEIGHTS_FILE).is_file() or (path / ENSEMBLE_FILE).is_file()
    return (path / runs.CONFIG_FILE).is_file() and weights


USABLE_STATES = ("finished", "stopped")  # a stopped run keeps its best checkpoint and is scored like a finished one


def usable_runs(root: Path | None = None) -> list[runs.Run]:
    """Runs that finished, or were stopped with their best checkpoint kept, newest first: the one list Diagnose
    and Compare both offer (the ones worth predicting with, comparing or tuning)."""
    return [run for run in runs.list_runs(root)
            if run.status().get("state") in USABLE_STATES and (run.path / runs.WEIGHTS_FILE).is_file()]


def model_choices(root: Path | None = None, identity: access.Identity | None = None) -> list[ModelChoice]:
    """The bundled model first (when present), then every usable run, newest first. For ``identity`` (the app):
    only what it may score with, i.e. for a reader only the released models (:func:`releases.offered`)."""
    choices = []
    bundled = bundled_model_dir()
    if is_model_dir(bundled):
        choices.append(ModelChoice(f"default model ({bundled.name})", bundled.resolve()))
    for run in usable_runs(root):
        path = run.path.resolve()
        if path in {choice.path for choice in choices} or not releases.offered(path, identity, root):
            continue
        released = releases.is_released(path, root)
        stopped = " · stopped" if run.status().get("state") == "stopped" else ""
        choices.append(ModelChoice(f"run {run.id}{stopped}{'' if released else ' · not released'}", path, released))
    return choices


def default_model_dir(root: Path | None = None, identity: access.Identity | None = None) -> Path | None:
    """The model the app opens on; None when ``identity`` is offered none."""
    choices = model_choices(root, identity)
    return choices[0].path if choices else None


def chosen_model_dir(selected: str | None, identity: access.Identity | None = None) -> Path | None:
    """The model a page works with: the one picked in the sidebar, else :func:`default_model_dir`. Whether
    ``identity`` may score with it is :func:`releases.require_released`'s to say."""
    return Path(selected) if selected else default_model_dir(identity=identity)


def typed_model_dir(text: str) -> Path:
    """A model directory a user typed: under the allowed roots (real path, symlinks followed; else the one
    plain refusal, :class:`access.AccessDenied`) and loadable (ValueError otherwise)."""
    path = access.inside_roots(text, "model directory")
    if not path.is_dir() or not is_model_dir(path):
        raise ValueError(f"{str(text).strip()!r} is not a model directory (config.json and weights).")
    return path


def model_version(path: Path) -> float:
    """Changes whenever the model's operating point is saved: part of the Predictor cache key, so a
    threshold chosen on the Operating point page is used by Diagnose from then on."""
    files = [Path(path) / name for name in (runs.OPERATING_POINT_FILE, operating.POINTS_FILE)]
    files += sorted((Path(path) / EVALUATIONS_DIR).glob("*.json"))
    return sum(file.stat().st_mtime for file in files if file.exists())


def results_version(run_dir: Path, split: str = "val") -> float:
    """Changes whenever a run's ``split`` predictions or its operating point are rewritten: the
    cache key for numbers computed from them."""
    prediction_file = Path(run_dir) / f"{split}_predictions.csv"
    return (prediction_file.stat().st_mtime if prediction_file.exists() else 0.0) + model_version(run_dir)


# --------------------------------------------------------------------------- samples


def samples_dir() -> Path:
    """``$XRAY_SAMPLES_DIR`` if set, else the sample scans bundled next to the package."""
    from_env = os.environ.get(SAMPLES_DIR_ENV)
    return Path(from_env) if from_env else BUNDLED_SAMPLES_DIR


def sample_images() -> list[Path]:
    """Bundled example scans under ``<samples>/{NORMAL,PNEUMONIA}/``; empty if none ship."""
    root = samples_dir()
    return [path for class_name in SAMPLE_CLASSES if (root / class_name).is_dir()
            for path in sorted((root / class_name).iterdir())
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]


def sample_label(path: Path) -> str:
    """``PNEUMONIA/person3_virus_1.jpeg``: the class folder tells what the scan shows."""
    return f"{path.parent.name}/{path.name}"


# --------------------------------------------------------------------------- results


def downscale(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """A grey float [0, 1] (or uint8) image as uint8, its long side at most ``max_side``."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.uint8(np.round(255 * np.clip(pixels.astype(np.float32), 0.0, 1.0)))
    picture = Image.fromarray(pixels)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


@dataclass
class DisplayResult:
    """One scored image as a session keeps it: the answer, the warnings and small pictures only."""

    name: str
    class_names: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    positive_class: str | None = None
    positive_probability: float | None = None
    guards: list[str] = field(default_factory=list)  # outside the intended population: shown before the answer
    warnings: list[str] = field(default_factory=list)
    out_of_domain: bool | None = None
    not_assessed: str | None = None  # why there is no call (not a chest X-ray): see triage
    image: np.ndarray | None = None  # uint8 grey, <= DISPLAY_MAX_SIDE
    heatmap: np.ndarray | None = None  # float16 [0, 1], <= DISPLAY_MAX_SIDE
    cam_method: str | None = None  # what made the heat map (explain.METHOD_LABELS says it in words)
    backend: str | None = None  # which inference backend answered
    error: str | None = None
    is_dicom: bool = False  # results can be filed back into its study (dicom_out)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def normal_class(self) -> str | None:
        """The multi-class label set's 'normal' class (NORMAL / Normal), if it has one."""
        if len(self.class_names) <= 2:
            return None
        return next((name for name in self.class_names if name.strip().lower() == "normal"), None)

    @property
    def not_normal_probability(self) -> float | None:
        """Multi-class models with a normal class (Kermany NORMAL/BACTERIAL/VIRAL, COVID-QU's four):
        the probability of any finding, the number a reader asks first."""
        normal = self.normal_class
        return None if normal is None or not self.ok else 1.0 - self.probabilities[normal]

    def call(self, threshold: float | None) -> str | None:
        """The class called at ``threshold``: positive when its probability reaches it (binary
        models); the most probable class for multi-class models (no threshold applies). None: failed, or not
        assessed (:func:`triage.call_text` says which in words)."""
        if not self.ok or self.not_assessed:
            return None
        if self.positive_class is None or threshold is None or self.positive_probability is None:
            return max(self.probabilities, key=self.probabilities.get)
        if is_positive(self.positive_probability, threshold):
            return self.positive_class
        return next(name for name in self.class_names if name != self.positive_class)


def for_display(prediction: Prediction, max_side: int = DISPLAY_MAX_SIDE) -> DisplayResult:
    """Shrink a Prediction: drop the full-resolution image, the ready-made overlay and the metadata."""
    if not prediction.ok:
        return DisplayResult(name=prediction.name, error=prediction.error)
    return DisplayResult(
        name=prediction.name, class_names=list(prediction.probabilities),
        probabilities=dict(prediction.probabilities), positive_class=prediction.positive_class,
        positive_probability=prediction.positive_probability, guards=list(prediction.guards),
        warnings=list(prediction.warnings),
        out_of_domain=prediction.out_of_domain, not_assessed=prediction.not_assessed, is_dicom=prediction.metadata.get("format") == "dicom",
        image=None if prediction.image is None else downscale(prediction.image, max_side),
        heatmap=None if prediction.heatmap is None else _downscale_heatmap(prediction.heatmap, max_side),
        cam_method=prediction.cam_method, backend=prediction.backend,
    )


def format_probability(probability: float | None) -> str:
    """A probability as a percentage with at least one significant digit: "< 0.1%", "12.3%", "> 99.9%"."""
    if probability is None:
        return "n/a"
    if probability < 0.0005:  # would print as 0.0%
        return "< 0.1%"
    if probability >= 0.9995:  # would print as 100.0%
        return "> 99.9%"
    return f"{probability:.1%}"


def lead_warnings(result: DisplayResult) -> list[str]:
    """What a detail card says before the answer: the DICOM guards, then the out-of-domain flag."""
    return [*result.guards, *([OUT_OF_DOMAIN_WARNING] if result.out_of_domain else [])]


def other_warnings(result: DisplayResult) -> list[str]:
    """The warnings shown beside the answer: those :func:`lead_warnings` has not already said."""
    return [warning for warning in result.warnings if warning != OUT_OF_DOMAIN_WARNING or not result.out_of_domain]


def probability_label(label: str, result: DisplayResult) -> str:
    """A probability's label, marked as not reliable when the image is out of domain."""
    return f"{label} ({UNRELIABLE_NOTE})" if result.out_of_domain else label


def colour_legend(target: str | None) -> str:
    """The overlay's colour scale in words (the jet colour map of :func:`explain.overlay`)."""
    return f"Colour scale: blue = low, red = high contribution to P({target})"


def _downscale_heatmap(heatmap: np.ndarray, max_side: int) -> np.ndarray:
    """A [0, 1] heat map as float16, its long side at most ``max_side`` (bilinear: it stays smooth)."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if max(heat.shape) > max_side:
        scale = max_side / max(heat.shape)
        size = (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale)))
        heat = np.asarray(Image.fromarray(heat).resize(size, Image.Resampling.BILINEAR))
    return heat.astype(np.float16)


def session_results(stored: dict | None, model: tuple, method: str | None, keys: Iterable[str]) -> dict:
    """What a session keeps: this model's results per heat-map method, for the images still wanted only (another
    model's, or a removed image's, are dropped). ``results`` is ``method``'s, filled in place as images are scored,
    so switching back to a method already seen costs no forward pass."""
    wanted = set(keys)
    kept = stored.get("by_method", {}) if stored and stored.get("model") == model else {}
    by_method = {name: {key: value for key, value in results.items() if key in wanted} for name, results in kept.items()}
    results = by_method.setdefault(method, {})
    return {"model": model, "method": method, "by_method": by_method, "results": results}


def summary_rows(results: Iterable[DisplayResult], threshold: float | None) -> list[dict]:
    """One row per image for the table and its CSV: the name as uploaded, a flag (failed, not assessed, out of
    domain), the call in words (:func:`triage.call_text`: never None), the probability a reader asks first as text
    (:func:`format_probability` of :func:`triage_score`, marked when out of domain), the threshold (4 decimals), the
    probabilities, warnings or the read error. Nothing read from inside the file (no DICOM tags)."""
    rows = []
    for result in results:
        row: dict = {"file": result.name, "flag": flag(result), "call": triage.call_text(result, threshold),
                     "probability": triage.probability_text(result, format_probability(triage_score(result))),
                     "threshold": round(threshold, 4) if result.positive_class and threshold is not None else None}
        assessed = not result.not_assessed  # a film with no call shows no probability either, in any column
        if result.not_normal_probability is not None:
            row[f"P(not {result.normal_class})"] = round(result.not_normal_probability, 4) if assessed else None
        for name in result.class_names:
            row[f"P({name})"] = round(result.probabilities[name], 4) if assessed else None
        row["warnings"] = "; ".join([*result.guards, *result.warnings])
        row["error"] = result.error or ""
        rows.append(row)
    return rows


def summary_csv(results: Sequence[DisplayResult], threshold: float | None, *, model: str, model_version: str,
                operating_point: str | None, date: str) -> str:
    """The summary as CSV: :func:`summary_rows` (numbers, not the text probability) plus out of domain (yes, no,
    blank when failed or not checked), the operating point, the model's name and version and the date (ISO)."""
    rows = []
    for result, row in zip(results, summary_rows(results, threshold)):
        row.pop("probability")
        checked = result.ok and result.out_of_domain is not None
        rows.append({**row, "out_of_domain": ("yes" if result.out_of_domain else "no") if checked else "",
                     "operating_point": operating_point or "", "model": model, "model_version": model_version,
                     "date": date})
    return rows_to_csv(rows)


def rows_to_csv(rows: Sequence[dict]) -> str:
    """CSV text with the union of the rows' columns (multi-class and failed rows differ)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
