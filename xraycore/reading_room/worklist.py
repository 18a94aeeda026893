"""The triage worklist behind the Worklist page: a PACS's chest images, scored, most probable first.

Each entry keeps what a browser session can afford (display.DisplayResult: small pictures, no metadata)
plus the image's header without pixels, which carries the patient module its results must copy when
they are sent back. Headers never reach the page's table: rows name images by study position, date,
series and number. No Streamlit here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from pydicom import Dataset

from xraycore.access import policy as access
from xraycore.clinical import triage
from xraycore.inference import display
from xraycore.reading_room import dicom_out
from xraycore.explain import cam as explain
from xraycore.reading_room import pacs
from xraycore.reading_room import pacs_scan
from xraycore.inference.provenance import ModelProvenance


@dataclass
class Entry:
    """One scored image of the worklist."""

    series: pacs.Series
    sop_uid: str
    result: display.DisplayResult
    header: Dataset | None = None
    stored: bool = False

    @property
    def name(self) -> str:
        return self.result.name


def study_rows(studies: Sequence[pacs.Study]) -> list[dict[str, Any]]:
    """The table of studies found: place in the list, date, time, modalities, images, description (no patient
    attribute: the query asks for none)."""
    return [{"study": study.index, "date": _day(study.date),
             "time": ":".join([study.time[:2], study.time[2:4]]) if len(study.time) >= 4 else "",
             "modalities": ", ".join(study.modalities), "images": study.images, "description": study.description}
            for study in studies]


def _day(date: str) -> str:
    """A DICOM date (YYYYMMDD) as ISO; anything else as it came."""
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else date


def collect(items: Iterable[pacs_scan.Scored | pacs.Notice], on_item: Callable[[int], None] | None = None
            ) -> tuple[list[Entry], list[str]]:
    """Entries and notices of a pacs_scan.scan, shrunk for the session as they arrive."""
    entries: list[Entry] = []
    notices: list[str] = []
    for item in items:
        if isinstance(item, pacs.Notice):
            notices.append(item.message)
            continue
        entries.append(Entry(series=item.series, sop_uid=item.sop_uid, result=display.for_display(item.prediction),
                             header=item.header, stored=bool(item.stored)))
        if on_item is not None:
            on_item(len(entries))
    return entries, notices


def ordered(entries: Sequence[Entry]) -> list[Entry]:
    """Triage order: most probable first, failed images last."""
    return sorted(entries, key=lambda entry: triage.triage_key(entry.result))


def rows(entries: Sequence[Entry], threshold: float | None) -> list[dict[str, Any]]:
    """The table: the image's place in the PACS, flag, call, probabilities, warnings (no patient attribute)."""
    table = display.summary_rows([entry.result for entry in entries], threshold)
    for row, entry in zip(table, entries):
        row["file"] = entry.name
        row["results sent"] = "yes" if entry.stored else ""
    return [{"image": row.pop("file"), **row} for row in table]


def results_of(entry: Entry, threshold: float | None, operating_point: str | None, model: ModelProvenance,
               alpha: float = 0.4) -> list[Dataset]:
    """The SR and the overlay capture of one entry, at the session's threshold and opacity."""
    if entry.header is None:
        raise dicom_out.DicomOutError(f"{entry.name}: the image lacks the UIDs a result must refer to")
    finding = dicom_out.Finding.from_display(entry.result, threshold, operating_point)
    overlay = None
    if entry.result.image is not None and entry.result.heatmap is not None:
        overlay = explain.overlay(entry.result.image / 255.0, entry.result.heatmap.astype(np.float32), alpha=alpha)
    return dicom_out.results_for(entry.header, finding, overlay, model)


@dataclass
class Sent:
    """What one click on "Send results" did: images whose results were stored, images whose results the
    PACS held already (not sent again: once per image and model version), problems in words."""

    stored: int = 0
    already: int = 0
    problems: list[str] = field(default_factory=list)


def send_back(node: pacs.Node, entries: Sequence[Entry], threshold: float | None, operating_point: str | None,
              model: ModelProvenance, alpha: float = 0.4, identity: access.Identity | None = None) -> Sent:
    """Store every scored entry's results in the PACS, unless it holds them already. Goes on past failures.

    ``identity``: who asks (the app's sign-in); pacs.store refuses anyone but an admin before connecting.
    """
    sent = Sent()
    for entry in entries:
        if not entry.result.ok:
            continue
        try:
            outcomes = pacs.store(node, results_of(entry, threshold, operating_point, model, alpha), identity=identity)
        except (dicom_out.DicomOutError, pacs.PacsError) as error:
            sent.problems.append(f"{entry.name}: {error}")
            continue
        failures = [outcome for outcome in outcomes if outcome and outcome != pacs.ALREADY_STORED]
        sent.problems += [f"{entry.name}: {failure}" for failure in failures]
        if not failures:
            entry.stored = True
            if any(outcome is None for outcome in outcomes):
                sent.stored += 1
            else:
                sent.already += 1
    return sent


def fetch(node: pacs.Node, entry: Entry, identity: access.Identity | None = None) -> dicom_out.PacsFilm:
    """The entry's image, fetched again (C-GET) as a file in memory: what Diagnose opens (marked as a PACS
    film, whose DICOM results only someone who may retrieve from the PACS may download)."""
    datasets, notices = pacs.retrieve(node, entry.series, entry.sop_uid, identity=identity)
    if not datasets:
        reason = notices[0].message if notices else "the PACS sent nothing"
        raise pacs.PacsError(f"{entry.name} could not be fetched: {reason}")
    buffer = dicom_out.PacsFilm()
    datasets[0].save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer
