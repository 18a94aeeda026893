"""Issue 34, item 3 in Chromium: an admin opens the Operating point page of (a copy of) the bundled model.

It must open on the active point (kermany-site), named, at its threshold; a save keeps that point's temperature,
its confirmation stays and the confirmation box clears; Reset restores kermany-site. The provider, the browser
and the sign-in are test_access_browser.py's; only the server differs: it serves a copy of models/default.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.browser.test_access_browser import browser, provider, sign_in, signed_in_server  # noqa: F401 - shared fixtures
from xraycore.clinical import operating_points as operating

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = "kermany-site"


@pytest.fixture(scope="module")
def app_server(provider, tmp_path_factory):  # noqa: F811 - the name test_access_browser's `browser` asks for
    """The app with sign-in through the provider, serving a private copy of the bundled model."""
    base = tmp_path_factory.mktemp("bundled")
    model = Path(shutil.copytree(os.path.join(REPO, "models", "default"), base / "default"))
    with signed_in_server(provider, base, model, base / "runs") as server:
        yield server


def test_the_operating_point_page_shows_saves_and_resets_the_point_in_use(browser, app_server):  # noqa: F811
    from playwright.sync_api import expect

    shipped = operating.get(app_server.model, SHIPPED)
    figures = f"threshold {shipped['threshold']:.3f}, temperature {shipped['temperature']:.3f}"
    page = sign_in(browser, app_server, "ada")
    page.get_by_role("link", name="Operating point").click()
    expect(page.get_by_text(f"active operating point {SHIPPED}: {figures}")).to_be_visible()
    expect(page.get_by_text("accuracy (cross-fitted)")).to_be_visible()
    # the value the slider shows (its value attribute drops trailing zeros: 0.140 is "0.14")
    expect(page.get_by_role("slider", name=re.compile("Threshold"))).to_have_attribute(
        "aria-valuetext", f"{shipped['threshold']:.3f}")

    confirm = page.get_by_role("checkbox", name=re.compile("^Every reader's Diagnose will call at"))
    page.get_by_text(re.compile(r"^Every reader's Diagnose will call at")).click()
    expect(confirm).to_be_checked()
    page.get_by_role("button", name="Save and activate", exact=True).click()
    saved = page.get_by_text(re.compile(rf"^Saved and activated 'chosen-\d{{8}}': {re.escape(figures)}"))
    expect(saved).to_be_visible()
    _settled(page)  # the page's reruns have finished (a rerun shows the old box beside the new one for a moment)
    expect(confirm).to_have_count(1)
    expect(confirm).not_to_be_checked()
    time.sleep(3)  # it used to flash and vanish
    expect(saved).to_be_visible()
    point = operating.get(app_server.model)
    assert point["name"].startswith("chosen-") and point["temperature"] == shipped["temperature"]

    page.get_by_role("button", name=re.compile(r"^Reset to the shipped point")).click()
    expect(page.get_by_text(f"Reset to the shipped point '{SHIPPED}': {figures}.")).to_be_visible()
    assert operating.active_name(app_server.model) == SHIPPED
    page.context.close()


def _settled(page) -> None:
    """Streamlit has finished running the script: its running indicator is gone, twice, half a second apart."""
    from playwright.sync_api import expect

    for _ in range(2):
        page.wait_for_timeout(500)
        expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)
