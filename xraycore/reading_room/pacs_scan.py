"""The whole round on a PACS: find the chest series of some studies, fetch them, score every image through the
Predictor, and (when asked) file each result back: what ``python -m xraycore pacs`` and the Worklist page run.

Apart from :mod:`pacs`, which is DICOM networking only (query, retrieve, store, each checked and audited),
because this is where networking meets scoring and the DICOM results (dicom_out). Every exchange goes
through pacs's functions, so each is role-checked and audited as when called on its own.

Trouble with one study, series or image becomes a :class:`pacs.Notice` and the batch goes on; images are
named by study position, date, series and number, never by a patient attribute.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from pydicom import Dataset

from xraycore.access import policy as access
from xraycore.inference.prediction import Prediction
from xraycore.inference.predictor import Predictor
from xraycore.inference.provenance import ModelProvenance
from xraycore.io.intended_use import SkipNonFrontal
from xraycore.monitoring.recording import Recorder
from xraycore.reading_room import dicom_out
from xraycore.reading_room import pacs
from xraycore.reading_room.pacs import DEFAULT_MODALITIES, Node, Notice, PacsError, Series, Study


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


def scan(node: Node, predictor: Predictor, studies: Sequence[Study], *, modalities: Sequence[str] = DEFAULT_MODALITIES,
         skip: SkipNonFrontal | None = None, cam: str | None = "gradcam", store_results: bool = False,
         model: ModelProvenance | None = None, identity: access.Identity | None = None,
         recorder: Recorder | None = None) -> Iterator[Scored | Notice]:
    """Fetch and score every chest image of ``studies``, series by series; store results back when asked.

    Yields a Scored per image (its prediction may be an error) and a Notice for everything left out; this
    workbench's own result series are left out quietly and counted in one notice at the end. Scoring is
    audited like Diagnose's ('score': model, operating point, counts), as who asks (``identity``; from a
    terminal, the OS user). With a ``recorder`` every scored image is recorded for monitoring; one that could
    not be recorded is a Notice, never dropped in silence.
    """
    if store_results and model is None:
        raise ValueError("storing results needs the model's provenance (provenance.of_model)")
    identity = access.acting(identity, "pacs.query")
    own = 0
    for study in studies:
        try:
            found = pacs.find_series(node, study, identity=identity)
        except PacsError as error:
            yield Notice(f"{study.label}: its series could not be listed: {error}")
            continue
        own += sum(pacs.is_own_series(item) for item in found)
        series_list, notices = pacs.chest_image_series(found, modalities)
        yield from notices
        if not series_list:
            yield Notice(f"{study.label}: no chest image series to score")
            continue
        for series in series_list:
            yield from _scan_series(node, predictor, series, skip, cam, store_results, model, identity, recorder)
    if own:
        yield Notice(f"left out {own} series of this workbench's own results (SR and heat maps)")


def _scan_series(node: Node, predictor: Predictor, series: Series, skip: SkipNonFrontal | None, cam: str | None,
                 store_results: bool, model: ModelProvenance | None, identity: access.Identity,
                 recorder: Recorder | None = None) -> Iterator[Scored | Notice]:
    """One series: fetched into memory, its images named and scored in order, results filed back when asked."""
    try:
        datasets, notices = pacs.retrieve(node, series, identity=identity)
    except PacsError as error:
        yield Notice(f"{series.label}: could not be fetched: {error}")
        return
    yield from notices
    if not datasets:
        yield Notice(f"{series.label}: the PACS sent no image")
        return
    datasets.sort(key=lambda d: (pacs.dicom_int(d.get("InstanceNumber")) or 0, str(d.get("SOPInstanceUID") or "")))
    named: dict[str, Dataset] = {}
    for position, dataset in enumerate(datasets, start=1):
        name = f"{series.label} / image {pacs.dicom_int(dataset.get('InstanceNumber')) or position}"
        named[name if name not in named else f"{name} ({position})"] = dataset  # numbers may repeat
    sources = ((name, _file_bytes(dataset)) for name, dataset in named.items())
    for prediction in predictor.predict_sources(sources, skip=skip, cam=cam, identity=identity):
        dataset = named[prediction.name]
        header = dicom_out.read_source(dataset) if prediction.ok and _has_uids(dataset) else None
        scored = Scored(series=series, sop_uid=str(dataset.get("SOPInstanceUID") or ""), prediction=prediction,
                        header=header)
        if recorder is not None and (recorded := recorder.record([prediction])).problem:
            yield Notice(f"{prediction.name}: {recorded.problem}")
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
        outcomes = pacs.store(node, results, identity=identity)
    except PacsError as error:
        yield Notice(f"{name}: results not stored: {error}")
        return
    for dataset, failure in zip(results, outcomes):
        if failure is None:
            scored.stored.append(pacs.result_kind(dataset))
        elif failure == pacs.ALREADY_STORED:
            scored.already.append(pacs.result_kind(dataset))
        else:
            yield Notice(f"{name}: {failure}")


def _file_bytes(dataset: Dataset) -> bytes:
    """A received dataset as a DICOM file in memory, as read_xray takes it."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _has_uids(dataset: Dataset) -> bool:
    """Whether a result can refer to this image: the UIDs an SR and a capture must copy."""
    return all(dataset.get(key) for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))
