"""The PACS connection against a real PACS: Orthanc on free loopback ports (one per module), loaded through its REST
API; `pacs --store-results` finds, fetches, scores and files the SR and overlay back, read again from Orthanc."""
from __future__ import annotations

import os

import datetime as dt
import io
import json
import shutil
import socket
import time

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.helpers.corpus import PHI, _dicom, chest_like
from tests.helpers.orthanc import AET, Orthanc, orthanc_binary, start_orthanc
from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from xraycore.cli import main as cli
from xraycore.io import intended_use
from xraycore.reading_room import pacs
from xraycore.reading_room import pacs_scan
from xraycore.reading_room import pacs_nodes
from xraycore.inference import provenance
from xraycore.inference.predictor import Predictor

# Skipped on a developer's machine without Orthanc; never in CI, which installs it (there a missing one fails).
pytestmark = pytest.mark.skipif(orthanc_binary() is None and not os.environ.get("CI"),
                                reason="Orthanc is not installed (CI installs it)")
SINCE = "20260101"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Orthanc:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def frontal_model(tiny_run, tmp_path_factory):
    """tiny_run with an intended use (frontal chest films), so lateral films are recognised and skipped."""
    path = tmp_path_factory.mktemp("pacs-model") / "model"
    shutil.copytree(tiny_run, path)
    intended_use.save(path, intended_use.IntendedUse(views=("PA", "AP"), body_parts=("CHEST",)))
    return path


