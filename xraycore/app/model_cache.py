"""The model every page answers with, loaded once per server: its Predictor and its provenance.

Diagnose and Worklist score with the same model the sidebar picks; loading it (and hashing its weights for
the provenance every report and DICOM result quotes) takes seconds, so both pages ask here and share one
Streamlit resource cache instead of each keeping its own copy. The cache keys say when a cached value is
stale: a saved operating point makes a new Predictor, retrained weights a new provenance.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from xraycore.app import catalog
from xraycore.inference import provenance
from xraycore.inference.backends.choice import AUTO
from xraycore.inference.model_directory import ENSEMBLE_MEMBERS_DIR
from xraycore.inference.predictor import Predictor
from xraycore.runs import directory as runs


def load_predictor(model_path: Path, engine: str = AUTO) -> Predictor:
    """The Predictor of ``model_path`` on ``engine`` (automatic by default), as of its saved operating point."""
    return _predictor(str(model_path), catalog.model_version(model_path), engine)


def model_provenance(model_path: Path) -> provenance.ModelProvenance:
    """Name, version and weights sha256 (hashed once per weights file): quoted by every report and DICOM result."""
    return _provenance(str(model_path), weights_version(model_path))


def weights_version(model_path: Path) -> float:
    """Changes whenever the weights change: the model's own file, or an ensemble's members'."""
    path = Path(model_path)
    files = [path / runs.WEIGHTS_FILE, *sorted(path.glob(f"{ENSEMBLE_MEMBERS_DIR}/*/{runs.WEIGHTS_FILE}"))]
    return sum(file.stat().st_mtime for file in files if file.is_file())


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def _predictor(model_path: str, version: float, engine: str) -> Predictor:
    """One Predictor per model, operating-point version (a saved threshold makes a new one) and backend asked for."""
    return Predictor(model_path, backend=engine)


@st.cache_resource(max_entries=4, show_spinner=False)
def _provenance(model_path: str, version: float) -> provenance.ModelProvenance:
    return provenance.of_model(model_path)
