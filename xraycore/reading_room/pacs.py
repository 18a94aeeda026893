"""A PACS connection (DICOM networking through pynetdicom): find chest studies, fetch them, score them, file
the results back.

C-FIND at study level (since a date, by modality), then at series level (modality and body part: SR, PDF
and other non-image series, and non-chest series, are left out with a message); C-GET per series into
memory (nothing is written to disk); every image scored through the Predictor; optionally the SR and the
overlay capture (dicom_out) stored back with C-STORE.

Privacy: queries never ask for the patient's name or ID, and messages name studies by their position in
the list, date and modality, never by a patient attribute. The retrieved images do carry the patient
module (the results must copy it into the study); it stays in memory and goes back to the PACS only.

Nodes come from the administrator's list (:mod:`pacs_nodes`): every exchange checks who asks and which
node, refused before any connection otherwise, and writes one audit line (counts, never a criterion or a
patient attribute). This workbench's own results met in a study are left out quietly and counted; results
are never filed twice (:mod:`pacs_results`).

Trouble with one study, series or image (an association dropped, a series without images, an object that
is not an image, a huge image) becomes a :class:`Notice` and the batch goes on; a node that cannot be
reached or refuses the association at all raises :class:`PacsError` with a plain reason.
"""
from __future__ import annotations

import datetime as _dt
import io
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from pydicom import Dataset
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1,
                         JPEGLSLossless, JPEGLSNearLossless, RLELossless)
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (ComprehensiveSRStorage, ComputedRadiographyImageStorage,
                                  DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing,
                                  SecondaryCaptureImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet, Verification)

from xraycore.access import policy as access
from xraycore.reading_room import dicom_out
from xraycore.reading_room import pacs_net
from xraycore.reading_room import pacs_nodes
from xraycore.reading_room import pacs_results
from xraycore.io.intended_use import SkipNonFrontal
from xraycore.io.image import CHEST_BODY_PARTS
from xraycore.reading_room.pacs_net import PacsError  # noqa: F401 - pacs.PacsError for callers
from xraycore.reading_room.pacs_nodes import DEFAULT_CALLING_AET, TIMEOUT_S, Node  # noqa: F401 - pacs.Node for callers
from xraycore.inference.predictor import Prediction, Predictor
from xraycore.inference.provenance import ModelProvenance

DEFAULT_MODALITIES = ("DX", "CR")
# What a chest radiograph arrives as; anything else a series holds is refused by the association.
IMAGE_STORAGE = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                 DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage)
# Every syntax the DICOM reader decodes: the PACS may send its files as stored, compressed or not.
RECEIVED_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSLossless, JPEGLSNearLossless,
                     JPEG2000Lossless, JPEG2000, RLELossless]
CHEST_SYNONYMS = frozenset({*CHEST_BODY_PARTS, "THORAX", "LUNG", "LUNGS"})
ALREADY_STORED = pacs_results.ALREADY_STORED
NON_IMAGE_MODALITIES = {"SR": "a structured report", "DOC": "a document (PDF)", "OT": "other (not an image)",
                        "KO": "a key-object selection", "PR": "a presentation state", "REG": "a registration"}


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
    manufacturer: str = ""
    description: str = ""

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
    stored: list[str] = field(default_factory=list)  # "SR", "overlay": what was stored back
    already: list[str] = field(default_factory=list)  # what the PACS held already (not sent again)

    def to_json(self) -> dict[str, Any]:
        """predict --json's line, plus where the image lives in the PACS (UIDs, never a patient attribute)."""
        line = self.prediction.to_json()
        line.update({"study_uid": self.series.study.uid, "series_uid": self.series.uid, "sop_uid": self.sop_uid})
        if self.stored:
            line["stored"] = list(self.stored)
        if self.already:
            line["already_stored"] = list(self.already)
        return line


# --------------------------------------------------------------------------- checking a node

