"""Results as DICOM, filed in the source study: a Comprehensive SR and a Secondary Capture of the overlay.

A PACS shows what it holds beside the film it came from. Each scored DICOM gets two new objects, each in
a new series of the source's study (same Study Instance UID and patient module, copied by highdicom from
the source header, new series and SOP instance UIDs), both referencing the source image:

* a Comprehensive SR: the probabilities, the call, the operating point's name and threshold, the
  out-of-domain flag, the model's name, version and weights sha256, warnings, and "not for diagnostic use";
* a Secondary Capture of the Grad-CAM overlay, labelled "not for diagnostic use" in its pixels.

The source header is read without its pixels and only handed to highdicom: no identifier is printed or
logged here. Codes with no standard meaning use the local scheme ``99XRAY``.
"""
from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xraycore.access import policy as access
from xraycore.inference.provenance import ModelProvenance

if TYPE_CHECKING:
    from xraycore.inference.display import DisplayResult
    from xraycore.inference.prediction import Prediction

NOT_FOR_DIAGNOSTIC_USE = ("Not for diagnostic use: produced by research software (a decision aid, not a medical "
                          "device). The radiologist decides.")
MANUFACTURER = "xray workbench"
SR_SERIES_NUMBER = 9901  # high numbers: the results' series sort after the acquisition's
SC_SERIES_NUMBER = 9902
SR_SERIES_DESCRIPTION = "AI pneumonia result - not for diagnostic use"
SC_SERIES_DESCRIPTION = "AI pneumonia heat map - not for diagnostic use"
SC_LABEL = "AI heat map - NOT FOR DIAGNOSTIC USE"
SC_SHORT_LABEL = "AI - NOT DIAGNOSTIC"  # for overlays too narrow for the long label
LOCAL = "99XRAY"
UTF8 = "ISO_IR 192"  # warnings carry en dashes; names from any source character set re-encode in UTF-8
_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                      "StudyDate", "StudyTime", "ReferringPhysicianName")

_REPORT_TITLE = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
_PROCEDURE = hd.sr.CodedConcept("399208008", "SCT", "Plain X-ray of chest")
_FINDING = hd.sr.CodedConcept("121071", "DCM", "Finding")
_SOURCE = hd.sr.CodedConcept("121112", "DCM", "Source of Measurement")
_ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
_ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")
_COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
_NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
_YES = hd.sr.CodedConcept("373066001", "SCT", "Yes")
_NO = hd.sr.CodedConcept("373067005", "SCT", "No")
_CLASS_CODES = {"PNEUMONIA": hd.sr.CodedConcept("233604007", "SCT", "Pneumonia"),
                "NORMAL": hd.sr.CodedConcept("17621005", "SCT", "Normal")}


def _local(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, LOCAL, meaning[:64])


class DicomOutError(ValueError):
    """A source that cannot carry results back into its study (not DICOM, no UIDs); the text says why."""


@dataclass(frozen=True)
class Finding:
    """The answer a result file records, from a Prediction or from a session's display result."""

    label: str
    probabilities: dict[str, float]
    positive_class: str | None = None
    probability: float | None = None  # of the positive class (binary models)
    threshold: float | None = None
    operating_point: str | None = None
    out_of_domain: bool | None = None
    ood_score: float | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_prediction(cls, prediction: Prediction) -> Finding:
        if not prediction.ok or prediction.label is None:
            raise DicomOutError(f"{prediction.name} was not scored, so there is no result to file")
        return cls(label=prediction.label, probabilities=dict(prediction.probabilities),
                   positive_class=prediction.positive_class, probability=prediction.positive_probability,
                   threshold=prediction.threshold, operating_point=prediction.operating_point,
                   out_of_domain=prediction.out_of_domain, ood_score=prediction.ood_score,
                   warnings=(*prediction.guards, *prediction.warnings))

    @classmethod
    def from_display(cls, result: DisplayResult, threshold: float | None, operating_point: str | None) -> Finding:
        """A Diagnose result at the session's threshold (the page names it when it differs from the saved one)."""
        label = result.call(threshold)
        if label is None:
            raise DicomOutError(f"{result.name} was not scored, so there is no result to file")
        return cls(label=label, probabilities=dict(result.probabilities), positive_class=result.positive_class,
                   probability=result.positive_probability, threshold=threshold if result.positive_class else None,
                   operating_point=operating_point, out_of_domain=result.out_of_domain,
                   warnings=(*result.guards, *result.warnings))


