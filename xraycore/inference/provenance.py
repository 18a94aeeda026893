"""Which model produced a result: name, version and the sha256 of its weights.

Every result that leaves the app (a DICOM SR, a secondary capture, a PDF report) names the exact weights
behind it, so a reader can tell two answers of "the default model" apart after it was retrained, and
``selfcheck`` can prove the weights on disk are the ones the reference values were made with.

Which model it is comes from :func:`xraycore.access.audit.model_info`, the one model identity: the audit
line of a scoring and the SR, PDF and CSV of its results name the same model the same way (the directory's
name, its network, version and weights sha256). It lives with the audit trail because every room writes
audit lines, clinical and training included, and those rooms sit below inference.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from xraycore.access import audit
from xraycore.runs import directory as runs
from xraycore.common.model_directory import ModelDirectoryError

@dataclass(frozen=True)
class ModelProvenance:
    """Name, version and weights of a model directory, as results quote them."""

    name: str  # the directory's name and its network, e.g. "default (mobilenetv2_100)"
    version: str  # its config's version, else when it was trained, else "weights <first 12 hex of the sha256>"
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
    """sha256 of model.safetensors; for an ensemble, sha256 over its members' weight hashes in order
    (:func:`audit.model_info`); ModelDirectoryError when the weights are missing."""
    return of_model(model_dir).weights_sha256


def of_model(model_dir: str | Path) -> ModelProvenance:
    """The provenance of a model directory (hashes its weights once per file version: call once per model)."""
    identity = audit.model_info(model_dir)
    if identity["sha256"] is None:
        raise ModelDirectoryError(Path(model_dir) / runs.WEIGHTS_FILE,
                                       "is missing: the model has no trained weights")
    return ModelProvenance(name=f"{identity['name']} ({identity['network']})", version=identity["version"],
                           weights_sha256=identity["sha256"], software=software_version())