def echo(node: Node, identity: access.Identity | None = None) -> None:
    """C-ECHO: raises PacsError unless the node answers. Needs the reader role, like a query."""
    with pacs_nodes.exchange("pacs.echo", node, identity, access.PACS_QUERY):
        ae = pacs_net.make_ae(node)
        ae.add_requested_context(Verification)
        with pacs_net.association(node, ae) as assoc:
            status = assoc.send_c_echo()
            if not status or status.Status != 0x0000:
                raise PacsError(f"the PACS {node} did not answer the echo")


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

    Needs the reader role and a configured node; one 'pacs.query' audit line with the number of studies found
    (no criteria values)."""
    with pacs_nodes.exchange("pacs.query", node, identity, access.PACS_QUERY) as line:
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
    for found in pacs_net.find(node, query):
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


def find_series(node: Node, study: Study, identity: access.Identity | None = None) -> list[Series]:
    """The series of ``study``, by number. Needs the reader role and a configured node; one 'pacs.query'
    audit line with the number of series found."""
    with pacs_nodes.exchange("pacs.query", node, identity, access.PACS_QUERY) as line:
        series = _find_series(node, study)
        line.note(counts={"series": len(series)})
        return series


def _find_series(node: Node, study: Study) -> list[Series]:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study.uid
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.BodyPartExamined = ""
    query.SeriesNumber = ""
    query.NumberOfSeriesRelatedInstances = ""
    query.Manufacturer = ""
    query.SeriesDescription = ""
    series = [Series(study=study, uid=str(d.SeriesInstanceUID), modality=str(d.get("Modality") or "").upper(),
                     body_part=str(d.get("BodyPartExamined") or "").strip().upper(), number=str(d.get("SeriesNumber") or ""),
                     images=_int(d.get("NumberOfSeriesRelatedInstances")),
                     manufacturer=str(d.get("Manufacturer") or ""), description=str(d.get("SeriesDescription") or ""))
              for d in pacs_net.find(node, query) if d.get("SeriesInstanceUID")]
    return sorted(series, key=lambda s: (_int(s.number) or 0, s.uid))


def chest_image_series(series: Sequence[Series], modalities: Sequence[str]) -> tuple[list[Series], list[Notice]]:
    """The series worth scoring, and a notice for each one left out (not an image, not the chest). This
    workbench's own results are left out without a notice: :func:`scan` counts them."""
    keep, notices = [], []
    for item in series:
        if _is_own(item):
            continue
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

    Needs the reader role and a configured node; one 'pacs.retrieve' audit line with the number of images."""
    with pacs_nodes.exchange("pacs.retrieve", node, identity, access.PACS_QUERY) as line:
        received, notices = _retrieve(node, series, sop_uid)
        line.note(counts={"images": len(received)})
        return received, notices


def _retrieve(node: Node, series: Series, sop_uid: str | None) -> tuple[list[Dataset], list[Notice]]:
    ae = pacs_net.make_ae(node)
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
    with pacs_net.association(node, ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        if not pacs_net.accepted(assoc, StudyRootQueryRetrieveInformationModelGet):
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

    Store-back changes the PACS: admin only (``identity`` is who asks; from a terminal, the OS user) and a
    configured node, checked before any connection. An instance the PACS already holds is not sent again:
    its outcome is pacs_results.ALREADY_STORED. One 'pacs.store' audit line with the counts.
    """
    if not datasets:
        return []
    with pacs_nodes.exchange("pacs.store", node, identity, access.PACS_STORE) as line:
        outcomes = _store(node, datasets)
        already = sum(o == ALREADY_STORED for o in outcomes)
        line.note(counts={"stored": sum(o is None for o in outcomes), "already": already,
                          "refused": sum(o is not None for o in outcomes) - already})
        return outcomes


def _store(node: Node, datasets: Sequence[Dataset]) -> list[str | None]:
    ae = pacs_net.make_ae(node)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)  # to ask whether it holds them already
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    outcomes: list[str | None] = []
    with pacs_net.association(node, ae) as assoc:
        for dataset in datasets:
            kind = _kind(dataset)
            if not pacs_net.accepted(assoc, str(dataset.SOPClassUID)):
                outcomes.append(f"the PACS does not accept {kind} objects")
                continue
            if pacs_results.already_stored(assoc, dataset):
                outcomes.append(ALREADY_STORED)
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
         model: ModelProvenance | None = None, identity: access.Identity | None = None) -> Iterator[Scored | Notice]:
    """Fetch and score every chest image of ``studies``, series by series; store results back when asked.

    Yields a Scored per image (its prediction may be an error) and a Notice for everything left out; this
    workbench's own result series are left out quietly and counted in one notice at the end. Scoring is
    audited like Diagnose's ('score': model, operating point, counts), as who asks (``identity``; from a
    terminal, the OS user).
    """
    if store_results and model is None:
        raise ValueError("storing results needs the model's provenance (provenance.of_model)")
    identity = access.acting(identity, "pacs.query")
    own = 0
    for study in studies:
        try:
            found = find_series(node, study, identity=identity)
        except PacsError as error:
            yield Notice(f"{study.label}: its series could not be listed: {error}")
            continue
        own += sum(_is_own(item) for item in found)
        series_list, notices = chest_image_series(found, modalities)
        yield from notices
        if not series_list:
            yield Notice(f"{study.label}: no chest image series to score")
            continue
        for series in series_list:
            yield from _scan_series(node, predictor, series, skip, cam, store_results, model, identity)
    if own:
        yield Notice(f"left out {own} series of this workbench's own results (SR and heat maps)")


def _scan_series(node: Node, predictor: Predictor, series: Series, skip: SkipNonFrontal | None, cam: str | None,
                 store_results: bool, model: ModelProvenance | None, identity: access.Identity
                 ) -> Iterator[Scored | Notice]:
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
    for prediction in predictor.predict_sources(sources, skip=skip, cam=cam, identity=identity):
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


def _store_back(node: Node, scored: Scored, model: ModelProvenance | None, identity: access.Identity
                ) -> Iterator[Notice]:
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
        elif failure == ALREADY_STORED:
            scored.already.append(_kind(dataset))
        else:
            yield Notice(f"{name}: {failure}")


def _is_own(series: Series) -> bool:
    return pacs_results.is_own(series.modality, series.manufacturer, series.description)


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
