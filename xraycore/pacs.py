"""A PACS connection (DICOM networking through pynetdicom): find chest studies, fetch them, score them, file
the results back.

C-FIND at study level (since a date, by modality), then at series level (modality and body part: SR, PDF
and other non-image series, and non-chest series, are left out with a message); C-GET per series into
memory (nothing is written to disk); every image scored through the Predictor; optionally the SR and the
overlay capture (dicom_out) stored back with C-STORE.

Privacy: queries never ask for the patient's name or ID, and messages name studies by their position in
the list, date and modality, never by a patient attribute. The retrieved images do carry the patient
module (the results must copy it into the study); it stays in memory and goes back to the PACS only.

Trouble with one study, series or image (an association dropped, a series without images, an object that
is not an image, a huge image) becomes a :class:`Notice` and the batch goes on; a node that cannot be
reached or refuses the association at all raises :class:`PacsError` with a plain reason.
"""
from __future__ import annotations

import datetime as _dt
import io
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from pydicom import Dataset
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
                         JPEGLSLossless, JPEGLSNearLossless, RLELossless)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (ComprehensiveSRStorage, ComputedRadiographyImageStorage,
                                  DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing,
                                  SecondaryCaptureImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet, Verification)

from . import access, audit, dicom_out
from .intended_use import SkipNonFrontal
from .io import CHEST_BODY_PARTS
from .predict import Prediction, Predictor
from .provenance import ModelProvenance

DEFAULT_MODALITIES = ("DX", "CR")
DEFAULT_CALLING_AET = "XRAY"
TIMEOUT_S = 30.0
# What a chest radiograph arrives as; anything else a series holds is refused by the association.
IMAGE_STORAGE = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                 DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage)
# Every syntax the DICOM reader decodes: the PACS may send its files as stored, compressed or not.
RECEIVED_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSLossless, JPEGLSNearLossless,
                     JPEG2000Lossless, JPEG2000, RLELossless]
CHEST_SYNONYMS = frozenset({*CHEST_BODY_PARTS, "THORAX", "LUNG", "LUNGS"})
NON_IMAGE_MODALITIES = {"SR": "a structured report", "DOC": "a document (PDF)", "OT": "other (not an image)",
                        "KO": "a key-object selection", "PR": "a presentation state", "REG": "a registration"}
_AET = re.compile(r"[ -~]{1,16}")  # AE titles: 16 printable ASCII characters, no backslash


class PacsError(RuntimeError):
    """The node cannot be used at all (unreachable, association refused or aborted); the text says why."""


@dataclass(frozen=True)
class Node:
    """A DICOM node and how this workbench names itself to it."""

    host: str
    port: int
    called_aet: str
    calling_aet: str = DEFAULT_CALLING_AET
    timeout: float = TIMEOUT_S

    def __post_init__(self) -> None:
        for title in (self.called_aet, self.calling_aet):
            if not _AET.fullmatch(title) or "\\" in title or not title.strip():
                raise ValueError(f"{title!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"{self.port} is not a TCP port (1-65535)")

    def __str__(self) -> str:
        return f"{self.called_aet} at {self.host}:{self.port}"


@dataclass(frozen=True)
class Study:
    """A study as C-FIND describes it: no patient attribute is asked for."""

    index: int  # 1-based position in the list: how messages name it
    uid: str
    date: str = ""
    time: str = ""
    modalities: tuple[str, ...] = ()
    description: str = ""
    images: int | None = None

    @property
    def label(self) -> str:
        when = f" {self.date[:4]}-{self.date[4:6]}-{self.date[6:8]}" if len(self.date) == 8 else ""
        return f"study {self.index}{when}"


@dataclass(frozen=True)
class Series:
    study: Study
    uid: str
    modality: str = ""
    body_part: str = ""
    number: str = ""
    images: int | None = None

    @property
    def label(self) -> str:
        return f"{self.study.label} / series {self.number or '?'} {self.modality}".rstrip()


@dataclass
class Notice:
    """Something left out or gone wrong in a batch, said plainly; the batch goes on."""

    message: str


@dataclass
class Scored:
    """One image of the worklist and its prediction, with its header (no pixels) for filing results."""

    series: Series
    sop_uid: str
    prediction: Prediction
    header: Dataset | None = None
    stored: list[str] = field(default_factory=list)  # "sr", "overlay": what was stored back

    def to_json(self) -> dict[str, Any]:
        """predict --json's line, plus where the image lives in the PACS (UIDs, never a patient attribute)."""
        line = self.prediction.to_json()
        line.update({"study_uid": self.series.study.uid, "series_uid": self.series.uid, "sop_uid": self.sop_uid})
        if self.stored:
            line["stored"] = list(self.stored)
        return line


# --------------------------------------------------------------------------- associations

def _ae(node: Node) -> AE:
    ae = AE(ae_title=node.calling_aet)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout
    return ae


@contextmanager
def _association(node: Node, ae: AE, **options: Any) -> Iterator[Association]:
    """An established association, released afterwards; PacsError with the reason when there is none."""
    try:
        assoc = ae.associate(node.host, int(node.port), ae_title=node.called_aet, **options)
    except OSError:  # a host name that does not resolve
        raise PacsError(f"cannot reach the PACS at {node.host}:{node.port}: the host is unknown") from None
    if not assoc.is_established:
        # pynetdicom reports a failed connection as an abort, and so, at times, a rejection whose socket closed
        # first: whatever answered is a refusal, nothing answering is an unreachable node.
        if not assoc.is_rejected and not _reachable(node):
            raise PacsError(f"cannot reach the PACS at {node.host}:{node.port}: nothing answered (wrong host or "
                            "port, the PACS is down, or a firewall blocks it)")
        raise PacsError(f"the PACS {node} refused the association: check the called AE title ({node.called_aet}), "
                        f"that it accepts this workbench ({node.calling_aet}) and that it is a DICOM port")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _reachable(node: Node) -> bool:
    try:
        with socket.create_connection((node.host, int(node.port)), timeout=min(node.timeout, 5.0)):
            return True
    except OSError:
        return False


def _accepted(assoc: Association, sop_class: str) -> bool:
    return any(context.abstract_syntax == sop_class for context in assoc.accepted_contexts)


def echo(node: Node) -> None:
    """C-ECHO: raises PacsError unless the node answers."""
    ae = _ae(node)
    ae.add_requested_context(Verification)
    with _association(node, ae) as assoc:
        status = assoc.send_c_echo()
        if not status or status.Status != 0x0000:
            raise PacsError(f"the PACS {node} did not answer the echo")


def _find(node: Node, query: Dataset) -> list[Dataset]:
    ae = _ae(node)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    with _association(node, ae) as assoc:
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelFind):
            raise PacsError(f"the PACS {node} does not answer queries (C-FIND, study root)")
        found, failure = [], None
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                failure = "the query got no answer in time"
                break
            if code in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif code != 0x0000:
                failure = f"the query was refused (status 0x{code:04X})"
        if failure:
            raise PacsError(f"the PACS {node}: {failure}")
        return found


# --------------------------------------------------------------------------- finding

def check_date(text: str) -> str:
    """A YYYYMMDD date, checked (ValueError in words otherwise)."""
    try:
        _dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValueError(f"{text!r} is not a date written YYYYMMDD") from None
    return text


def find_studies(node: Node, since: str | None = None, modalities: Sequence[str] = DEFAULT_MODALITIES,
                 identity: access.Identity | None = None) -> list[Study]:
    """Studies from ``since`` (YYYYMMDD, inclusive) on with one of ``modalities``, oldest first.

    Needs the reader role; one 'pacs.query' audit line with the number of studies found (no criteria values)."""
    with audit.guarded("pacs.query", identity, access.PACS_QUERY) as line:
        studies = _find_studies(node, since, modalities)
        line.note(counts={"studies": len(studies)})
        return studies


def _find_studies(node: Node, since: str | None, modalities: Sequence[str]) -> list[Study]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.StudyDate = f"{check_date(since)}-" if since else ""
    query.StudyTime = ""
    query.StudyDescription = ""
    query.ModalitiesInStudy = "\\".join(modalities) if modalities else ""
    query.NumberOfStudyRelatedInstances = ""
    rows = []
    for found in _find(node, query):
        in_study = {str(m) for m in _values(found.get("ModalitiesInStudy"))}
        if modalities and in_study and not in_study & set(modalities):
            continue  # a PACS that ignores the filter: apply it here
        if found.get("StudyInstanceUID"):
            rows.append(found)
    rows.sort(key=lambda d: (str(d.get("StudyDate") or ""), str(d.get("StudyTime") or "")))
    return [Study(index=i, uid=str(d.StudyInstanceUID), date=str(d.get("StudyDate") or ""),
                  time=str(d.get("StudyTime") or ""),
                  modalities=tuple(str(m) for m in _values(d.get("ModalitiesInStudy"))),
                  description=str(d.get("StudyDescription") or "")[:64], images=_int(d.get("NumberOfStudyRelatedInstances")))
            for i, d in enumerate(rows, start=1)]


