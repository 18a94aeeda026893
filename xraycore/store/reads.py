"""Radiologists' reads in the store: added, corrected (a new row supersedes the old), deleted (a tombstone
row, and the film's kept pixels removed), and listed.

Plain functions over a :class:`~xraycore.store.database.Store` and no access checks (the store imports
nothing of ours but common): :mod:`xraycore.clinical.site_reads` is the product's door, which checks who acts
and audits. Nothing here ever rewrites or removes a read row: the history of every film's reads stays, and
"current reads" are those no later row supersedes.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

import numpy as np
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from xraycore.common.timestamps import utc_now
from xraycore.store.database import Store
from xraycore.store.schema import CORRECTION_KIND, DELETE_KIND, READ_KIND, film_pixels, reads

MODEL_FACTS = ("model_name", "model_version", "weights_sha256", "operating_point", "probability", "ai_call")


class ReadNotCurrent(ValueError):
    """The read asked for does not exist, or was already corrected or deleted: one plain sentence."""


def add_read(store: Store, *, film_sha256: str, read: str, reader: str, role: str | None = None,
             agrees: bool | None = None, reference: str | None = None, heatmap_on_region: bool | None = None,
             site: str | None = None, pixels: np.ndarray | None = None, created: dt.datetime | None = None,
             **model_facts: Any) -> int:
    """Append a read of the film ``film_sha256`` (model facts: :data:`MODEL_FACTS`); keep ``pixels`` (grey
    uint8 at the network input size) with it when given. Returns the read's id."""
    unknown = set(model_facts) - set(MODEL_FACTS)
    if unknown:
        raise TypeError(f"unknown read field(s): {', '.join(sorted(unknown))}")
    row = {"kind": READ_KIND, "supersedes": None, "film_sha256": film_sha256, "read": read, "reader": reader,
           "role": role, "agrees": agrees, "reference": reference, "heatmap_on_region": heatmap_on_region,
           "site": site, "created": created or utc_now(), **{key: model_facts.get(key) for key in MODEL_FACTS}}
    with store.writing() as connection:
        read_id = connection.execute(sa.insert(reads).returning(reads.c.id), row).scalar_one()
        if pixels is not None:
            _keep_pixels(connection, film_sha256, pixels)
    return read_id


def correct(store: Store, read_id: int, *, read: str, reader: str, role: str | None = None,
            reference: str | None = None, heatmap_on_region: bool | None = None,
            created: dt.datetime | None = None) -> int:
    """Supersede the current read ``read_id`` with a corrected one (the original row is never touched); the
    film and model facts carry over, ``agrees`` is the new read against the model's call. Returns the new id."""
    with store.writing() as connection:
        old = _current_row(connection, read_id)
        agrees = None if old["ai_call"] is None else read == old["ai_call"]
        row = {**{key: old[key] for key in (*MODEL_FACTS, "film_sha256", "site")}, "kind": CORRECTION_KIND,
               "supersedes": read_id, "read": read, "reader": reader, "role": role, "agrees": agrees,
               "reference": reference, "heatmap_on_region": heatmap_on_region, "created": created or utc_now()}
        return _insert_successor(connection, row, read_id)


def delete_read(store: Store, read_id: int, *, reader: str, role: str | None = None,
                created: dt.datetime | None = None) -> int:
    """Delete the current read ``read_id``: a tombstone row supersedes it and the film's kept pixels are
    removed. Returns the tombstone's id."""
    with store.writing() as connection:
        old = _current_row(connection, read_id)
        row = {**{key: None for key in (*MODEL_FACTS, "read", "agrees", "reference", "heatmap_on_region")},
               "kind": DELETE_KIND, "supersedes": read_id, "film_sha256": old["film_sha256"], "site": old["site"],
               "reader": reader, "role": role, "created": created or utc_now()}
        tombstone = _insert_successor(connection, row, read_id)
        connection.execute(sa.delete(film_pixels).where(film_pixels.c.film_sha256 == old["film_sha256"]))
    return tombstone


def get_read(store: Store, read_id: int) -> dict[str, Any] | None:
    """One read row by id (whatever its kind), or None."""
    with store.reading() as connection:
        found = connection.execute(sa.select(reads).where(reads.c.id == read_id)).mappings().first()
    return None if found is None else dict(found)


def current_reads(store: Store, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The reads that stand: not tombstones, and superseded by no later row; ``since`` keeps those made then
    or after. Oldest first."""
    query = sa.select(reads).where(reads.c.kind != DELETE_KIND, ~_superseded(reads.c.id)).order_by(reads.c.id)
    if since is not None:
        query = query.where(reads.c.created >= since)
    with store.reading() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def all_reads(store: Store) -> list[dict[str, Any]]:
    """Every row, corrections and tombstones included, oldest first: the full history."""
    with store.reading() as connection:
        return [dict(row) for row in connection.execute(sa.select(reads).order_by(reads.c.id)).mappings()]


def kept_pixels(store: Store, film_sha256: str) -> np.ndarray | None:
    """The kept pixels of a film (grey, at the network input size), or None when they are not kept."""
    with store.reading() as connection:
        found = connection.execute(sa.select(film_pixels).where(film_pixels.c.film_sha256 == film_sha256)
                                   ).mappings().first()
    if found is None:
        return None
    return np.frombuffer(found["data"], dtype=found["dtype"]).reshape(found["height"], found["width"]).copy()


def kept_films(store: Store, films: Iterable[str] | None = None) -> set[str]:
    """The sha256 of every film whose pixels are kept (of ``films``, when given)."""
    query = sa.select(film_pixels.c.film_sha256)
    with store.reading() as connection:
        kept = set(connection.execute(query).scalars())
    return kept if films is None else kept & set(films)


def _superseded(read_id: sa.ColumnElement) -> sa.ColumnElement:
    later = reads.alias("later")
    return sa.exists(sa.select(later.c.id).where(later.c.supersedes == read_id))


def _current_row(connection: sa.Connection, read_id: int) -> dict[str, Any]:
    row = connection.execute(sa.select(reads).where(reads.c.id == read_id)).mappings().first()
    if row is None or row["kind"] == DELETE_KIND:
        raise ReadNotCurrent(f"There is no read number {read_id}.")
    if connection.execute(sa.select(_superseded(reads.c.id)).where(reads.c.id == read_id)).scalar():
        raise ReadNotCurrent(f"Read number {read_id} was already corrected or deleted; change its latest version.")
    return dict(row)


def _insert_successor(connection: sa.Connection, row: dict[str, Any], read_id: int) -> int:
    try:
        with connection.begin_nested():
            return connection.execute(sa.insert(reads).returning(reads.c.id), row).scalar_one()
    except sa_exc.IntegrityError as error:  # someone else superseded it first (supersedes is unique)
        raise ReadNotCurrent(f"Read number {read_id} was just changed by someone else; "
                             f"change its latest version.") from error


def _keep_pixels(connection: sa.Connection, film_sha256: str, pixels: np.ndarray) -> None:
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError("kept pixels are one grey uint8 image")
    present = connection.execute(sa.select(film_pixels.c.film_sha256)
                                 .where(film_pixels.c.film_sha256 == film_sha256)).first()
    if present is None:
        connection.execute(sa.insert(film_pixels), {
            "film_sha256": film_sha256, "height": pixels.shape[0], "width": pixels.shape[1],
            "dtype": pixels.dtype.str, "data": pixels.tobytes(), "created": utc_now()})
