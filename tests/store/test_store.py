"""The store itself (issue 29): append-only reads, nothing lost by writers at once, the same answers on SQLite
and PostgreSQL, and a database that is down said in one plain sentence."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import sys
import threading
import types

import numpy as np
import pytest
import sqlalchemy as sa

from tests.store.conftest import fresh_postgres_url
from xraycore.store import reads, scored_films, settings
from xraycore.store.database import StoreUnavailable, open_store
from xraycore.store.schema import film_pixels
from xraycore.store.schema import reads as reads_table

FILM = "ab" * 32
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


def _raw_row(store, read_id: int) -> tuple:
    with store.reading() as connection:
        return tuple(connection.execute(sa.select(reads_table).where(reads_table.c.id == read_id)).one())


def _add(store, reader: str = "ann", read: str = "PNEUMONIA", film: str = FILM, **extra) -> int:
    return reads.add_read(store, film_sha256=film, read=read, reader=reader, role="reader", model_name="m",
                          model_version="1", weights_sha256="cd" * 32, operating_point="internal",
                          probability=0.8, ai_call="PNEUMONIA", agrees=read == "PNEUMONIA", **extra)


def _at_once(work, readers: tuple[str, ...]) -> None:
    """Run ``work(reader)`` for every reader, each in its own thread, and wait for them all."""
    threads = [threading.Thread(target=work, args=(reader,)) for reader in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_correction_supersedes_and_never_rewrites(store):
    first = _add(store)
    before = _raw_row(store, first)
    corrected = reads.correct(store, first, read="NORMAL", reader="ann", role="reader", reference="CT")
    assert _raw_row(store, first) == before  # byte for byte: the original row is untouched
    current = reads.current_reads(store)
    assert [row["id"] for row in current] == [corrected]
    assert current[0]["supersedes"] == first and current[0]["read"] == "NORMAL" and current[0]["agrees"] is False
    assert [row["id"] for row in reads.all_reads(store)] == [first, corrected]
    with pytest.raises(reads.ReadNotCurrent, match="already corrected"):
        reads.correct(store, first, read="PNEUMONIA", reader="bob")


def test_deleting_a_read_is_a_tombstone_and_deletes_its_pixels(store):
    pixels = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
    read_id = _add(store, pixels=pixels)
    np.testing.assert_array_equal(reads.kept_pixels(store, FILM), pixels)
    tombstone = reads.delete_read(store, read_id, reader="ann")
    assert reads.kept_pixels(store, FILM) is None
    assert reads.current_reads(store) == []
    history = reads.all_reads(store)
    assert [(row["id"], row["kind"], row["supersedes"]) for row in history] == [
        (read_id, "read", None), (tombstone, "delete", read_id)]
    with store.reading() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(film_pixels)).scalar() == 0


def test_two_readers_saving_at_once_in_threads_lose_nothing(store):
    start = threading.Barrier(2)
    errors = []

    def save(reader: str) -> None:
        try:
            start.wait()
            for index in range(25):
                _add(store, reader=reader, film=f"{index:064x}")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    _at_once(save, ("ann", "bob"))
    assert errors == []
    found = reads.current_reads(store)
    assert len(found) == 50 and {row["reader"] for row in found} == {"ann", "bob"}


def test_two_readers_correcting_the_same_read_at_once_one_wins(store):
    first = _add(store)
    start = threading.Barrier(2)
    outcomes = []

    def correct(reader: str) -> None:
        start.wait()
        try:
            outcomes.append(reads.correct(store, first, read="NORMAL", reader=reader))
        except reads.ReadNotCurrent as error:
            outcomes.append(error)

    _at_once(correct, ("ann", "bob"))
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["ReadNotCurrent", "int"]
    assert len(reads.current_reads(store)) == 1


def _save_in_process(url: str, reader: str, start) -> None:
    start.wait()
    store = open_store(url)  # both processes open (and migrate) the new database at the same moment
    for index in range(25):
        _add(store, reader=reader, film=f"{index:064x}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_saving_at_once_lose_nothing(backend, tmp_path, monkeypatch):
    urls = fresh_postgres_url() if backend == "postgresql" else iter([f"sqlite:///{tmp_path / 'xray.db'}"])
    url = next(urls)
    # A spawned process runs the parent's __main__ again; in a test worker that may be a script an earlier AppTest
    # left there. A bare __main__ makes the workers import this module only.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_save_in_process, args=(url, name, start)) for name in ("ann", "bob")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0]
    store = open_store(url)
    assert len(reads.current_reads(store)) == 50
    store.close()
    for _ in urls:  # drop the PostgreSQL database
        pass


def _same_sequence(store) -> dict:
    """One sequence of operations; everything the store answers afterwards."""
    first = _add(store, created=T0, pixels=np.full((4, 6), 7, np.uint8))
    second = _add(store, reader="bob", read="NORMAL", created=T0 + dt.timedelta(minutes=1), film="ef" * 32)
    reads.correct(store, first, read="other", reader="ann", created=T0 + dt.timedelta(minutes=2))
    reads.delete_read(store, second, reader="bob", created=T0 + dt.timedelta(minutes=3))
    _add(store, reader="cy", read="uncertain", created=T0 + dt.timedelta(minutes=4), heatmap_on_region=True)
    settings.set_setting(store, "keep", "on", "admin", T0)
    settings.set_setting(store, "keep", "off", "admin", T0 + dt.timedelta(hours=1))
    for index in range(5):
        scored_films.record_scored_film(store, {
            "created": T0 + dt.timedelta(seconds=index), "source": "upload", "logit": index - 2.5,
            "probability": index / 5, "ai_call": "PNEUMONIA" if index > 2 else "NORMAL", "ood_flag": index == 4,
            "ood_score": None if index == 0 else index / 10, "warnings": ["view"] if index == 1 else []})
    rows = scored_films.scored_rows(store, since=T0 + dt.timedelta(seconds=1))
    return {"current": reads.current_reads(store), "since": reads.current_reads(store, T0 + dt.timedelta(minutes=3)),
            "history": reads.all_reads(store), "kept": reads.kept_films(store),
            "pixels": reads.kept_pixels(store, FILM).tolist(), "setting": settings.get_setting(store, "keep"),
            "settings": settings.setting_history(store, "keep"),
            "scored": {name: column.tolist() for name, column in rows.items()}}


def test_sqlite_and_postgresql_give_the_same_answers(tmp_path, postgres_url):
    on_sqlite = _same_sequence(open_store(f"sqlite:///{tmp_path / 'xray.db'}"))
    on_postgres = _same_sequence(open_store(postgres_url))
    assert on_sqlite["current"][0]["read"] == "other" and on_sqlite["setting"] == "off"
    assert len(on_sqlite["scored"]["logit"]) == 4
    np.testing.assert_equal(on_sqlite, on_postgres)


@pytest.mark.parametrize("url", ["postgresql+psycopg://xray:s3cret-pw@127.0.0.1:1/xray",
                                 "postgresql://xray:s3cret-pw@127.0.0.1:1/xray", "mysql://xray:s3cret-pw@h/x",
                                 "not a url at all"])
def test_a_database_that_is_down_or_a_bad_url_is_one_plain_sentence(url):
    with pytest.raises(StoreUnavailable) as raised:
        open_store(url)
    text = str(raised.value)
    assert "s3cret" not in text and "\n" not in text and "Traceback" not in text
    assert text.endswith(".") and text.count(". ") == 0 and len(text) < 200


def test_no_url_and_no_runs_folder_is_one_sentence(monkeypatch):
    monkeypatch.delenv("XRAY_DB_URL", raising=False)
    with pytest.raises(StoreUnavailable, match="No database is configured"):
        open_store()


def test_default_store_is_a_sqlite_file_beside_the_runs(monkeypatch, tmp_path):
    monkeypatch.delenv("XRAY_DB_URL", raising=False)
    store = open_store(runs_dir=tmp_path / "runs")
    assert store.dialect == "sqlite" and (tmp_path / "xray.db").is_file()
    with store.reading() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()
