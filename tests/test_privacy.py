"""Patient data in the app: uploads stay in memory, DICOM identifiers never show, big batches stay small.

Also the deployment settings the issue asks for (.streamlit/config.toml).
"""
from __future__ import annotations

import io
import os
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image, PngImagePlugin

from tests.corpus import PHI, PHI_UIDS, make_corpus
from tests.synthetic import xray_like
from tests.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures and helpers shared with the app tests

REPO = Path(__file__).resolve().parents[1]
RESULTS_KEY = "diagnose_results"


def test_streamlit_config_limits_uploads_and_keeps_defences_on():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert 0 < config["server"]["maxUploadSize"] <= 200  # MB
    assert config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False


def _marked_png(marker: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("marker", marker)
    buffer = io.BytesIO()
    Image.fromarray(xray_like(np.random.default_rng(7), 64, pneumonia=True)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _files_containing(roots: list[Path], needle: bytes, since: float) -> list[Path]:
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime >= since and path.stat().st_size < 50_000_000 and needle in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found


def test_uploaded_scans_are_never_written_to_disk_and_dicom_identifiers_never_shown(app_env, tmp_path):
    marker = f"upload-marker-{time.time_ns()}"
    corpus = make_corpus(tmp_path / "corpus")
    dicom = corpus["dicom_monochrome2_16bit"].path.read_bytes()
    started = time.time() - 1
    at = start_app()
    at.file_uploader(key="uploads").set_value([("scan.png", _marked_png(marker), "image/png"),
                                                ("study.dcm", dicom, "application/dicom")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.metric) == 2  # both scored
    roots = [Path(tempfile.gettempdir()), Path.cwd(), app_env]
    assert _files_containing(roots, marker.encode(), started) == []
    shown = " ".join(str(element.value) for kind in ("markdown", "caption", "metric", "error", "warning", "info")
                     for element in getattr(at, kind))
    shown += " ".join(map(str, at.dataframe[0].value.to_dict("list").values()))
    for value in [*PHI.values(), *PHI_UIDS.values(), "Janet", "Doe"]:
        assert value not in shown


def test_fifty_images_are_scored_with_progress_and_kept_small(app_env, monkeypatch):
    fractions: list[float] = []
    real_progress = st.progress

    def recording(value, *args, **kwargs):
        fractions.append(float(value))
        return real_progress(value, *args, **kwargs)

    monkeypatch.setattr(st, "progress", recording)
    rng = np.random.default_rng(0)
    big = [xray_like(rng, 1024, pneumonia=i % 2 == 0) for i in range(2)]
    files = []
    for i in range(50):
        buffer = io.BytesIO()
        Image.fromarray(big[i % 2]).save(buffer, format="JPEG", quality=80)
        files.append((f"x{i:02d}.jpg", buffer.getvalue(), "image/jpeg"))
    at = start_app()
    at.file_uploader(key="uploads").set_value(files)
    at.run(timeout=300)
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value  # triage order: most probable first
    assert sorted(table["file"].tolist()) == [name for name, _, _ in files]
    probabilities = table["P(PNEUMONIA)"].tolist()
    assert probabilities == sorted(probabilities, reverse=True)
    assert fractions and fractions[0] == 0.0  # a progress bar was shown from the start
    kept = list(at.session_state[RESULTS_KEY]["results"].values())
    arrays = [a for r in kept for a in (r.image, r.heatmap) if a is not None]
    assert len(kept) == 50 and arrays and all(max(a.shape[:2]) <= 512 for a in arrays)
    assert sum(a.nbytes for a in arrays) < 50 * 2 * 512 * 512 * 2  # bounded: no full-size copies kept
