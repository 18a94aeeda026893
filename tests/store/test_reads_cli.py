"""``python -m xraycore reads ...`` end to end with a tiny trained model (issue 29): no patient identifier or
file name reaches the database (its dump is grepped, on SQLite and PostgreSQL), ``reads export`` writes class
folders that calibrate/evaluate/adapt accept, and films whose pixels are not kept are counted, not exported."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa
from PIL import Image

from tests.helpers.corpus import PHI, PHI_UIDS, _dicom, chest_like
from tests.helpers.synthetic import make_dataset
from xraycore.cli.main import main

DISTINCTIVE = "Zebulon-Quartermain-MRN4471"


def _reads(capsys, *argv: str) -> str:
    code = main(["reads", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _dump(url: str) -> str:
    """Everything the database holds, as text: SQLite's iterdump, PostgreSQL's pg_dump (or every table)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database) as connection:
            return "\n".join(connection.iterdump())
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    if shutil.which("pg_dump"):
        return subprocess.run(["pg_dump", "--dbname", plain], check=True, capture_output=True, text=True).stdout
    engine = sa.create_engine(parsed)
    with engine.connect() as connection:
        tables = sa.inspect(connection).get_table_names()
        return "\n".join(repr(row) for table in tables for row in connection.exec_driver_sql(f'SELECT * FROM "{table}"'))


def test_no_patient_identifier_or_file_name_in_the_database(store_url, tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XRAY_DB_URL", store_url)
    dicom = tmp_path / f"{DISTINCTIVE}-chest.dcm"
    dicom.write_bytes(_dicom((chest_like(seed=5) * 65535).round().astype("uint16")))
    png = tmp_path / f"{DISTINCTIVE}-second.png"
    Image.fromarray((chest_like(seed=6) * 255).round().astype("uint8")).save(png)
    _reads(capsys, "keep-films", "on")
    _reads(capsys, "add", str(dicom), str(png), "--read", "PNEUMONIA", "--reference", "report",
           "--model", str(tiny_run))
    listed = [json.loads(line) for line in _reads(capsys, "list", "--json").splitlines()]
    assert len(listed) == 2 and {row["read"] for row in listed} == {"PNEUMONIA"}
    dump = _dump(store_url)
    assert listed[0]["film_sha256"] in dump and "PNEUMONIA" in dump  # the dump does hold the reads
    for secret in [*PHI.values(), *PHI_UIDS.values(), DISTINCTIVE, "Doe", "Janet", "chest.dcm", "second.png",
                   str(tmp_path)]:
        assert secret not in dump, secret
    assert PHI["PatientName"].split("^")[0].encode().hex() not in dump  # not even as bytes


def test_reads_export_gives_class_folders_calibrate_accepts(store_url, tiny_run, tmp_path, capsys, monkeypatch):
    from xraycore.evaluation.external import folder_items
    from xraycore.evaluation.site_calibration import check_classes
    from xraycore.inference.predictor import Predictor

    monkeypatch.setenv("XRAY_DB_URL", store_url)
    sample = make_dataset(tmp_path / "sample", per_class=3, size=64, seed=7)
    _reads(capsys, "import", str(sample), "--model", str(tiny_run))
    _reads(capsys, "keep-films", "off")
    unkept = make_dataset(tmp_path / "later", per_class=1, size=64, seed=8)
    _reads(capsys, "import", str(unkept), "--model", str(tiny_run))
    counts = json.loads(_reads(capsys, "export", "--output", str(tmp_path / "export")))
    assert counts["written"] == {"NORMAL": 3, "PNEUMONIA": 3} and counts["pixels_not_kept"] == 2
    items = folder_items(tmp_path / "export")
    check_classes(items, Predictor(tiny_run).class_names)  # raises unless the model's two classes are there
    assert len(items) == 6 and all(len(str(path.stem)) == 64 for _, path, _ in items)
    assert all(Image.open(path).size == (48, 48) for _, path, _ in items)  # the network's input size
    stats = json.loads(_reads(capsys, "stats", "--json"))
    assert stats["reads"] == 8 and stats["per_class"] == {"NORMAL": 4, "PNEUMONIA": 4}


def test_a_read_outside_the_models_choices_is_refused_in_one_sentence(store_url, tiny_run, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("XRAY_DB_URL", store_url)
    png = tmp_path / "film.png"
    Image.fromarray((chest_like(seed=1) * 255).round().astype("uint8")).save(png)
    assert main(["reads", "add", str(png), "--read", "COVID", "--model", str(tiny_run)]) == 2
    assert "A read is one of NORMAL, PNEUMONIA, other, uncertain" in capsys.readouterr().err


def test_a_down_database_is_one_plain_sentence_from_the_cli(capsys, monkeypatch):
    monkeypatch.setenv("XRAY_DB_URL", "postgresql+psycopg://xray:pw-secret@127.0.0.1:1/xray")
    assert main(["reads", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The store's database") and "pw-secret" not in err and "\n" not in err


@pytest.mark.parametrize("state", ["on", "off"])
def test_keep_films_from_the_terminal_is_audited(store_url, capsys, monkeypatch, log, state):
    from xraycore.access import audit

    monkeypatch.setenv("XRAY_DB_URL", store_url)
    assert _reads(capsys, "keep-films", state).strip() == f"keep read films for site learning: {state}"
    assert [entry["new"] for entry in audit.read(log, action="reads.keep_films")] == [state]
