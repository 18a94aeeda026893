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


def main() -> None:
    """Run the migrations: on the connection open_store hands in, else on ``-x url=...``."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(context.get_x_argument(as_dictionary=True)["url"])  # the alembic command line
    with engine.begin() as opened:
        _run(opened)


try:
    _running_under_alembic = context.config is not None
except AttributeError:  # imported outside Alembic (the layout test imports every module): nothing to run
    _running_under_alembic = False
if _running_under_alembic:
    main()
