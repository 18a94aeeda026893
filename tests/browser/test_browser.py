"""End to end in a real browser: ``streamlit run app.py`` driven by Debian's Chromium through Playwright.

Upload an X-ray, see the probability and the Grad-CAM overlay, move the session threshold and watch
the call follow, then open Operating point and Compare. Screenshots go to ``screenshots/`` and the
page-load times to ``screenshots/timings.json``. Without /usr/bin/chromium the test is skipped
locally and fails in CI (``$CI`` set).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import xray_like

pytestmark = pytest.mark.slow  # a real Streamlit server and Chromium

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT = 90  # seconds
PAGE_TIMEOUT_MS = 90_000  # the first Diagnose load imports torch and loads the model on a busy CPU


def require_browser() -> None:
    missing = None if CHROMIUM.exists() else f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = missing or "playwright is not installed"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: the end-to-end browser test must run in CI")
        pytest.skip(missing)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {SERVER_START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=15)


@pytest.fixture
def app_url(tiny_run: Path, tmp_path: Path):
    require_browser()
    root = tmp_path / "runs"
    for name in ("run-a", "run-b"):
        shutil.copytree(tiny_run, root / name)
    port = free_port()
    env = {**os.environ, "XRAY_RUNS_DIR": str(root), "XRAY_MODEL_DIR": str(root / "run-a"),
           "XRAY_SAMPLES_DIR": str(tmp_path / "no-samples"), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_health(port, server, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def scan_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(xray_like(np.random.default_rng(3), 256, pneumonia=True)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_threshold_and_compare_in_a_real_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1100})  # fresh profile
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            expect.set_options(timeout=PAGE_TIMEOUT_MS)

            started = time.monotonic()
            page.goto(app_url)
            expect(page.get_by_text("Model answering")).to_be_visible()  # the Predictor is loaded
            expect(page.locator('[data-testid="stFileUploader"]')).to_be_visible()
            timings["diagnose_first_load_s"] = round(time.monotonic() - started, 2)

            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
                [{"name": "chest.png", "mimeType": "image/png", "buffer": scan_png()}])
            metric = page.locator('[data-testid="stMetric"]')
            expect(metric).to_contain_text("P(PNEUMONIA)")
            expect(metric).to_contain_text("%")
            expect(page.get_by_text("Grad-CAM (one forward pass, as CAM) overlay")).to_be_visible()
            overlay = page.locator('[data-testid="stImage"] img').nth(1)
            expect(overlay).to_be_visible()
            assert overlay.evaluate("img => img.naturalWidth") > 0

            def call(label: str, threshold: str):
                return page.get_by_text(re.compile(rf"Call: {label}\s*at threshold {threshold}"))

            threshold = page.get_by_role("slider", name="Threshold for this session")
            threshold.focus()
            threshold.press("Home")  # threshold 0: every scan is called positive
            expect(call("PNEUMONIA", "0.000")).to_be_visible()
            expect(page.get_by_text("Call: NORMAL")).to_have_count(0)
            threshold.press("End")  # threshold 1: nothing reaches it
            expect(call("NORMAL", "1.000")).to_be_visible()
            expect(page.get_by_text("Call: PNEUMONIA")).to_have_count(0)
            page.screenshot(path=str(SCREENSHOTS / "diagnose.png"), full_page=True)

            started = time.monotonic()
            page.get_by_role("link", name="Operating point").click()
            expect(page.get_by_text("Recall (sensitivity)").first).to_be_visible()
            expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(5)  # no site calibration yet
            timings["operating_point_load_s"] = round(time.monotonic() - started, 2)
            page.screenshot(path=str(SCREENSHOTS / "operating_point.png"), full_page=True)

            started = time.monotonic()
            page.get_by_role("link", name="Compare").click()
            expect(page.get_by_text("Internal validation (95% bootstrap CIs)")).to_be_visible()
            expect(page.get_by_text("What to expect on new patients")).to_be_visible()
            expect(page.get_by_text("Configuration differences")).to_be_visible()
            timings["compare_load_s"] = round(time.monotonic() - started, 2)
            page.screenshot(path=str(SCREENSHOTS / "compare.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    (SCREENSHOTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(timings)


def test_study_report_figures_fit_their_boxes_in_a_real_browser(tiny_run, tmp_path):
    """Three runs side by side: every plotly figure must be as wide as its cell, not the page."""
    require_browser()
    from playwright.sync_api import sync_playwright

    from xraycore.runs import directory as runs
    from xraycore.evaluation.study_report import write_study_report

    root = tmp_path / "runs"
    for name in ("a", "b", "c"):
        shutil.copytree(tiny_run, root / name)
        run = runs.Run(root / name)
        run.write_json(runs.CONFIG_FILE, {**run.config, "study": "three"})
    page_path = write_study_report("three", root=root, output=tmp_path / "three.html")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_path.as_uri(), wait_until="load")
            page.wait_for_timeout(1500)
            sizes = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map((plot) => [
                plot.querySelector('svg.main-svg').getBoundingClientRect().width,
                plot.parentElement.getBoundingClientRect().width])""")
        finally:
            browser.close()
    assert len(sizes) >= 8  # bars, confusion x3, ROC, PR, calibration x3, training curves
    too_wide = [(svg, box) for svg, box in sizes if svg > box + 1]
    assert not too_wide, f"{len(too_wide)} of {len(sizes)} figures overflow their cell: {too_wide[:5]}"
