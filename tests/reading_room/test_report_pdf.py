"""The printable report (PDF), looked at as a picture: every page renders (pypdfium2) at A4 size, is not blank, shows
the scan and a coloured overlay, and its text carries the probability, call, operating point, model and disclaimer."""
from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from tests.helpers.corpus import _dicom, chest_like
from tests.helpers.synthetic import make_dataset, xray_like
from xraycore.app import catalog
from xraycore.cli import main as cli
from xraycore.io import intended_use
from xraycore.inference import provenance
from xraycore.reading_room import pdf_report as report_pdf
from xraycore.inference.predictor import Predictor

A4_POINTS = (595, 842)  # 210 x 297 mm at 72 dpi: the page size at scale 1


def pages(pdf: bytes) -> list[tuple[Image.Image, str]]:
    """Each page as a picture (72 dpi) and its text."""
    document = pdfium.PdfDocument(pdf)
    try:
        rendered = []
        for page in document:
            text = page.get_textpage().get_text_range()
            rendered.append((page.render(scale=1).to_pil().convert("RGB"), text))
        return rendered
    finally:
        document.close()


def assert_not_blank(picture: Image.Image) -> None:
    grey = np.asarray(picture.convert("L"), dtype=np.float32)
    assert grey.std() > 20 and (grey < 128).mean() > 0.01, "the page is (nearly) blank"


def coloured_share(picture: Image.Image) -> float:
    """Share of strongly coloured pixels: the jet-coloured overlay, never the grey scan or black text."""
    rgb = np.asarray(picture, dtype=np.int16)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 40).mean())


def test_predict_report_renders_a_summary_and_a_page_per_image(tiny_run, tmp_path, capsys):
    rng = np.random.default_rng(2)
    files = []
    for name, pneumonia in (("left.png", True), ("right.png", False)):
        Image.fromarray(xray_like(rng, 256, pneumonia)).save(tmp_path / name)
        files.append(str(tmp_path / name))
    (tmp_path / "notes.png").write_text("not an image")
    report = tmp_path / "report.pdf"
    assert cli.main(["predict", "--model", str(tiny_run), "--report", str(report), *files, str(tmp_path / "notes.png")]) == 0
    assert "wrote the report to" in capsys.readouterr().err

    rendered = pages(report.read_bytes())
    assert len(rendered) == 3  # the summary, then the two readable images (the unreadable one is in the summary)
    for index, (picture, _) in enumerate(rendered):
        assert abs(picture.width - A4_POINTS[0]) <= 1 and abs(picture.height - A4_POINTS[1]) <= 1
        assert_not_blank(picture)
        picture.save(tmp_path / f"page{index}.png")
    summary_text = rendered[0][1]
    assert "3 image(s): 2 scored, 1 failed" in summary_text and "failed" in summary_text
    assert summary_text.index("This is a text file") > summary_text.rindex("%")  # failed files after scored ones
    sha = provenance.weights_sha256(tiny_run)
    for picture, text in rendered[1:]:
        assert "P(PNEUMONIA) = " in text and "Call: " in text and "Operating point: internal" in text
        assert sha in text and "Not for diagnostic use" in text
        assert coloured_share(picture) > 0.02  # the overlay is there, in colour


def test_a_single_dicom_report_leads_with_its_guard(tiny_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    intended_use.save(model, intended_use.IntendedUse(age_years=(1, 5)))
    film = _dicom((chest_like(128, 128, seed=4) * 4095).round().astype(np.uint16), bits_stored=12, PatientAge="040Y")
    predictor = Predictor(model, device="cpu")
    [prediction] = predictor.predict_sources([("adult.dcm", film)], cam="gradcam")
    result = catalog.for_display(prediction)
    pdf = report_pdf.build([result], threshold=0.5, operating_point="site A", model=provenance.of_model(model))
    [(picture, text)] = pages(pdf)
    assert_not_blank(picture)
    assert coloured_share(picture) > 0.01
    assert "Warning: The patient is outside the age range" in text.replace("\r\n", " ").replace("\n", " ")
    assert text.index("Warning: The patient") < text.index("P(PNEUMONIA)")  # the guard before the answer
    assert "threshold 0.500" in text and "site A" in text and "040Y" not in text


@pytest.mark.parametrize("unicode_font", [True, False])
def test_reports_survive_without_a_unicode_font(monkeypatch, unicode_font):
    """Core fonts know Latin-1 only: dashes and arrows are spelt plainly, never a crash."""
    if not unicode_font:
        monkeypatch.setattr(report_pdf, "_font_file", lambda name: None)
    result = catalog.DisplayResult(name="scan–1.png", class_names=["NORMAL", "PNEUMONIA"],
                                   probabilities={"NORMAL": 0.4, "PNEUMONIA": 0.6}, positive_class="PNEUMONIA",
                                   positive_probability=0.6, warnings=["age 1–5 years ≥ limit"],
                                   image=(chest_like(64, 64) * 255).astype(np.uint8))
    model = provenance.ModelProvenance("m", "v", "0" * 64, "xraycore 0")
    pdf = report_pdf.build([result, result], threshold=0.5, operating_point=None, model=model)
    rendered = pages(pdf)
    assert len(rendered) == 3 and all(abs(p.width - A4_POINTS[0]) <= 1 for p, _ in rendered)
    assert ("1–5" if unicode_font else "1-5") in rendered[1][1]
    assert io.BytesIO(pdf).read(5) == b"%PDF-"


def test_the_reports_probabilities_are_predict_jsons_in_triage_order(tiny_run, tmp_path, capsys):
    """One `predict --json --report` call: the summary lists every film with the P(PNEUMONIA) that --json printed
    for it, most probable first, and the film pages follow in that same order with the same figures."""
    films = make_dataset(tmp_path / "films", per_class=3, seed=11)  # like the training films: in domain
    files = [str(path) for path in sorted(films.glob("*/*.jpeg"))]
    report = tmp_path / "report.pdf"
    assert cli.main(["predict", "--model", str(tiny_run), "--json", "--report", str(report), *files]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(printed) == len(files)
    assert not any(entry["out_of_domain"] for entry in printed), "films like the training ones: one triage group"
    by_name = {Path(entry["file"]).name: entry["probabilities"]["PNEUMONIA"] for entry in printed}
    expected_order = sorted(by_name, key=lambda name: -by_name[name])
    assert len({round(p, 3) for p in by_name.values()}) == len(files), "distinct figures, so the order is testable"

    rendered = pages(report.read_bytes())
    summary = "".join(rendered[0][1].split())  # long paths wrap across lines: compare without white space
    places = [summary.index(name) for name in expected_order]
    assert places == sorted(places), f"summary order {sorted(by_name, key=summary.index)} != {expected_order}"
    shown = re.findall(r"(\d+\.\d)%", summary)
    assert shown == [f"{by_name[name] * 100:.1f}" for name in expected_order]
    for name, (_, text) in zip(expected_order, rendered[1:]):
        text = "".join(text.split())
        assert name in text and f"P(PNEUMONIA)={by_name[name]:.1%}" in text, name
