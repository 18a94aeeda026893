"""A PACS connection (DICOM networking through pynetdicom): check a node, find chest studies and their series,
fetch images, store results back.

C-FIND at study level (since a date, by modality), then at series level (modality and body part: SR, PDF
and other non-image series, and non-chest series, are left out with a message); C-GET per series into
memory (nothing is written to disk); C-STORE of the SR and the overlay capture (dicom_out). Scoring what
was fetched, and filing its results back, is :mod:`pacs_scan`'s: this module stays networking only.

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
from dataclasses import dataclass
from typing import Any, Sequence

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
from xraycore.reading_room import pacs_net
from xraycore.reading_room import pacs_nodes
from xraycore.reading_room import pacs_results
from xraycore.io.image import CHEST_BODY_PARTS
from xraycore.reading_room.pacs_net import PacsError  # noqa: F401 - pacs.PacsError for callers
from xraycore.reading_room.pacs_nodes import Node  # pacs.Node for callers too

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
                  description=str(d.get("StudyDescription") or "")[:64], images=dicom_int(d.get("NumberOfStudyRelatedInstances")))
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
                     images=dicom_int(d.get("NumberOfSeriesRelatedInstances")),
                     manufacturer=str(d.get("Manufacturer") or ""), description=str(d.get("SeriesDescription") or ""))
              for d in pacs_net.find(node, query) if d.get("SeriesInstanceUID")]
    return sorted(series, key=lambda s: (dicom_int(s.number) or 0, s.uid))


def chest_image_series(series: Sequence[Series], modalities: Sequence[str]) -> tuple[list[Series], list[Notice]]:
    """The series worth scoring, and a notice for each one left out (not an image, not the chest). This
    workbench's own results are left out without a notice: :func:`pacs_scan.scan` counts them."""
    keep, notices = [], []
    for item in series:
        if is_own_series(item):
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
            failed = max(failed, dicom_int(status.get("NumberOfFailedSuboperations")) or 0)
            if code not in (0x0000, 0xFF00, 0xB000):
                notices.append(Notice(f"{series.label}: the PACS refused to send it (status 0x{code:04X})"))
        if failed:
            notices.append(Notice(f"{series.label}: {failed} object(s) were not sent: not a kind of image read "
                                  "here (a report, a PDF, ...)"))
    return received, notices


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
            kind = result_kind(dataset)
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


def result_kind(dataset: Dataset) -> str:
    """What a result dataset is called in messages and in Scored.stored: "SR", "overlay" (else "result")."""
    return {ComprehensiveSRStorage: "SR", SecondaryCaptureImageStorage: "overlay"}.get(str(dataset.SOPClassUID),
                                                                                    "result")


def is_own_series(series: Series) -> bool:
    """A series of this workbench's own results (SR, heat maps): never scored, counted by pacs_scan.scan."""
    return pacs_results.is_own(series.modality, series.manufacturer, series.description)


def _values(value: Any) -> list[Any]:
    """A DICOM value as a list: empty, one value, or a multi-value."""
    if value in (None, ""):
        return []
    return [value] if isinstance(value, str) else list(value)


def dicom_int(value: Any) -> int | None:
    """A DICOM integer string (IS) as an int; None when absent or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