def find_series(node: Node, study: Study) -> list[Series]:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study.uid
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.BodyPartExamined = ""
    query.SeriesNumber = ""
    query.NumberOfSeriesRelatedInstances = ""
    series = [Series(study=study, uid=str(d.SeriesInstanceUID), modality=str(d.get("Modality") or "").upper(),
                     body_part=str(d.get("BodyPartExamined") or "").strip().upper(), number=str(d.get("SeriesNumber") or ""),
                     images=_int(d.get("NumberOfSeriesRelatedInstances")))
              for d in _find(node, query) if d.get("SeriesInstanceUID")]
    return sorted(series, key=lambda s: (_int(s.number) or 0, s.uid))


def chest_image_series(series: Sequence[Series], modalities: Sequence[str]) -> tuple[list[Series], list[Notice]]:
    """The series worth scoring, and a notice for each one left out (not an image, not the chest)."""
    keep, notices = [], []
    for item in series:
        if item.modality in NON_IMAGE_MODALITIES:
            notices.append(Notice(f"{item.label}: {NON_IMAGE_MODALITIES[item.modality]}, not an image: skipped"))
        elif modalities and item.modality not in modalities:
            notices.append(Notice(f"{item.label}: modality {item.modality or 'unknown'} is not one of "
                                  f"{', '.join(modalities)}: skipped"))
        elif item.body_part and item.body_part not in CHEST_SYNONYMS:
            notices.append(Notice(f"{item.label}: body part {item.body_part.lower()}, not the chest: skipped"))
        elif item.images == 0:
            notices.append(Notice(f"{item.label}: the series holds no image: skipped"))
        else:
            keep.append(item)
    return keep, notices


# --------------------------------------------------------------------------- retrieving

def retrieve(node: Node, series: Series, sop_uid: str | None = None,
             identity: access.Identity | None = None) -> tuple[list[Dataset], list[Notice]]:
    """C-GET a series (or one image of it) into memory; notices for what the PACS could not send.

    Needs the reader role; one 'pacs.retrieve' audit line with the number of images received."""
    with audit.guarded("pacs.retrieve", identity, access.PACS_QUERY) as line:
        received, notices = _retrieve(node, series, sop_uid)
        line.note(counts={"images": len(received)})
        return received, notices


def _retrieve(node: Node, series: Series, sop_uid: str | None) -> tuple[list[Dataset], list[Notice]]:
    ae = _ae(node)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in IMAGE_STORAGE:
        ae.add_requested_context(sop_class, RECEIVED_SYNTAXES)
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received.append(dataset)
        return 0x0000

    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE" if sop_uid else "SERIES"
    query.StudyInstanceUID = series.study.uid
    query.SeriesInstanceUID = series.uid
    if sop_uid:
        query.SOPInstanceUID = sop_uid
    notices: list[Notice] = []
    roles = [build_role(sop_class, scp_role=True) for sop_class in IMAGE_STORAGE]
    with _association(node, ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelGet):
            raise PacsError(f"the PACS {node} does not send images on request (C-GET, study root)")
        failed = 0
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            code = getattr(status, "Status", None)
            if code is None:
                notices.append(Notice(f"{series.label}: the PACS stopped answering while sending images"))
                break
            failed = max(failed, _int(status.get("NumberOfFailedSuboperations")) or 0)
            if code not in (0x0000, 0xFF00, 0xB000):
                notices.append(Notice(f"{series.label}: the PACS refused to send it (status 0x{code:04X})"))
        if failed:
            notices.append(Notice(f"{series.label}: {failed} object(s) were not sent: not a kind of image read "
                                  "here (a report, a PDF, ...)"))
    return received, notices


