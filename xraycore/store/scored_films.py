"""A row per scored film (issue 30's monitoring): recorded, and read back as numpy columns.

Never a file name, a patient identifier or pixels: what the model answered, with which model and point, and
the film's pixel sha256 (to join the reads for realised accuracy). :func:`scored_rows` selects columns, not
ORM objects, so the monitor reads a hundred thousand rows in well under a second.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import sqlalchemy as sa

from xraycore.common.timestamps import utc_now
from xraycore.store.database import Store
from xraycore.store.schema import SOURCES, scored_films

FIELDS = ("created", "site", "source", "model_name", "model_version", "weights_sha256", "operating_point",
          "backend", "logit", "probability", "ai_call", "ood_score", "ood_flag", "warnings", "film_sha256")
FLOAT_FIELDS = ("logit", "probability", "ood_score")


def record_scored_film(store: Store, row: Mapping[str, Any]) -> int:
    """Append one scored film (keys of :data:`FIELDS`; ``created`` defaults to now, ``warnings`` may be a list
    of short codes). Returns its id."""
    with store.writing() as connection:
        return connection.execute(sa.insert(scored_films).returning(scored_films.c.id), _row(row)).scalar_one()


def record_scored_films(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append many scored films in one transaction; returns how many."""
    prepared = [_row(row) for row in rows]
    if prepared:
        with store.writing() as connection:
            connection.execute(sa.insert(scored_films), prepared)
    return len(prepared)


def scored_rows(store: Store, since: dt.datetime | None = None, until: dt.datetime | None = None,
                columns: Sequence[str] = FIELDS) -> dict[str, np.ndarray]:
    """The scored films from ``since`` (inclusive) to ``until`` (exclusive), oldest first, as one numpy array
    per column: floats (NaN where null), ``ood_flag`` bool, ``created`` datetime64[us] in UTC, others object."""
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown column(s): {', '.join(sorted(unknown))}")
    table = scored_films.c
    query = sa.select(*(table[name] for name in columns)).order_by(table.created, table.id)
    if since is not None:
        query = query.where(table.created >= since)
    if until is not None:
        query = query.where(table.created < until)
    with store.reading() as connection:
        rows = connection.execute(query).all()
    values = list(zip(*rows)) if rows else [() for _ in columns]
    return {name: _column(name, found) for name, found in zip(columns, values)}


def _column(name: str, values: Sequence[Any]) -> np.ndarray:
    if name in FLOAT_FIELDS:
        return np.array([np.nan if value is None else value for value in values], dtype=np.float64)
    if name == "ood_flag":
        return np.array(values, dtype=bool)
    if name == "created":
        return np.array([value.replace(tzinfo=None) for value in values], dtype="datetime64[us]")
    return np.array(values, dtype=object)


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown scored-film field(s): {', '.join(sorted(unknown))}")
    if row.get("source") not in SOURCES:
        raise ValueError(f"a scored film's source is one of {', '.join(SOURCES)}")
    prepared = {name: row.get(name) for name in FIELDS}
    prepared["created"] = prepared["created"] or utc_now()
    prepared["ood_flag"] = bool(prepared["ood_flag"])
    warnings = prepared["warnings"]
    if warnings is not None and not isinstance(warnings, str):
        prepared["warnings"] = ",".join(warnings) or None
    return prepared
