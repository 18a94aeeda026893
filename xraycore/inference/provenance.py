"""Which model produced a result: name, version and the sha256 of its weights.

Every result that leaves the app (a DICOM SR, a secondary capture, a PDF report) names the exact weights
behind it, so a reader can tell two answers of "the default model" apart after it was retrained, and
``selfcheck`` can prove the weights on disk are the ones the reference values were made with.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from xraycore.runs import directory as runs
from xraycore.inference.model_directory import ENSEMBLE_FILE, ENSEMBLE_MEMBERS_DIR
from xraycore.common.files import plain_name
from xraycore.common.hashing import sha256_of_file
from xraycore.common.model_directory import ModelDirectoryError

@dataclass(frozen=True)
class ModelProvenance:
    """Name, version and weights of a model directory, as results quote them."""

    name: str  # the directory's name and its network, e.g. "default (mobilenetv2_100)"
    version: str  # when it was trained (status.json "ended"), else "weights <first 12 hex of the sha256>"
    weights_sha256: str
    software: str  # "xraycore 0.3.0"

    def lines(self) -> list[str]:
        """The lines a report prints."""
        return [f"Model: {self.name}, version {self.version}", f"Weights sha256: {self.weights_sha256}",
                f"Software: {self.software}"]


def software_version() -> str:
    """The xraycore version, from the installed package or, in a checkout, from pyproject.toml."""
    try:
        return f"xraycore {importlib.metadata.version('xraycore')}"
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        for line in pyproject.read_text(encoding="utf-8").splitlines() if pyproject.is_file() else []:
            if line.startswith("version"):
                return f"xraycore {line.split('=', 1)[1].strip().strip(chr(34))}"
        return "xraycore (version unknown)"


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of model.safetensors; for an ensemble, sha256 over its members' weight hashes in order."""
    path = Path(model_dir)
    ensemble = path / ENSEMBLE_FILE
    if ensemble.is_file():
        members = json.loads(ensemble.read_text(encoding="utf-8")).get("members", [])
        combined = "\n".join(weights_sha256(path / ENSEMBLE_MEMBERS_DIR / plain_name(name, "ensemble member"))
                             for name in members)
        return hashlib.sha256(combined.encode()).hexdigest()
    weights = path / runs.WEIGHTS_FILE
    if not weights.is_file():
        raise ModelDirectoryError(weights, "is missing: the model has no trained weights")
    return sha256_of_file(weights)


def of_model(model_dir: str | Path) -> ModelProvenance:
    """The provenance of a model directory (hashes its weights: call once per model, not per image)."""
    run = runs.Run(Path(model_dir))
    config = run.read_json(runs.CONFIG_FILE, {}) or {}
    status = run.read_json(runs.STATUS_FILE, {}) or {}
    backbone = config.get("backbone") or ("ensemble" if (run.path / ENSEMBLE_FILE).is_file() else "unknown network")
    sha = weights_sha256(run.path)
    ended = str(status.get("ended") or "")  # bundles carry no status.json: their weights name the version
    return ModelProvenance(name=f"{run.path.resolve().name} ({backbone})", version=ended or f"weights {sha[:12]}",
                           weights_sha256=sha, software=software_version())
