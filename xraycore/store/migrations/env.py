"""Alembic's environment for the store: migrations run on the connection :func:`database.open_store` hands in.

No ``alembic.ini`` and no logging setup: the product upgrades its own database programmatically when it
opens the store; a developer may still run ``alembic`` with ``-x url=...`` through the same file.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from xraycore.store.schema import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command line: alembic -x url=sqlite:///xray.db upgrade head
    engine = sa.create_engine(context.get_x_argument(as_dictionary=True)["url"])
    with engine.begin() as opened:
        _run(opened)
