"""The monitor over the store: a model's scored films since a date, cut into windows, against its reference, with
the reads joined for realised figures. What ``python -m xraycore monitor``, the Monitor page and Diagnose's admin
banner call.

Reads columns, never row objects (100,000 films well inside the 5 s budget, ``benchmarks/bench_monitor.py``).
Only the films scored by this model at the point that answers now are judged: another point's calls were made
at another threshold, against another reference.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xraycore.clinical import operating_points as operating
from xraycore.monitoring.figures import ScoredColumns, active_alerts, monitor_columns
from xraycore.monitoring.recording import monitoring_store
from xraycore.monitoring.reference import Reference
from xraycore.monitoring.reference_files import load_reference
from xraycore.store.database import Store
from xraycore.store.reads import current_reads
from xraycore.store.schema import OTHER_FINDING, UNCERTAIN
from xraycore.store.scored_films import scored_rows

COLUMNS = ("created", "model_name", "operating_point", "logit", "probability", "ai_call", "ood_flag", "warnings",
           "film_sha256")
NO_FILMS = "No films scored yet: the monitor starts once Diagnose, the Worklist or `predict --record` score films."


@dataclass
class MonitorReport:
    """The windows (dicts of :data:`figures.KEYS`), the alerts still active, and what was compared with what."""

    windows: list[dict[str, Any]]
    reference: str
    operating_point: str
    films: int
    alerts: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.windows


def parse_since(text: str | None) -> dt.datetime | None:
    """``--since``: an ISO date or date-time (UTC unless it says otherwise); ValueError with one sentence."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since takes a date such as 2026-11-29 or 2026-11-29T08:00, not {text!r}.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def columns_of(rows: dict[str, np.ndarray], positive_class: str) -> ScoredColumns:
    """Store columns (scored_films.scored_rows) as the figures' arrays."""
    calls = rows["ai_call"]
    seconds = rows["created"].astype("datetime64[us]").astype(np.int64) / 1e6
    warnings = rows["warnings"]
    return ScoredColumns(created=seconds, logit=rows["logit"], probability=rows["probability"],
                         called=np.not_equal(calls, None), positive=np.equal(calls, positive_class),
                         ood_flag=rows["ood_flag"], guard=np.not_equal(warnings, None) & np.not_equal(warnings, ""),
                         film=rows["film_sha256"])


def truth_by_film(store: Store, positive_class: str) -> dict[str, int]:
    """The current reads as 1 (the positive class) or 0 (the other class) by film; unsure and other findings left out."""
    truth = {}
    for read in current_reads(store):
        if read.get("film_sha256") and read.get("read") not in (OTHER_FINDING, UNCERTAIN):
            truth[read["film_sha256"]] = int(read["read"] == positive_class)
    return truth


def monitor(model_dir: str | Path, *, since: dt.datetime | None = None, window: str | int = "week",
            reference: str | None = None, store: Store | str | None = None) -> MonitorReport:
    """The monitor's windows for ``model_dir`` at its answering point; StoreUnavailable (one sentence) when the
    store cannot be read, ValueError when the model keeps no reference."""
    model_dir = Path(model_dir)
    answering = operating.active_name(model_dir)
    chosen: Reference = load_reference(model_dir, reference)
    opened = store if isinstance(store, Store) else monitoring_store(store)
    rows = scored_rows(opened, since, columns=COLUMNS)
    mine = (rows["model_name"] == model_dir.resolve().name) & (rows["operating_point"] == answering)
    rows = {name: values[mine] for name, values in rows.items()}
    truth = truth_by_film(opened, chosen.positive_class) if rows["created"].size else {}
    windows = monitor_columns(columns_of(rows, chosen.positive_class), chosen, window, truth)
    return MonitorReport(windows, chosen.source, answering, int(rows["created"].size), active_alerts(windows))
