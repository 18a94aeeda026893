"""The store's backends for tests: a fresh SQLite file always, and a fresh PostgreSQL database per test when
``$XRAY_TEST_POSTGRES_URL`` names a server (``source .ci/postgres.sh`` starts one). Under ``$CI`` (set, not false) a missing
URL fails the PostgreSQL tests instead of skipping them: CI must run them."""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

POSTGRES_ENV = "XRAY_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_server_url() -> str:
    """The test server's URL; skipped locally without one, failed under CI=true."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    message = f"${POSTGRES_ENV} is not set: start a throw-away server with `source .ci/postgres.sh`"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):  # as the other suites read $CI
        pytest.fail(message + " (CI runs the PostgreSQL tests; they may not skip there)")
    pytest.skip(message)


def _admin(url: str):
    import sqlalchemy as sa

    return sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"),
                            isolation_level="AUTOCOMMIT")


def fresh_postgres_url() -> Iterator[str]:
    """A new database on the test server, dropped afterwards."""
    import sqlalchemy as sa

    server = postgres_server_url()
    name = f"xray_t_{uuid.uuid4().hex[:12]}"
    admin = _admin(server)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        from xraycore.store import database

        for opened_url, store in list(database._opened.items()):
            if name in opened_url:
                store.close()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def fresh_url(backend: str, tmp_path) -> Iterator[str]:
    if backend == "postgresql":
        yield from fresh_postgres_url()
        return
    url = f"sqlite:///{tmp_path / 'store' / 'xray.db'}"
    yield url
    from xraycore.store import database

    if url in database._opened:
        database._opened[url].close()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty store's URL on each backend."""
    yield from fresh_url(request.param, tmp_path)


@pytest.fixture
def store(store_url):
    from xraycore.store.database import open_store

    return open_store(store_url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (failed under CI=true without a server, skipped elsewhere)."""
    yield from fresh_postgres_url()
