"""Patient data in the app: uploads stay in memory, DICOM identifiers never show, big batches stay small.

Also the deployment settings the issue asks for (.streamlit/config.toml).
"""
from __future__ import annotations

import io
import os
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image, PngImagePlugin

from tests.helpers.corpus import PHI, PHI_UIDS, make_corpus
from tests.helpers.synthetic import xray_like
from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures and helpers shared with the app tests

REPO = Path(__file__).resolve().parents[2]
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


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_watching: list[list[tuple[str, str]]] = []  # while a list is in here, every file opened for writing is added


def _note_writes(event: str, args: tuple) -> None:
    """An audit hook (sys.addaudithook: it cannot be removed, so it records only while a test watches)."""
    if not _watching:
        return
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1] if len(args) > 1 else "r", args[2] if len(args) > 2 else 0
        if (isinstance(mode, str) and set(mode) & set("wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS):
            _watching[-1].append((os.fsdecode(args[0]), f"open {mode!r}"))
    elif event == "os.open" and args and isinstance(args[-1], int) and args[-1] & WRITE_FLAGS:
        _watching[-1].append((os.fsdecode(args[0]), "os.open"))


sys.addaudithook(_note_writes)


def _upload_traces(png: bytes, pixels: np.ndarray, dicom: bytes) -> list[bytes]:
    """Byte strings any copy of the uploads would hold: slices of each file and of the decoded pixels (a row
    of raw 8-bit values), and the DICOM's identifiers."""
    import pydicom

    dicom_pixels = pydicom.dcmread(io.BytesIO(dicom)).PixelData
    middle = pixels.shape[0] // 2
    traces = [png[len(png) // 2:len(png) // 2 + 64], dicom[-256:-192], dicom_pixels[1000:1064],
              pixels[middle].tobytes(), pixels[middle + 1, : pixels.shape[1] // 2].tobytes()]
    return traces + [value.encode() for value in [*PHI.values(), *PHI_UIDS.values()]]


def _holds_the_image(path: Path, pixels: np.ndarray) -> bool:
    """A written file that decodes to the upload's picture (re-encoded as PNG or JPEG, say)."""
    try:
        with Image.open(path) as image:
            decoded = np.asarray(image.convert("L").resize(pixels.shape[::-1]), dtype=np.float32)
    except Exception:  # noqa: BLE001 - anything that is not an image is not a picture of the upload
        return False
    return float(np.mean(np.abs(decoded - pixels))) < 8.0


def test_uploaded_scans_are_never_written_to_disk_and_dicom_identifiers_never_shown(app_env, tmp_path):
    """Every file opened for writing while Diagnose takes and scores the uploads (Python's audit events for
    open() and os.open(), whatever library opens it) is read back: none holds the upload's bytes, its pixels, a
    picture of it or the DICOM's identifiers, and none vanished before it could be read."""
    marker = f"upload-marker-{time.time_ns()}"
    corpus = make_corpus(tmp_path / "corpus")
    dicom = corpus["dicom_monochrome2_16bit"].path.read_bytes()
    png = _marked_png(marker)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    at = start_app()  # the app and the model load first
    written: list[tuple[str, str]] = []
    _watching.append(written)
    try:
        at.file_uploader(key="uploads").set_value([("scan.png", png, "image/png"),
                                                    ("study.dcm", dicom, "application/dicom")])
        at.run()
    finally:
        _watching.remove(written)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.metric) == 2  # both scored
    traces = [marker.encode(), *_upload_traces(png, pixels, dicom)]
    holding = []
    for name, how in written:
        path = Path(name)
        if not path.is_file():
            holding.append(f"{name} ({how}): written, then gone before it could be read")
        elif any(trace in path.read_bytes() for trace in traces) or _holds_the_image(path, pixels):
            holding.append(f"{name} ({how})")
    assert holding == [], holding
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