# --------------------------------------------------------------------------- the source

def read_source(source: bytes | str | os.PathLike | BinaryIO | Dataset) -> Dataset:
    """The source's header (no pixels), checked to carry the UIDs its results must point back to."""
    if isinstance(source, Dataset):
        dataset = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        elif hasattr(source, "seek"):
            source.seek(0)
        try:
            dataset = dcmread(source, stop_before_pixels=True, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
            raise DicomOutError("the source is not a DICOM file, so no DICOM result can refer to it") from None
    if not any(keyword in dataset for keyword in ("SOPClassUID", "StudyInstanceUID", "Modality", "Rows")):
        raise DicomOutError("the source is not a DICOM file, so no DICOM result can refer to it")
    missing = [k for k in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID") if not dataset.get(k)]
    if missing:
        raise DicomOutError(f"the source DICOM lacks {', '.join(missing)}, so no result can be filed in its study")
    if not dataset.get("SeriesInstanceUID"):
        raise DicomOutError("the source DICOM lacks SeriesInstanceUID, so no result can refer to it")
    header = Dataset()  # a copy of the header only: the caller's dataset stays as it was, pixels are not copied
    for element in dataset:
        if element.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            header.add(copy.deepcopy(element))
    header.file_meta = copy.deepcopy(getattr(dataset, "file_meta", None) or FileMetaDataset())
    for keyword in _PATIENT_AND_STUDY:  # Type 2: present, empty when the source left them out
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _source_reference(source: Dataset, relationship: str) -> hd.sr.ImageContentItem:
    return hd.sr.ImageContentItem(name=_SOURCE, referenced_sop_class_uid=source.SOPClassUID,
                                  referenced_sop_instance_uid=source.SOPInstanceUID, relationship_type=relationship)


# --------------------------------------------------------------------------- the structured report

def structured_report(source: Dataset, finding: Finding, model: ModelProvenance, *, series_uid: str | None = None,
                      sop_uid: str | None = None, instance_number: int = 1) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR in the source's study that records the answer and the model behind it."""
    source = read_source(source)
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    root = hd.sr.ContainerContentItem(name=_REPORT_TITLE)
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=model.name[:64], manufacturer_name=MANUFACTURER, model_name=model.name[:64]))
    items: list[Any] = [*hd.sr.ObservationContext(observer_device_context=device),
                        hd.sr.CodeContentItem(name=codes.DCM.ProcedureReported, value=_PROCEDURE,
                                              relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD),
                        _source_reference(source, contains),
                        hd.sr.CodeContentItem(name=_FINDING, value=_class_code(finding.label), relationship_type=contains)]
    for class_name, probability in finding.probabilities.items():
        items.append(hd.sr.NumContentItem(name=_local(f"P-{class_name}"[:16], f"Probability of {class_name.lower()}"),
                                          value=round(float(probability), 6), unit=_NO_UNITS, relationship_type=contains))
    if finding.threshold is not None:
        items.append(hd.sr.NumContentItem(name=_local("THRESHOLD", "Decision threshold"),
                                          value=round(float(finding.threshold), 6), unit=_NO_UNITS,
                                          relationship_type=contains))
    items.append(_text(_local("OPERATING-POINT", "Operating point"), finding.operating_point or "none (most probable class)"))
    if finding.out_of_domain is None:
        items.append(_text(_local("OOD", "Out of the model's domain"), "not assessed (no out-of-domain detector)"))
    else:
        items.append(hd.sr.CodeContentItem(name=_local("OOD", "Out of the model's domain"),
                                           value=_YES if finding.out_of_domain else _NO, relationship_type=contains))
    if finding.ood_score is not None:
        items.append(hd.sr.NumContentItem(name=_local("OOD-SCORE", "Out-of-domain score (flagged above 1)"),
                                          value=round(float(finding.ood_score), 4), unit=_NO_UNITS,
                                          relationship_type=contains))
    items += [_text(_ALGORITHM_NAME, model.name), _text(_ALGORITHM_VERSION, model.version),
              _text(_local("WEIGHTS-SHA256", "Model weights SHA-256"), model.weights_sha256),
              _text(_local("SOFTWARE", "Software"), model.software)]
    items += [_text(_local("WARNING", "Warning"), warning) for warning in finding.warnings]
    items.append(_text(_COMMENT, NOT_FOR_DIAGNOSTIC_USE))
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    report = hd.sr.ComprehensiveSR(
        evidence=[source], content=root, series_instance_uid=series_uid or hd.UID(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid or hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False, transfer_syntax_uid=ExplicitVRLittleEndian,
        specific_character_set=UTF8)
    report.SeriesDescription = SR_SERIES_DESCRIPTION
    report.SoftwareVersions = model.software[:64]
    return report


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=str(value), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _class_code(label: str) -> hd.sr.CodedConcept:
    return _CLASS_CODES.get(label.strip().upper()) or _local(label.strip().upper()[:16] or "UNKNOWN", label)


# --------------------------------------------------------------------------- the overlay

def overlay_capture(source: Dataset, overlay: np.ndarray, model: ModelProvenance, *, series_uid: str | None = None,
                    sop_uid: str | None = None, instance_number: int = 1) -> hd.sc.SCImage:
    """A Secondary Capture of the Grad-CAM overlay (RGB) in the source's study, labelled in its pixels."""
    source = read_source(source)
    pixels = labelled(np.ascontiguousarray(overlay, dtype=np.uint8))
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid or hd.UID(), series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_uid or hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"), transfer_syntax_uid=ExplicitVRLittleEndian, specific_character_set=UTF8)
    # The overlay has the source's orientation (it is the source, resized): copy it, never guess it.
    orientation = source.get("PatientOrientation")
    capture.PatientOrientation = list(orientation) if orientation and len(orientation) == 2 else ""
    if source.get("BodyPartExamined"):
        capture.BodyPartExamined = source.BodyPartExamined
    if source.get("Laterality") or not source.get("BodyPartExamined"):  # Type 2C: absent for an unpaired part
        capture.Laterality = source.get("Laterality") or ""
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    capture.DerivationDescription = f"Grad-CAM heat map of {model.name} over the source image"[:1024]
    capture.BurnedInAnnotation = "NO"  # the label burnt in names the software, never the patient
    capture.SeriesDescription = SC_SERIES_DESCRIPTION
    capture.SoftwareVersions = model.software[:64]
    capture.ImageComments = NOT_FOR_DIAGNOSTIC_USE
    return capture


def labelled(rgb: np.ndarray) -> np.ndarray:
    """The overlay with a black band on top saying it is an AI heat map not for diagnostic use."""
    picture = Image.fromarray(rgb if rgb.ndim == 3 else np.dstack([rgb] * 3))
    band = max(12, picture.height // 24)
    draw = ImageDraw.Draw(picture)
    draw.rectangle([0, 0, picture.width, band], fill=(0, 0, 0))
    size = max(6, band - 4)
    font = ImageFont.load_default(size=size)
    while size > 6 and font.getlength(SC_LABEL) > picture.width - 8:  # shrink to fit narrow overlays
        size -= 1
        font = ImageFont.load_default(size=size)
    text = SC_LABEL if font.getlength(SC_LABEL) <= picture.width - 8 else SC_SHORT_LABEL
    draw.text((4, max(0, (band - size) // 2)), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


# --------------------------------------------------------------------------- files

def to_bytes(dataset: Dataset) -> bytes:
    """A DICOM Part 10 file in memory (what C-STORE and a download send)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def result_uids(source: Dataset, finding: Finding, model: ModelProvenance, kind: str) -> dict[str, str]:
    """The series and SOP instance UIDs of one result (kind "sr" or "overlay"), the same every time for the
    same source image, model version and operating point: filing it again names the same instance, so a
    PACS keeps one copy (and pacs asks the PACS before sending: pacs_results)."""
    threshold = "" if finding.threshold is None else f"{float(finding.threshold):.6f}"
    seed = "\x1f".join([str(source.SOPInstanceUID), kind, model.weights_sha256, model.version, model.software,
                        finding.operating_point or "", threshold])
    return {"series_uid": str(generate_uid(entropy_srcs=[seed, "\x1fseries"])),
            "sop_uid": str(generate_uid(entropy_srcs=[seed, "\x1finstance"]))}


def results_for(source: Dataset, finding: Finding, overlay: np.ndarray | None, model: ModelProvenance
                ) -> list[Dataset]:
    """The SR, and the overlay's Secondary Capture when there is an overlay (UIDs: :func:`result_uids`)."""
    source = read_source(source)
    results: list[Dataset] = [structured_report(source, finding, model, **result_uids(source, finding, model, "sr"))]
    if overlay is not None:
        results.append(overlay_capture(source, overlay, model, **result_uids(source, finding, model, "overlay")))
    return results


def write_results(directory: Path, stem: str, source: Dataset, finding: Finding, overlay: np.ndarray | None,
                  model: ModelProvenance) -> list[Path]:
    """``<stem>_sr.dcm`` and ``<stem>_overlay.dcm`` in ``directory`` (``predict --dicom-out``)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset, suffix in zip(results_for(source, finding, overlay, model), ("_sr.dcm", "_overlay.dcm")):
        path = directory / f"{stem}{suffix}"
        path.write_bytes(to_bytes(dataset))
        paths.append(path)
    return paths


class PacsFilm(io.BytesIO):
    """A film fetched from a PACS (the Worklist opens it in Diagnose). Results made from it copy the patient
    module the PACS holds, so downloading them needs the right to retrieve from the PACS (an upload's
    results carry only what the upload itself carried)."""


def may_download(source: object, identity: access.Identity | None) -> bool:
    """Whether ``identity`` may download DICOM results of ``source`` (the page hides what it may not)."""
    return not isinstance(source, PacsFilm) or access.can(identity, access.PACS_QUERY)


def _check_download(source: object, identity: access.Identity | None) -> None:
    """A PACS film's results: refused (and audited) for anyone who may not retrieve from the PACS."""
    if isinstance(source, PacsFilm):
        access.require(access.acting(identity, "dicom.download"), access.PACS_QUERY, "dicom.download")


def display_report(source: bytes | BinaryIO, result: DisplayResult, threshold: float | None,
                   operating_point: str | None, model: ModelProvenance,
                   identity: access.Identity | None = None) -> bytes:
    """The SR of a Diagnose result at the session's threshold, as file bytes (the page's download)."""
    _check_download(source, identity)
    return to_bytes(structured_report(read_source(source), Finding.from_display(result, threshold, operating_point),
                                      model))


def display_capture(source: bytes | BinaryIO, result: DisplayResult, model: ModelProvenance,
                    alpha: float = 0.4, identity: access.Identity | None = None) -> bytes:
    """The overlay capture of a Diagnose result at the session's opacity, as file bytes."""
    from xraycore.explain.cam import overlay as blend

    _check_download(source, identity)
    if result.image is None or result.heatmap is None:
        raise DicomOutError(f"{result.name} has no heat map to file")
    picture = blend(result.image / 255.0, result.heatmap.astype(np.float32), alpha=alpha)
    return to_bytes(overlay_capture(read_source(source), picture, model))