def _file_bytes(dataset: Dataset) -> bytes:
    """A received dataset as a DICOM file in memory, as read_xray takes it."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- storing back

def store(node: Node, datasets: Sequence[Dataset], identity: access.Identity | None = None) -> list[str | None]:
    """C-STORE results into the PACS, one association for all; per dataset None (stored) or why not.

    Store-back changes the PACS: admin only (``identity`` is who asks; from a terminal, the OS user), checked
    before any connection; one 'pacs.store' audit line with the counts stored and refused.
    """
    if not datasets:
        return []
    with audit.guarded("pacs.store", identity, access.PACS_STORE) as line:
        outcomes = _store(node, datasets)
        line.note(counts={"stored": sum(o is None for o in outcomes), "refused": sum(o is not None for o in outcomes)})
        return outcomes


def _store(node: Node, datasets: Sequence[Dataset]) -> list[str | None]:
    ae = _ae(node)
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    outcomes: list[str | None] = []
    with _association(node, ae) as assoc:
        for dataset in datasets:
            kind = _kind(dataset)
            if not _accepted(assoc, str(dataset.SOPClassUID)):
                outcomes.append(f"the PACS does not accept {kind} objects")
                continue
            status = assoc.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code is None:
                outcomes.append(f"the PACS did not answer when storing the {kind}")
            elif code not in (0x0000, 0xB000, 0xB006, 0xB007):  # success, or stored with a warning
                outcomes.append(f"the PACS refused the {kind} (status 0x{code:04X})")
            else:
                outcomes.append(None)
    return outcomes


def _kind(dataset: Dataset) -> str:
    return {ComprehensiveSRStorage: "SR", SecondaryCaptureImageStorage: "overlay"}.get(str(dataset.SOPClassUID),
                                                                                    "result")


# --------------------------------------------------------------------------- the whole round

def scan(node: Node, predictor: Predictor, studies: Sequence[Study], *, modalities: Sequence[str] = DEFAULT_MODALITIES,
         skip: SkipNonFrontal | None = None, cam: str | None = "gradcam", store_results: bool = False,
         model: ModelProvenance | None = None, identity: Any = None) -> Iterator[Scored | Notice]:
    """Fetch and score every chest image of ``studies``, series by series; store results back when asked.

    Yields a Scored per image (its prediction may be an error) and a Notice for everything left out.
    """
    if store_results and model is None:
        raise ValueError("storing results needs the model's provenance (provenance.of_model)")
    for study in studies:
        try:
            found = find_series(node, study)
        except PacsError as error:
            yield Notice(f"{study.label}: its series could not be listed: {error}")
            continue
        series_list, notices = chest_image_series(found, modalities)
        yield from notices
        if not series_list:
            yield Notice(f"{study.label}: no chest image series to score")
            continue
        for series in series_list:
            yield from _scan_series(node, predictor, series, skip, cam, store_results, model, identity)


def _scan_series(node: Node, predictor: Predictor, series: Series, skip: SkipNonFrontal | None, cam: str | None,
                 store_results: bool, model: ModelProvenance | None, identity: Any) -> Iterator[Scored | Notice]:
    try:
        datasets, notices = retrieve(node, series, identity=identity)
    except PacsError as error:
        yield Notice(f"{series.label}: could not be fetched: {error}")
        return
    yield from notices
    if not datasets:
        yield Notice(f"{series.label}: the PACS sent no image")
        return
    datasets.sort(key=lambda d: (_int(d.get("InstanceNumber")) or 0, str(d.get("SOPInstanceUID") or "")))
    named: dict[str, Dataset] = {}
    for position, dataset in enumerate(datasets, start=1):
        name = f"{series.label} / image {_int(dataset.get('InstanceNumber')) or position}"
        named[name if name not in named else f"{name} ({position})"] = dataset  # numbers may repeat
    sources = ((name, _file_bytes(dataset)) for name, dataset in named.items())
    for prediction in predictor.predict_sources(sources, skip=skip, cam=cam):
        dataset = named[prediction.name]
        header = dicom_out.read_source(dataset) if prediction.ok and _has_uids(dataset) else None
        scored = Scored(series=series, sop_uid=str(dataset.get("SOPInstanceUID") or ""), prediction=prediction,
                        header=header)
        if store_results and prediction.ok:
            yield from _store_back(node, scored, model, identity)
        yield scored
    if skip is not None:
        for name in list(skip.skipped):
            if name in named:
                yield Notice(f"{name}: not a frontal view: skipped")


def _store_back(node: Node, scored: Scored, model: ModelProvenance | None, identity: Any) -> Iterator[Notice]:
    """File the SR and the overlay of one scored image; a failure is a notice, never the end of the batch."""
    name = scored.prediction.name
    if scored.header is None:
        yield Notice(f"{name}: no result stored: the image lacks the UIDs a result must refer to")
        return
    try:
        results = dicom_out.results_for(scored.header, dicom_out.Finding.from_prediction(scored.prediction),
                                        scored.prediction.overlay, model)
    except dicom_out.DicomOutError as error:
        yield Notice(f"{name}: no result stored: {error}")
        return
    try:
        outcomes = store(node, results, identity=identity)
    except PacsError as error:
        yield Notice(f"{name}: results not stored: {error}")
        return
    for dataset, failure in zip(results, outcomes):
        if failure is None:
            scored.stored.append(_kind(dataset))
        else:
            yield Notice(f"{name}: {failure}")


def _has_uids(dataset: Dataset) -> bool:
    return all(dataset.get(key) for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))


def _values(value: Any) -> list[Any]:
    """A DICOM value as a list: empty, one value, or a multi-value."""
    if value in (None, ""):
        return []
    return [value] if isinstance(value, str) else list(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
