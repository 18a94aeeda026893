"""The store's tables (SQLAlchemy 2 Core): reads, scored films, kept film pixels, settings.

Apart from :mod:`database` so that the functions over each table (:mod:`reads`, :mod:`scored_films`) and the
migrations agree on one description. The migrations under ``migrations/versions`` create these tables; a
change here is a new migration there. What no table holds, by design: a file name, a patient identifier, a
DICOM header. A film is known only by the sha256 of its pixels at the network's input size.

``reads`` is append-only: a correction is a new row whose ``supersedes`` names the row it replaces, and
deleting a read is a tombstone row (``kind`` ``delete``) that supersedes it. "Current reads" are the rows of
kind ``read`` or ``correction`` that no later row supersedes; ``supersedes`` is unique, so each read has at
most one successor and two people correcting the same read at once cannot both win.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s",
})

READ_KIND, CORRECTION_KIND, DELETE_KIND = "read", "correction", "delete"
OTHER_FINDING, UNCERTAIN = "other", "uncertain"  # reads beside the model's own class names
REFERENCES = ("report", "CT", "follow-up", "consensus")  # what a read rests on (or null)
SOURCES = ("upload", "pacs", "cli")  # where a scored film came from
NAME = 200  # characters of a model, point, reader or site name


class UTCDateTime(sa.types.TypeDecorator):
    """An aware UTC datetime on both backends: PostgreSQL keeps ``timestamptz``; SQLite keeps the naive UTC
    wall time, which sorts and compares as text. Every read returns an aware datetime in UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store keeps aware UTC times only")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _model_columns() -> list[sa.Column]:
    """Which model answered: name, version, weights sha256, and the operating point or site profile."""
    return [sa.Column("model_name", sa.String(NAME)), sa.Column("model_version", sa.String(100)),
            sa.Column("weights_sha256", sa.String(64)), sa.Column("operating_point", sa.String(NAME))]


reads = sa.Table(
    "reads", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # read | correction | delete (a tombstone)
    sa.Column("supersedes", sa.Integer, sa.ForeignKey("reads.id"), unique=True),
    sa.Column("film_sha256", sa.String(64), nullable=False, index=True),
    *_model_columns(),
    sa.Column("probability", sa.Float),
    sa.Column("ai_call", sa.String(100)),
    sa.Column("agrees", sa.Boolean),
    sa.Column("read", sa.String(100)),  # a class name of the model, 'other' or 'uncertain'; null in a tombstone
    sa.Column("reference", sa.String(32)),  # report | CT | follow-up | consensus | null
    sa.Column("heatmap_on_region", sa.Boolean),
    sa.Column("reader", sa.String(NAME), nullable=False),
    sa.Column("role", sa.String(32)),
    sa.Column("created", UTCDateTime, nullable=False, index=True),
    sa.Column("site", sa.String(NAME)),
)

scored_films = sa.Table(
    "scored_films", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", UTCDateTime, nullable=False, index=True),
    sa.Column("site", sa.String(NAME)),
    sa.Column("source", sa.String(16), nullable=False),  # upload | pacs | cli
    *_model_columns(),
    sa.Column("backend", sa.String(32)),
    sa.Column("logit", sa.Float),  # the positive-minus-negative logit before the temperature
    sa.Column("probability", sa.Float),
    sa.Column("ai_call", sa.String(100)),
    sa.Column("ood_score", sa.Float),
    sa.Column("ood_flag", sa.Boolean, nullable=False),
    sa.Column("warnings", sa.String(200)),  # short guard codes joined by commas (view, age, body_part)
    sa.Column("film_sha256", sa.String(64), index=True),
)

film_pixels = sa.Table(
    "film_pixels", metadata,
    sa.Column("film_sha256", sa.String(64), primary_key=True),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("dtype", sa.String(16), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # grey uint8 at the network input size; no header
    sa.Column("created", UTCDateTime, nullable=False),
)

settings = sa.Table(
    "settings", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(100), nullable=False, index=True),
    sa.Column("value", sa.String(500), nullable=False),
    sa.Column("changed_by", sa.String(NAME), nullable=False),
    sa.Column("changed", UTCDateTime, nullable=False),
)
