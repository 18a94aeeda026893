"""Opening the store: the database URL, the engine (SQLite or PostgreSQL) and its schema upgraded to head.

One door so that every writer (the app, the CLI, several app instances on a PostgreSQL server) opens the
database the same way: ``$XRAY_DB_URL`` or a URL given, else a SQLite file ``xray.db`` beside the runs folder
the caller names (the store imports nothing of ours but :mod:`xraycore.common`, so the runs folder comes
from the caller: :func:`xraycore.clinical.site_store.open_site_store` passes it). SQLite runs in WAL mode with
a busy timeout and takes its write lock when a transaction begins (``BEGIN IMMEDIATE``), so two writers at
once wait for each other instead of failing, and nothing is lost. PostgreSQL is reached through psycopg 3
(``postgresql+psycopg://user:password@host:port/database``). The schema is upgraded programmatically with
Alembic (``migrations/``) under a lock, so two processes opening a new database at once migrate it once.

A database that is down, or a URL that is not one, raises :class:`StoreUnavailable` with one plain sentence
that never shows a password.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

DB_URL_ENV = "XRAY_DB_URL"
DEFAULT_DB_NAME = "xray.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_MS = 60_000  # a writer waits this long for another's transaction before giving up
CONNECT_TIMEOUT_S = 5
_MIGRATION_LOCK_KEY = 2_029_030  # PostgreSQL advisory lock held while the schema is upgraded
_URL_EXAMPLE = "sqlite:////path/to/xray.db or postgresql+psycopg://user:password@host:5432/xray"
_opened: dict[str, "Store"] = {}
_opening = threading.Lock()


class StoreUnavailable(RuntimeError):
    """The store's database cannot be used (down, unreachable, refused, or a URL that is not one): the message
    is one plain sentence without the password."""


@dataclass(frozen=True)
class Store:
    """An opened store: the engine, and where it is (said without the password)."""

    engine: sa.Engine
    where: str

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def writing(self) -> Iterator[sa.Connection]:
        """One transaction that writes (SQLite: the write lock is taken at its start); committed on success."""
        with self._failures():
            with self.engine.begin() as connection:
                yield connection

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """One transaction that only reads (SQLite: takes no write lock, so writers go on)."""
        with self._failures():
            with self.engine.connect() as connection:
                connection = connection.execution_options(xray_read_only=True)
                with connection.begin():
                    yield connection

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
            raise StoreUnavailable(_unreachable(self.where)) from error

    def close(self) -> None:
        """Close the engine's connections (the next :func:`open_store` of the same URL opens it afresh)."""
        with _opening:
            for url, store in list(_opened.items()):
                if store is self:
                    del _opened[url]
        self.engine.dispose()


def default_url(runs_dir: str | os.PathLike[str]) -> str:
    """A SQLite file ``xray.db`` beside the runs folder ``runs_dir`` (in its parent folder)."""
    path = Path(runs_dir).resolve().parent / DEFAULT_DB_NAME
    return f"sqlite:///{path}"


def store_url(url: str | None = None, runs_dir: str | os.PathLike[str] | None = None) -> str:
    """The URL to open: ``url``, else ``$XRAY_DB_URL``, else :func:`default_url` of ``runs_dir``."""
    chosen = url or os.environ.get(DB_URL_ENV)
    if chosen:
        return chosen
    if runs_dir is None:
        raise StoreUnavailable(f"No database is configured: set ${DB_URL_ENV} (for example {_URL_EXAMPLE}).")
    return default_url(runs_dir)


def open_store(url: str | None = None, *, runs_dir: str | os.PathLike[str] | None = None) -> Store:
    """The store at ``url`` (see :func:`store_url`), its schema upgraded to head; opened once per process."""
    chosen = store_url(url, runs_dir)
    with _opening:
        if chosen not in _opened:
            _opened[chosen] = _open(chosen)
        return _opened[chosen]


def _open(url: str) -> Store:
    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(parsed.get_backend_name())
        engine = _sqlite_engine(parsed) if parsed.get_backend_name() == "sqlite" else _postgres_engine(parsed)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ValueError, ImportError) as error:
        raise StoreUnavailable(f"The database URL is not one the store can open; it should look like "
                               f"{_URL_EXAMPLE}.") from error
    store = Store(engine, _where(parsed))
    try:
        _upgrade(store)
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DatabaseError) as error:
        engine.dispose()
        raise StoreUnavailable(_unreachable(store.where)) from error
    except StoreUnavailable:
        engine.dispose()
        raise
    return store


def _where(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"the SQLite file {url.database}" if url.database not in (None, "", ":memory:") else "SQLite in memory"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL at {url.host or 'localhost'}{port}/{url.database or ''}"


def _unreachable(where: str) -> str:
    return (f"The store's database ({where}) cannot be reached or refused the connection; check ${DB_URL_ENV} "
            f"and that the database server is running.")


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # transactions begun below, not by the driver
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={SQLITE_BUSY_MS}", "foreign_keys=ON",
                       "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        read_only = connection.get_execution_options().get("xray_read_only")
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: sa.URL) -> sa.Engine:
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3, the driver the locks install
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


def _upgrade(store: Store) -> None:
    """Alembic ``upgrade head`` on one connection, under a lock so concurrent openers migrate once."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    with store.engine.begin() as connection:
        if store.dialect == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
