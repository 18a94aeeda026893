"""Settings kept in the store (such as "keep read films for site learning"): every change is a new row, so the
history stays and the latest row wins.

In the database rather than a file so that several app instances on one PostgreSQL server agree. Who may
change a setting, and the audit line, belong to the caller (:mod:`xraycore.clinical.site_reads`).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from xraycore.common.timestamps import utc_now
from xraycore.store.database import Store
from xraycore.store.schema import settings


def get_setting(store: Store, key: str) -> str | None:
    """The latest value of ``key``, or None when it was never set."""
    query = sa.select(settings.c.value).where(settings.c.key == key).order_by(settings.c.id.desc()).limit(1)
    with store.reading() as connection:
        return connection.execute(query).scalar()


def set_setting(store: Store, key: str, value: str, changed_by: str, changed: dt.datetime | None = None) -> int:
    """Record ``key = value`` as changed by ``changed_by`` now; returns the row's id."""
    with store.writing() as connection:
        return connection.execute(sa.insert(settings).returning(settings.c.id), {
            "key": key, "value": value, "changed_by": changed_by, "changed": changed or utc_now()}).scalar_one()


def setting_history(store: Store, key: str) -> list[dict[str, Any]]:
    """Every change of ``key``, oldest first: value, who changed it, when."""
    query = sa.select(settings.c.value, settings.c.changed_by, settings.c.changed).where(
        settings.c.key == key).order_by(settings.c.id)
    with store.reading() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]
