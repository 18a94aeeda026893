"""The sample scans shipped with the model: what Diagnose offers to try, and what the self-check scores.

They live in the library, not the app, because ``selfcheck`` (a reading-room install's first check, no
Streamlit) compares the model's answers on exactly these files with its reference values; the app offers
the same files under the same labels.
"""
from __future__ import annotations

import os
from pathlib import Path

from xraycore.data.folders import IMAGE_SUFFIXES

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR_ENV = "XRAY_SAMPLES_DIR"
BUNDLED_SAMPLES_DIR = REPO_ROOT / "models" / "samples"
SAMPLE_CLASSES = ("NORMAL", "PNEUMONIA")


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
