"""Every scored film leaves a row in the store: what the model answered, with which model and point, never a
file name, patient identifier or pixels; and a store that fails says so instead of dropping the row in silence.

Diagnose, the Worklist / ``pacs`` and ``predict --record`` all record through :func:`record`, so the rows agree
whatever scored the film. Writing is one short transaction per batch (SQLite: WAL, no fsync per row), a few
milliseconds against the hundreds a film takes to score (``benchmarks/bench_record.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import sqlalchemy.exc as sa_exc

from xraycore.clinical.site_store import open_site_store, site_name
from xraycore.inference.prediction import Prediction
from xraycore.store.database import Store, StoreUnavailable
from xraycore.store.schema import SOURCES
from xraycore.store.scored_films import record_scored_films

GUARD_CODES = {"non_frontal": "view", "age_outside_range": "age", "non_chest": "body_part"}
NOT_RECORDED = "This film was not recorded for monitoring"


@dataclass(frozen=True)
class Recorded:
    """How many films were recorded, and, when the store failed, the one sentence to show (None when all went in)."""

    count: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def monitoring_store(url: str | None = None) -> Store:
    """The store scored films go to: ``url``, else ``$XRAY_DB_URL``, else ``xray.db`` beside the runs folder
    (the same one the reads go to: :func:`xraycore.clinical.site_store.open_site_store`)."""
    return open_site_store(url)


def positive_logit(prediction: Prediction) -> float | None:
    """The positive-minus-negative logit before the temperature (what PSI is computed on); None if not binary."""
    classes = list(prediction.probabilities)
    if prediction.logits is None or prediction.positive_class not in classes or len(classes) != 2:
        return None
    positive = classes.index(prediction.positive_class)
    return float(prediction.logits[positive] - prediction.logits[1 - positive])


def guard_codes(prediction: Prediction) -> list[str]:
    """Short codes of the intended-use guards the film tripped (view, age, body_part): never the values."""
    guards = prediction.metadata.get("dicom_guards") or {}
    return [code for key, code in GUARD_CODES.items() if guards.get(key)] if prediction.guards else []


def row_of(prediction: Prediction, source: str, site: str | None, model: Mapping[str, Any]) -> dict[str, Any]:
    """The scored-films row of one scored film. ``model`` is audit.model_info's name, version and sha256; the film
    is known by the Predictor's key (``Prediction.film_sha256``), the one the reads know it by."""
    return {"site": site, "source": source, "model_name": model.get("name"), "model_version": model.get("version"),
            "weights_sha256": model.get("sha256"), "operating_point": prediction.operating_point,
            "backend": prediction.backend, "logit": positive_logit(prediction),
            "probability": prediction.positive_probability, "ai_call": prediction.label,
            "ood_score": prediction.ood_score, "ood_flag": bool(prediction.out_of_domain),
            "warnings": guard_codes(prediction), "film_sha256": prediction.film_sha256}


def record(predictions: Sequence[Prediction], source: str, model: Mapping[str, Any], *, site: str | None = None,
           store: Store | str | None = None) -> Recorded:
    """Record the scored films among ``predictions`` (unreadable ones were never scored), in one transaction.

    Never raises for a store that fails: the result carries one sentence for the caller to show beside the
    answer ("This film was not recorded for monitoring: ..."), so scoring goes on and nothing is dropped in
    silence. ``store``: an opened store or a URL.
    """
    if source not in SOURCES:
        raise ValueError(f"source is one of {', '.join(SOURCES)}, not {source!r}")
    rows = [row_of(p, source, site if site is not None else site_name(), model) for p in predictions if p.ok]
    if not rows:
        return Recorded(0)
    what = NOT_RECORDED if len(rows) == 1 else f"These {len(rows)} films were not recorded for monitoring"
    try:
        opened = store if isinstance(store, Store) else monitoring_store(store)
        return Recorded(record_scored_films(opened, rows))
    except StoreUnavailable as error:
        return Recorded(0, f"{what}: {error}")
    except sa_exc.SQLAlchemyError as error:
        return Recorded(0, f"{what}: the store refused the row ({type(error).__name__}).")
    except OSError as error:
        return Recorded(0, f"{what}: the store's file could not be written ({error.strerror or error}).")


class Recorder:
    """Records a run of scored films (a ``predict --record`` call, a PACS scan) into one store opened once: a
    store that cannot be opened is tried once, and every film then says it was not recorded, without waiting
    on the database again for each one."""

    def __init__(self, source: str, model: Mapping[str, Any], *, site: str | None = None,
                 store: Store | str | None = None) -> None:
        self.source, self.model, self.site = source, dict(model), site
        self._store: Store | None = store if isinstance(store, Store) else None
        self._problem: str | None = None
        if self._store is None:
            try:
                self._store = monitoring_store(store)
            except StoreUnavailable as error:
                self._problem = str(error)

    def record(self, predictions: Sequence[Prediction]) -> Recorded:
        """:func:`record` into this recorder's store; the open failure's sentence when it could not be opened."""
        if self._store is None:
            scored = sum(p.ok for p in predictions)
            what = NOT_RECORDED if scored == 1 else f"These {scored} films were not recorded for monitoring"
            return Recorded(0, f"{what}: {self._problem}") if scored else Recorded(0)
        return record(predictions, self.source, self.model, site=self.site, store=self._store)
