"""This workbench's own results in a PACS: recognised when a study is listed, and never filed twice.

A study scored before holds our SR and heat-map series: listing it again must not offer them as films to
read (:mod:`pacs` leaves them out quietly and counts them in one line). Sending results again must not
store a second copy: each result's UIDs follow from the source image and the model version
(:func:`dicom_out.result_uids`), and before each C-STORE the PACS is asked whether it already holds that
instance (:func:`already_stored`). Kept apart from :mod:`pacs`, which is long enough.
"""
from __future__ import annotations

from pydicom import Dataset
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from xraycore.reading_room import dicom_out
from xraycore.reading_room import pacs_net

OWN_MODALITIES = frozenset({"SR", "OT"})  # a Comprehensive SR; a Secondary Capture of the overlay
OWN_DESCRIPTIONS = frozenset({dicom_out.SR_SERIES_DESCRIPTION, dicom_out.SC_SERIES_DESCRIPTION})
ALREADY_STORED = "already in the PACS: not sent again"


def is_own(modality: str, manufacturer: str = "", description: str = "") -> bool:
    """True for a series dicom_out wrote: an SR or OT series naming this workbench as manufacturer, or
    carrying one of our series descriptions (a PACS may leave the manufacturer out of its answers)."""
    return modality.strip().upper() in OWN_MODALITIES and (
        manufacturer.strip() == dicom_out.MANUFACTURER or description.strip() in OWN_DESCRIPTIONS)


def already_stored(assoc: Association, dataset: Dataset) -> bool:
    """True when the PACS says it holds this instance (C-FIND at image level on the open association); False
    when it does not, or cannot say (it accepted no query context): then the result is sent."""
    find = StudyRootQueryRetrieveInformationModelFind
    if not pacs_net.accepted(assoc, find):
        return False
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = dataset.StudyInstanceUID
    query.SeriesInstanceUID = dataset.SeriesInstanceUID
    query.SOPInstanceUID = dataset.SOPInstanceUID
    found = False
    for status, identifier in assoc.send_c_find(query, find):  # read every answer: the exchange must end
        if getattr(status, "Status", None) in (0xFF00, 0xFF01) and identifier is not None:
            found = found or identifier.get("SOPInstanceUID") == dataset.SOPInstanceUID
    return found