def film(study: str, series: str, number: int, *, date: str = "20260105", side: int = 64, **tags) -> bytes:
    """A 12-bit chest film (identifiers planted by tests.helpers.corpus) in the given study and series."""
    pixels = (chest_like(side, side, seed=number) * 4095).round().astype(np.uint16)
    tags = {"Modality": "DX", "ViewPosition": "PA", "BodyPartExamined": "CHEST", **tags}
    return _dicom(pixels, bits_stored=12, StudyInstanceUID=study, SeriesInstanceUID=series,
                  SOPInstanceUID=generate_uid(), StudyDate=date, StudyTime="090000", SeriesNumber=str(number // 10 or 1),
                  InstanceNumber=str(number), **tags)


def text_report(study: str, date: str = "20260105") -> bytes:
    """A Basic Text SR: a report, not an image."""
    return _dicom(None, SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11", Modality="SR", StudyInstanceUID=study,
                  SeriesInstanceUID=generate_uid(), SOPInstanceUID=generate_uid(), StudyDate=date, SeriesNumber="50")


def pdf_document(study: str) -> bytes:
    """An Encapsulated PDF (modality DOC): a document, not an image."""
    return _dicom(None, SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1", Modality="DOC", StudyInstanceUID=study,
                  SeriesInstanceUID=generate_uid(), SOPInstanceUID=generate_uid(), StudyDate="20260105",
                  SeriesNumber="60", MIMETypeOfEncapsulatedDocument="application/pdf",
                  EncapsulatedDocument=b"%PDF-1.4\n%%EOF\n", BurnedInAnnotation="NO")


def run_cli(capsys, node_port: int, model, *extra: str) -> tuple[int, list[dict], str]:
    code = cli.main(["pacs", "--host", "127.0.0.1", "--port", str(node_port), "--called-aet", AET, "--model", str(model),
                     "--json", *extra])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.out + captured.err


def test_pacs_scores_chest_studies_and_stores_the_results_back(orthanc, frontal_model, capsys):
    chest, hand, report_only, old = (generate_uid() for _ in range(4))
    chest_series = generate_uid()
    frontal = [film(chest, chest_series, number) for number in (1, 2)]
    for data in [*frontal, film(chest, chest_series, 3, ViewPosition="LL"), text_report(chest), pdf_document(chest),
                 film(hand, generate_uid(), 1, BodyPartExamined="HAND"), text_report(report_only),
                 film(old, generate_uid(), 1, date="20250101")]:
        orthanc.upload(data)

    started = time.perf_counter()
    code, lines, said = run_cli(capsys, orthanc.dicom_port, frontal_model, "--since", SINCE, "--store-results")
    elapsed = time.perf_counter() - started
    assert code == 0, said
    # One line per frontal chest image, like predict --json; the lateral film, the SR, the PDF, the hand are left out.
    assert len(lines) == 2 and {line["study_uid"] for line in lines} == {chest}
    assert all(0 <= line["probability"] <= 1 and line["label"] in ("NORMAL", "PNEUMONIA") for line in lines)
    assert all(line["stored"] == ["SR", "overlay"] for line in lines)
    assert "skipped 1 non-frontal image(s)" in said
    assert "a structured report, not an image: skipped" in said and "a document (PDF), not an image: skipped" in said
    assert "body part hand, not the chest: skipped" in said and "no chest image series to score" in said
    for value in [*PHI.values(), "Janet", "Doe"]:  # never a patient name or ID on stdout or stderr
        assert value not in said
    print(f"pacs round trip: 3 studies, 2 images scored and stored back in {elapsed:.1f} s")

    # Read back from Orthanc: one SR and one overlay per scored image, in the source study, pointing at its source.
    sources = {pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID: d for d in frontal}
    results = [pydicom.dcmread(io.BytesIO(data)) for data in orthanc.instances_of_study(chest)]
    reports = [d for d in results if d.SOPClassUID.name == "Comprehensive SR Storage"]
    captures = [d for d in results if d.SOPClassUID.name == "Secondary Capture Image Storage"]
    assert len(reports) == 2 and len(captures) == 2
    by_sop = {line["sop_uid"]: line for line in lines}
    sha = provenance.weights_sha256(frontal_model)
    for report in reports:
        assert str(report.PatientName) == PHI["PatientName"] and report.StudyInstanceUID == chest
        items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in report.ContentSequence}
        source_uid = items["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert source_uid in sources and source_uid in by_sop
        probability = float(items["Probability of pneumonia"].MeasuredValueSequence[0].NumericValue)
        assert probability == pytest.approx(by_sop[source_uid]["probability"], abs=1e-6)
        assert items["Model weights SHA-256"].TextValue == sha
    assert {c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in captures} == set(sources)

    # A study with no image at all (an SR only): the PACS's modality filter leaves it out; asked for, it says so.
    node = pacs.Node("127.0.0.1", orthanc.dicom_port, AET)
    assert report_only not in {study.uid for study in pacs.find_studies(node, SINCE)}
    items = list(pacs_scan.scan(node, Predictor(frontal_model, device="cpu"), [pacs.Study(index=7, uid=report_only)]))
    assert [item.message for item in items] == ["study 7 / series 50 SR: a structured report, not an image: skipped",
                                                "study 7: no chest image series to score"]


@pytest.fixture
def closed_port():
    """A loopback port held bound, never listened on, while the test runs: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def test_unreachable_node_and_refused_association_say_so(orthanc, frontal_model, capsys, closed_port):
    with pytest.raises(pacs.PacsError, match="cannot reach the PACS"):
        pacs.echo(pacs.Node("127.0.0.1", closed_port, AET, timeout=5))
    pacs.echo(pacs.Node("127.0.0.1", orthanc.dicom_port, AET))
    code, lines, said = run_cli(capsys, orthanc.dicom_port, frontal_model)
    assert code == 0
    code = cli.main(["pacs", "--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--called-aet", "NOT-ORTHANC",
                     "--model", str(frontal_model)])
    err = capsys.readouterr().err
    assert code == 2 and "refused the association: check the called AE title (NOT-ORTHANC)" in err
    assert "Traceback" not in err
    with pytest.raises(ValueError, match="not an AE title"):
        pacs.Node("127.0.0.1", 104, "A" * 17)
    assert cli.main(["pacs", "--host", "127.0.0.1", "--port", "104", "--called-aet", AET, "--model",
                     str(frontal_model), "--since", "2026-01-01"]) == 2
    assert "not a date written YYYYMMDD" in capsys.readouterr().err


def test_store_failure_and_unreadable_images_never_stop_the_batch(orthanc, frontal_model, monkeypatch):
    study, series = generate_uid(), generate_uid()
    orthanc.upload(film(study, series, 1, date="20260201"))
    blank = film(study, series, 2, date="20260201")  # a constant image: read, refused as blank, batch goes on
    dataset = pydicom.dcmread(io.BytesIO(blank))
    dataset.PixelData = np.zeros((64, 64), np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    orthanc.upload(buffer.getvalue())
    node = pacs.Node("127.0.0.1", orthanc.dicom_port, AET)
    [target] = [s for s in pacs.find_studies(node, "20260201") if s.uid == study]

    def refusing(*args, **kwargs):
        raise pacs.PacsError("the PACS went away")

    monkeypatch.setattr(pacs, "store", refusing)
    predictor = Predictor(frontal_model, device="cpu")
    items = list(pacs_scan.scan(node, predictor, [target], store_results=True, model=provenance.of_model(frontal_model)))
    scored = [item for item in items if isinstance(item, pacs_scan.Scored)]
    notices = [item.message for item in items if isinstance(item, pacs.Notice)]
    assert len(scored) == 2 and [s.prediction.ok for s in scored] == [True, False]
    assert "blank" in scored[1].prediction.error
    assert any("results not stored: the PACS went away" in n for n in notices)


@pytest.mark.slow
def test_a_50_megabyte_image_is_scored_without_stopping_the_rest(orthanc, frontal_model):
    study, series = generate_uid(), generate_uid()
    big = film(study, series, 1, date="20260301", side=5000)  # 5000 x 5000 x 16 bit: 50 MB
    assert len(big) > 50_000_000
    orthanc.upload(big)
    orthanc.upload(film(study, series, 2, date="20260301"))
    node = pacs.Node("127.0.0.1", orthanc.dicom_port, AET)
    [target] = [s for s in pacs.find_studies(node, "20260301") if s.uid == study]
    started = time.perf_counter()
    items = list(pacs_scan.scan(node, Predictor(frontal_model, device="cpu"), [target]))
    elapsed = time.perf_counter() - started
    scored = [item for item in items if isinstance(item, pacs_scan.Scored)]
    assert [s.prediction.ok for s in scored] == [True, True], [s.prediction.error for s in scored]
    print(f"50 MB image fetched and scored with a small one in {elapsed:.1f} s")


def test_worklist_page_lists_scores_sorts_opens_and_sends_back(orthanc, app_env, tmp_path, monkeypatch):
    monkeypatch.setenv(pacs_nodes.NODES_FILE_ENV, str(tmp_path / "pacs_nodes.toml"))  # the page offers configured nodes
    pacs_nodes.add_node("orthanc", pacs.Node("127.0.0.1", orthanc.dicom_port, AET))
    today = dt.date.today().strftime("%Y%m%d")
    study, series = generate_uid(), generate_uid()
    for number in (1, 2, 3):
        orthanc.upload(film(study, series, number, date=today))
    orthanc.upload(film(study, series, 4, date=today, ViewPosition="LL"))
    at = start_app()
    at.switch_page("pages/worklist.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="pacs_node").value == "orthanc"
    next(b for b in at.get("form_submit_button") if b.label == "Find studies").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe[0].value["images"].tolist() == [4]  # today's one study

    at.button(key="worklist_score").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[-1].value
    assert len(table) == 3 and set(table["flag"]) <= {"", "out of domain"}
    probabilities = table["P(PNEUMONIA)"].tolist()
    assert probabilities == sorted(probabilities, reverse=True)  # most probable first
    assert any("skipped 1 non-frontal image(s)" in caption.value for caption in at.caption)
    shown = " ".join(str(v) for v in table.to_dict("list").values()) + " ".join(c.value for c in at.caption)
    assert all(value not in shown for value in [*PHI.values(), "Janet"])

    at.button(key="worklist_send").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.success] == ["Results stored for 3 image(s)."]
    kinds = [pydicom.dcmread(io.BytesIO(data)).SOPClassUID.name for data in orthanc.instances_of_study(study)]
    assert kinds.count("Comprehensive SR Storage") == 3 and kinds.count("Secondary Capture Image Storage") == 3

    top = table["image"].tolist()[0]
    at.selectbox(key="worklist_pick").set_value(top)
    at.button(key="worklist_open_button").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Diagnose"
    assert at.dataframe[0].value["file"].tolist() == [top] and len(at.metric) == 1
    assert "Result (DICOM SR)" in [button.label for button in at.get("download_button")]
