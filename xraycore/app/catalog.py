"""What the app offers and how it keeps results: models to choose, sample images, compact results.

The pages stay thin by asking this module: which models a person is offered (the bundled default, then the runs
that finished or were stopped with their best checkpoint kept; for a reader only those released for reading, see
:mod:`releases`), which answers by default, which sample scans ship with the app
(:mod:`xraycore.inference.samples`), and how a result is kept in a browser session
(:mod:`xraycore.inference.display`: the library's one result shape, re-used here, never defined here).
No Streamlit here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.metrics.decision import is_positive
from xraycore.clinical import releases
from xraycore.runs import directory as runs
from xraycore.inference.backends.choice import installed
from xraycore.evaluation.external import EVALUATIONS_DIR
from xraycore.inference.display import (  # noqa: F401 - the pages ask here; the library's one result shape
    DISPLAY_MAX_SIDE, DisplayResult, downscale, for_display, format_probability, rows_to_csv, summary_csv,
    summary_rows,
)
from xraycore.inference.model_directory import ENSEMBLE_FILE
from xraycore.inference.prediction import OUT_OF_DOMAIN_WARNING
from xraycore.inference.samples import (  # noqa: F401 - the pages ask here; selfcheck uses the same samples
    BUNDLED_SAMPLES_DIR, SAMPLE_CLASSES, SAMPLES_DIR_ENV, sample_images, sample_label, samples_dir,
)
from xraycore.clinical.releases import BUNDLED_MODEL_DIR, MODEL_DIR_ENV, bundled_model_dir  # noqa: F401 - the pages ask here
from xraycore.clinical.triage import UNRELIABLE_NOTE, flag, triage_key, triage_score  # noqa: F401 - one triage, asked for here


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


# --------------------------------------------------------------------------- results


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
    """The overlay's colour scale in words (the jet colour map of :func:`xraycore.explain.cam.overlay`)."""
    return f"Colour scale: blue = low, red = high contribution to P({target})"


def session_results(stored: dict | None, model: tuple, method: str | None, keys: Iterable[str]) -> dict:
    """What a session keeps: this model's results per heat-map method, for the images still wanted only (another
    model's, or a removed image's, are dropped). ``results`` is ``method``'s, filled in place as images are scored,
    so switching back to a method already seen costs no forward pass."""
    wanted = set(keys)
    kept = stored.get("by_method", {}) if stored and stored.get("model") == model else {}
    by_method = {name: {key: value for key, value in results.items() if key in wanted} for name, results in kept.items()}
    results = by_method.setdefault(method, {})
    return {"model": model, "method": method, "by_method": by_method, "results": results}


