"""Beside every heat map, Diagnose and the PDF report say how much of it lies on the lung fields; when most lies
outside, one plain sentence says to check for markers or devices; when no lung fields are found, they say so.
The optional lung outline is off by default. (Issue 33; AppTest, no browser.)"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers.synthetic import xray_like
from xraycore.app import catalog
from xraycore.evaluation.shortcuts import band_mask
from xraycore.explain.lung_attention import EMPTY_SENTENCE, OUTSIDE_SENTENCE, lung_attention
from xraycore.inference import provenance
from xraycore.inference.display import DisplayResult
from xraycore.reading_room import pdf_report

APP = str(Path(__file__).resolve().parents[2] / "app.py")
ON_LUNGS = "of the heat map lies on the lung fields"


@pytest.fixture
def diagnose_env(tiny_run, tmp_path, monkeypatch) -> Path:
    model = tmp_path / "runs" / "run-a"
    shutil.copytree(tiny_run, model)
    samples = tmp_path / "samples"
    for class_name, pixels in (("PNEUMONIA", xray_like(np.random.default_rng(1), 96, True)),
                               ("NORMAL", np.tile(np.linspace(30, 220, 96), (96, 1)).astype(np.uint8))):  # no lungs
        (samples / class_name).mkdir(parents=True)
        Image.fromarray(pixels).save(samples / class_name / "one.png")
    monkeypatch.setenv("XRAY_RUNS_DIR", str(model.parent))
    monkeypatch.setenv("XRAY_MODEL_DIR", str(model))
    monkeypatch.setenv("XRAY_SAMPLES_DIR", str(samples))
    return model


def band_heat(result: DisplayResult) -> DisplayResult:
    """The result with a heat map on the film's border only: a marker shortcut."""
    result.heatmap = band_mask(result.heatmap.shape).astype(np.float16)
    return result


def open_diagnose(sample: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.multiselect(key="samples").set_value([sample]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_diagnose_says_the_share_on_the_lungs_beside_the_heat_map(diagnose_env):
    at = open_diagnose("PNEUMONIA/one.png")
    said = [caption.value for caption in at.caption if ON_LUNGS in caption.value]
    assert len(said) == 1 and said[0][0].isdigit()  # "NN% of the heat map lies on the lung fields ..."
    assert at.sidebar.checkbox(key="lung_outline").value is False  # the outline is optional, off by default
    at.sidebar.checkbox(key="lung_outline").check().run()
    assert not at.exception and any(ON_LUNGS in caption.value for caption in at.caption)


def test_diagnose_warns_when_most_of_the_heat_map_is_outside_the_lungs(diagnose_env, monkeypatch):
    real_display = catalog.for_display
    monkeypatch.setattr(catalog, "for_display", lambda *args, **kwargs: band_heat(real_display(*args, **kwargs)))
    at = open_diagnose("PNEUMONIA/one.png")
    assert OUTSIDE_SENTENCE in [warning.value for warning in at.warning]
    assert any(caption.value.startswith("0% " + ON_LUNGS) for caption in at.caption)


def empty_heat(result: DisplayResult) -> DisplayResult:
    """The result with an all-zero heat map: nothing pushes the model towards the finding."""
    result.heatmap = np.zeros_like(result.heatmap)
    return result


def test_an_empty_heat_map_is_said_once(diagnose_env, monkeypatch):
    real_display = catalog.for_display
    monkeypatch.setattr(catalog, "for_display", lambda *args, **kwargs: empty_heat(real_display(*args, **kwargs)))
    at = open_diagnose("PNEUMONIA/one.png")
    said = [caption.value for caption in at.caption if "heat map is empty" in caption.value or "heat map is flat"
            in caption.value]
    assert said == [EMPTY_SENTENCE]


def test_diagnose_says_when_no_lung_fields_were_found(diagnose_env):
    at = open_diagnose("NORMAL/one.png")
    assert any(caption.value.startswith("No lung fields were found on this film") for caption in at.caption)
    assert OUTSIDE_SENTENCE not in [warning.value for warning in at.warning]


def test_the_pdf_report_says_the_same_words(tmp_path):
    image = xray_like(np.random.default_rng(4), 128, False)
    outside = DisplayResult(name="a", class_names=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA",
                            probabilities={"NORMAL": 0.3, "PNEUMONIA": 0.7}, positive_probability=0.7, image=image,
                            heatmap=band_mask((64, 64)).astype(np.float16))
    attention = lung_attention(image, outside.heatmap)
    assert attention.share == pytest.approx(0.0) and attention.mostly_outside
    model = provenance.ModelProvenance("m", "v", "0" * 64, "xraycore 0")
    document = pdfium.PdfDocument(pdf_report.build([outside], threshold=0.5, operating_point=None, model=model))
    text = " ".join(document[0].get_textpage().get_text_range().split())
    document.close()
    assert "0% " + ON_LUNGS in text and OUTSIDE_SENTENCE in text
