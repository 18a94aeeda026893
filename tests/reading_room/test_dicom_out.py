"""Results as DICOM: `predict --dicom-out` writes an SR and an overlay capture into the source's study, both valid
per dicom3tools' dciodvfy, and Diagnose offers them (and the PDF report) as downloads."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.helpers.corpus import PHI, PHI_UIDS, _dicom, chest_like
from tests.app.test_app import app_env, png_bytes, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from xraycore.app import catalog
from xraycore.cli import main as cli
from xraycore.reading_room import dicom_out
from xraycore.inference import provenance
from xraycore.common.hashing import sha256_of_file

DCIODVFY = shutil.which("dciodvfy")


def require_dciodvfy() -> str:
    """dciodvfy's path. Without it: skipped on a developer's machine, a failure in CI (``$CI`` set), which
    installs it, as the PACS tests do with Orthanc."""
    if DCIODVFY is None:
        if os.environ.get("CI"):
            pytest.fail("dicom3tools' dciodvfy is not installed: the SR and overlay checks must run in CI")
        pytest.skip("dicom3tools' dciodvfy is not installed (CI installs it)")
    return DCIODVFY


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    return require_dciodvfy()


# Session-scoped and named first: checked before the session fixtures that train a model or start the app.
needs_dciodvfy = pytest.mark.usefixtures("dciodvfy")


def film(**tags) -> bytes:
    """A 12-bit DX chest film with planted identifiers (tests.helpers.corpus), tags overriding."""
    return _dicom((chest_like(seed=11) * 4095).round().astype(np.uint16), bits_stored=12, **tags)


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's 'Error' lines for a file (it writes its findings to stderr)."""
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def content(report: pydicom.Dataset) -> dict[str, object]:
    """Concept name → value of the SR's top-level content items."""
    values: dict[str, object] = {}
    for item in report.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            value: object = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "CODE":
            value = item.ConceptCodeSequence[0].CodeMeaning
        elif item.ValueType == "IMAGE":
            value = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        else:
            value = item.get("TextValue") or item.get("UID")
        values.setdefault(name, value)
    return values


@needs_dciodvfy
def test_predict_dicom_out_files_valid_results_in_the_source_study(tiny_run, tmp_path, capsys):
    full = tmp_path / "full.dcm"
    full.write_bytes(film(StudyDate="20260105", StudyTime="101500", PatientSex="F", Laterality=""))
    bare_uids = {key: value[:-1] + "9" for key, value in PHI_UIDS.items()}
    bare = tmp_path / "bare.dcm"  # no body part, no sex, no study date: results are still valid
    bare.write_bytes(film(BodyPartExamined="", **bare_uids))
    picture = tmp_path / "plain.png"
    picture.write_bytes(png_bytes((chest_like(seed=3) * 255).astype(np.uint8)))
    out = tmp_path / "results"

    assert cli.main(["predict", "--model", str(tiny_run), "--json", "--dicom-out", str(out),
                     str(full), str(bare), str(picture)]) == 0
    captured = capsys.readouterr()
    answers = {Path(line["file"]).name: line for line in map(json.loads, captured.out.splitlines())}
    assert set(answers) == {"full.dcm", "bare.dcm", "plain.png"}
    assert sorted(p.name for p in out.iterdir()) == ["bare_overlay.dcm", "bare_sr.dcm", "full_overlay.dcm", "full_sr.dcm"]
    for value in [*PHI.values(), "Janet"]:  # identifiers go into the files, never onto the terminal
        assert value not in captured.out + captured.err

    for path in sorted(out.iterdir()):
        assert dciodvfy_errors(path) == [], path.name

    sha = provenance.weights_sha256(tiny_run)
    for stem, uids in (("full", PHI_UIDS), ("bare", bare_uids)):
        report = pydicom.dcmread(out / f"{stem}_sr.dcm")
        capture = pydicom.dcmread(out / f"{stem}_overlay.dcm")
        for result in (report, capture):  # the source's study and patient, a new series and instance
            assert result.StudyInstanceUID == uids["StudyInstanceUID"]
            assert str(result.PatientName) == PHI["PatientName"] and result.PatientID == PHI["PatientID"]
            assert result.SeriesInstanceUID != uids["SeriesInstanceUID"]
            assert result.SOPInstanceUID != uids["SOPInstanceUID"]
        assert report.SeriesInstanceUID != capture.SeriesInstanceUID
        assert report.SOPClassUID.name == "Comprehensive SR Storage"
        [evidence] = report.CurrentRequestedProcedureEvidenceSequence
        assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uids["SOPInstanceUID"]
        items = content(report)
        answer = answers[f"{stem}.dcm"]
        assert items["Source of Measurement"] == uids["SOPInstanceUID"]
        assert items["Probability of pneumonia"] == pytest.approx(answer["probability"], abs=1e-6)
        assert items["Finding"] == {"PNEUMONIA": "Pneumonia", "NORMAL": "Normal"}[answer["label"]]
        assert items["Decision threshold"] == pytest.approx(answer["threshold"], abs=1e-6)
        assert items["Operating point"] == answer["operating_point"]
        assert items["Out of the model's domain"] in ("Yes", "No", "not assessed (no out-of-domain detector)")
        assert items["Algorithm Name"] == f"{tiny_run.name} (simple_cnn)" and items["Model weights SHA-256"] == sha
        assert str(items["Algorithm Version"])[:4].isdigit()
        assert "Not for diagnostic use" in items["Comment"]
        assert capture.SOPClassUID.name == "Secondary Capture Image Storage"
        assert capture.PhotometricInterpretation == "RGB"
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == uids["SOPInstanceUID"]
        assert capture.pixel_array[2:8].mean() < 40  # the black label band on top of the overlay


