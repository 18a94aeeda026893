"""The Train page in a real browser, for what AppTest cannot show: the part of the page that refreshes by
itself every two seconds (a Streamlit fragment) must offer a run that stopped meanwhile without any
navigation, and the toolbar must not offer Streamlit's Deploy button."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from tests.browser.test_browser import CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, app_url  # noqa: F401 - app_url is a fixture
from xraycore.runs import directory as runs

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def train_page(app_url: str):
    """Debian's Chromium on the app's Train page (the page's first script run may take a while on 2 cores)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(f"{app_url}/train")
            yield page
        finally:
            browser.close()


def test_a_run_that_stops_meanwhile_is_offered_without_navigating_and_deploy_is_hidden(app_url, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    root = tmp_path / "runs"  # app_url serves copies of tiny_run from here
    with train_page(app_url) as page:
        expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        continue_panel = page.get_by_text("Continue a stopped or interrupted run or study")
        expect(continue_panel).to_have_count(0)
        assert page.locator('[data-testid="stAppDeployButton"]').count() == 0

        shutil.copytree(root / "run-a", root / "stopped-meanwhile")
        runs.Run(Path(root / "stopped-meanwhile")).set_status("stopped", message="stopped by request")
        expect(continue_panel).to_be_visible(timeout=15_000)  # the fragment's own refresh, no page change
        assert page.locator('[data-testid="stException"]').count() == 0
