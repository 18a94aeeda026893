"""PostgreSQL as the store (issue 29): CI runs these tests (a missing server fails them there), the schema
comes up at head with every table, and ``.ci/postgres.sh`` starts and stops a throw-away loopback cluster."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.store.conftest import POSTGRES_ENV, postgres_server_url
from xraycore.store.database import open_store

REPO = Path(__file__).resolve().parents[2]


def test_postgres_tests_fail_under_ci_and_skip_elsewhere_without_a_server(monkeypatch):
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        postgres_server_url()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        postgres_server_url()


def test_the_schema_comes_up_at_head_with_every_table(postgres_url):
    from alembic.script import ScriptDirectory

    from xraycore.store.database import MIGRATIONS

    store = open_store(postgres_url)
    assert store.dialect == "postgresql"
    with store.reading() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert {"reads", "scored_films", "film_pixels", "settings"} <= tables
    assert version == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    store.close()
    assert open_store(postgres_url).dialect == "postgresql"  # opening an up-to-date store again changes nothing


@pytest.mark.slow
@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb") or os.geteuid() != 0 and
                    not os.access("/usr/lib/postgresql", os.X_OK), reason="PostgreSQL's server is not installed")
def test_the_ci_script_starts_a_cluster_the_store_opens_and_stops_it():
    script = f"""
set -e
source .ci/postgres.sh
{sys.executable} -c "from xraycore.store.database import open_store; import os; \\
print(open_store(os.environ['XRAY_TEST_POSTGRES_URL']).dialect)"
echo "dir=$XRAY_PG_DIR"
xray_postgres_stop
"""
    finished = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert finished.returncode == 0, finished.stderr
    assert "postgresql" in finished.stdout.splitlines()
    folder = next(line[4:] for line in finished.stdout.splitlines() if line.startswith("dir="))
    assert folder and not Path(folder).exists()