def test_sources_that_cannot_carry_results_are_refused_plainly(tiny_run, tmp_path, capsys):
    with pytest.raises(dicom_out.DicomOutError, match="not a DICOM file"):
        dicom_out.read_source(b"just text")
    no_study = pydicom.dcmread(io.BytesIO(film()))
    del no_study.StudyInstanceUID
    with pytest.raises(dicom_out.DicomOutError, match="lacks StudyInstanceUID"):
        dicom_out.read_source(no_study)
    intact = pydicom.dcmread(io.BytesIO(film()))
    header = dicom_out.read_source(intact)
    assert "PatientSex" in header and not header.PatientSex and "PatientSex" not in intact  # the caller's stays as it was
    # The CLI names the file and goes on: the second file still gets its results.
    broken = tmp_path / "nostudy.dcm"
    no_study.save_as(broken, enforce_file_format=True)
    good = tmp_path / "good.dcm"
    good.write_bytes(film())
    assert cli.main(["predict", "--model", str(tiny_run), "--dicom-out", str(tmp_path / "out"), str(broken), str(good)]) == 0
    err = capsys.readouterr().err
    assert "nostudy.dcm: no DICOM result written" in err and "good.dcm: wrote good_sr.dcm, good_overlay.dcm" in err


def test_overlay_label_fits_any_width():
    for width in (40, 224, 1024):
        labelled = dicom_out.labelled(np.full((width, width, 3), 200, np.uint8))
        assert labelled.shape == (width, width, 3)
        band = labelled[: max(12, width // 24)]
        assert band.max() > 150 and (band == 0).mean() > 0.5  # light text on black


@needs_dciodvfy
def test_diagnose_offers_the_dicom_results_and_the_pdf_report(app_env, tmp_path):
    source = film()
    at = start_app()
    at.file_uploader(key="uploads").set_value([("study.dcm", source, "application/dicom"),
                                                ("plain.png", png_bytes((chest_like() * 255).astype(np.uint8)),
                                                 "image/png")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [button.label for button in at.get("download_button")]
    assert labels.count("Report (PDF)") == 2 and labels.count("Result (DICOM SR)") == 1
    assert labels.count("Overlay (DICOM)") == 1 and "Printable report of all images (PDF)" in labels

    # What the buttons hand over, made from the session's result exactly as the page does.
    [result] = [r for r in at.session_state["diagnose_results"]["results"].values() if r.name == "study.dcm"]
    assert result.is_dicom
    model = provenance.of_model(app_env / "run-a")
    (tmp_path / "sr.dcm").write_bytes(dicom_out.display_report(source, result, 0.3, "internal, threshold changed", model))
    (tmp_path / "sc.dcm").write_bytes(dicom_out.display_capture(source, result, model, 0.4))
    for name in ("sr.dcm", "sc.dcm"):
        assert dciodvfy_errors(tmp_path / name) == [], name
    items = content(pydicom.dcmread(tmp_path / "sr.dcm"))
    assert items["Decision threshold"] == 0.3 and items["Operating point"] == "internal, threshold changed"
    assert items["Finding"] == ("Pneumonia" if result.positive_probability >= 0.3 else "Normal")
    assert catalog.triage_score(result) == result.positive_probability


def test_results_keep_unicode_warnings(tmp_path):
    """Warnings carry en dashes (age ranges): the SR is written in UTF-8, not with replacement characters."""
    finding = dicom_out.Finding(label="NORMAL", probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1}, positive_class="PNEUMONIA",
                                probability=0.1, threshold=0.5, operating_point="site–A",
                                warnings=("outside the age range (1–5 years)",))
    model = provenance.ModelProvenance("m (simple_cnn)", "2026-01-01", "0" * 64, "xraycore 0")
    report = pydicom.dcmread(io.BytesIO(dicom_out.to_bytes(
        dicom_out.structured_report(dicom_out.read_source(film()), finding, model))))
    assert report.SpecificCharacterSet == "ISO_IR 192"
    assert content(report)["Warning"] == "outside the age range (1–5 years)"


def test_provenance_names_the_weights_when_no_training_date_travels(tiny_run, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_run, bundle)
    (bundle / "status.json").unlink()  # bundles carry no status.json
    model = provenance.of_model(bundle)
    assert model.weights_sha256 == sha256_of_file(bundle / "model.safetensors")
    assert model.version == f"weights {model.weights_sha256[:12]}" and model.name == "bundle (simple_cnn)"
    assert provenance.of_model(tiny_run).version[:4].isdigit()  # a run: when it finished training
