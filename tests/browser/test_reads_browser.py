"""Issue 29 in real Chromium: a reader signed in through the real OIDC provider records a read on Diagnose with
one click, and `reads list` shows it with the reader's identity and role, never the file's name. The provider,
app server and browser fixtures are test_access_browser's (this module gets its own instances)."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from tests.browser.test_access_browser import app_server, browser, provider, sign_in  # noqa: F401 - shared fixtures
from tests.helpers.synthetic import xray_like
from xraycore.cli import main as cli
from xraycore.store.database import DB_URL_ENV

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")]


def test_a_read_recorded_in_the_browser_appears_in_reads_list(browser, app_server, monkeypatch, capsys):
    from playwright.sync_api import expect

    buffer = io.BytesIO()
    Image.fromarray(xray_like(np.random.default_rng(5), 64, True)).save(buffer, format="PNG")
    page = sign_in(browser, app_server, "rita")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        [{"name": "person99_virus_1.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    agree = page.get_by_role("button", name=re.compile(r"^Agree: "))
    expect(agree).to_be_visible()
    call = agree.inner_text().strip().splitlines()[-1].removeprefix("Agree: ")
    agree.click()
    expect(page.get_by_text("Your read (no. 1)")).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.context.close()

    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{app_server.model.parent.parent / 'xray.db'}")
    capsys.readouterr()
    assert cli.main(["reads", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [(row["read"], row["agrees"], row["reader"], row["role"]) for row in rows] == [
        (call, True, "rita@ward.example", "reader")]
    assert "person99" not in json.dumps(rows)
