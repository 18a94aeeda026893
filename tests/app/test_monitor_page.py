"""The Monitor page (admins and researchers) and the admin's alert banner on Diagnose, through streamlit.testing."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tests.app.test_access_app import env, refused, run  # noqa: F401 - the signed-in fixtures of the app tests
from tests.app.test_app import app_env, runs_root  # noqa: F401
from tests.monitoring.test_recording import BUNDLED, _stream_rows
from xraycore.clinical import operating_points as operating
from xraycore.store.database import open_store
from xraycore.store.scored_films import record_scored_films


@pytest.fixture
def store_url(env, tmp_path, monkeypatch) -> str:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    monkeypatch.setenv("XRAY_DB_URL", url)
    monkeypatch.setenv("XRAY_MODEL_DIR", str(BUNDLED))
    return url


def _shifted_store(url: str) -> None:
    rng, answering = np.random.default_rng(4), operating.active_name(BUNDLED)
    start = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    store = open_store(url)
    record_scored_films(store, _stream_rows(rng, 300, answering, start))
    record_scored_films(store, _stream_rows(rng, 200, answering, start + dt.timedelta(days=7), shifted=True))


def test_a_fresh_install_says_no_films_scored_yet_and_readers_are_refused(store_url):
    at = run("pages/monitor.py", "researcher")
    assert not refused(at) and any("No films scored yet" in info.value for info in at.info)
    assert not at.error
    assert refused(run("pages/monitor.py", "reader"))


def test_the_page_puts_the_alert_on_top_and_draws_the_charts(store_url):
    _shifted_store(store_url)
    at = run("pages/monitor.py", "admin")
    assert at.error and at.error[0].value.startswith("Out-of-domain surge")
    assert len(at.get("plotly_chart")) == 5
    at.selectbox(key="monitor_window").set_value("100").run()
    assert not at.exception and at.error[0].value.startswith("Out-of-domain surge")


def test_admins_see_the_active_alert_on_diagnose_and_readers_do_not(store_url):
    _shifted_store(store_url)
    admin = run("pages/diagnose.py", "admin")
    assert any("Monitoring alert" in warning.value for warning in admin.warning)
    reader = run("pages/diagnose.py", "reader")
    assert not any("Monitoring alert" in warning.value for warning in reader.warning)
