"""The Train page in Chromium (issue 34, item 6): a study between two of its runs has a Stop button, and what the
page says after Stop stays on screen through the page's own two-second refreshes, until the next action."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser.test_access_browser import CHUNK_FAILURE
from tests.browser.test_browser import PAGE_TIMEOUT_MS, app_url  # noqa: F401 - app_url is a fixture
from tests.browser.test_train_browser import train_page
from xraycore.training import job_queue as jobqueue
from xraycore.training import jobs
from xraycore.runs import directory as runs
from xraycore.runs.liveness import started_at

pytestmark = pytest.mark.slow


def study_between_runs(root: Path) -> subprocess.Popen:
    """A live study job (a sleeping stand-in process in its own session) whose first run has finished and
    whose next has not begun: no run of it is 'running'."""
    shutil.copytree(root / "run-a", root / "fold-1")
    first = runs.Run(root / "fold-1")
    first.write_json(runs.CONFIG_FILE, {**first.config, "study": "study-x"})
    # alive well past the page's slowest first load on a busy CI machine (the test kills it at the end)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    jobs_dir = root / jobs.JOBS_DIR
    jobs_dir.mkdir(exist_ok=True)
    (jobs_dir / "study-x.json").write_text(json.dumps({
        "id": "study-x", "pid": stand_in.pid, "pid_started": started_at(stand_in.pid), "command": [],
        "root": str(root), "study": "study-x", "started": "2026-11-21T22:15:03+00:00"}))
    (jobs_dir / f"study-x{jobqueue.BEGAN_SUFFIX}").write_text("now")
    return stand_in


def test_stop_between_a_studys_runs_and_its_message_stays(app_url, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    stand_in = study_between_runs(tmp_path / "runs")  # app_url serves copies of tiny_run from here
    try:
        with train_page(app_url) as page:
            heading = page.get_by_role("heading", name="Job study-x: running")
            expect(heading.or_(page.get_by_text(CHUNK_FAILURE))).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            if not heading.is_visible():  # a lazily loaded script the loaded machine failed to fetch: reload once
                page.reload()
            assert stand_in.poll() is None, "the stand-in job is still alive"
            expect(heading).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            stop = page.locator('[data-testid="stButton"]').get_by_role("button", name="Stop", exact=True)
            stop.click()  # the page's own Stop, not Streamlit's toolbar one that shows while a script runs
            said = page.get_by_text("Asked the job to stop: no further run of it starts.")
            expect(said).to_be_visible(timeout=15_000)
            stand_in.wait(timeout=15)  # the job was really signalled
            time.sleep(5)  # two of the page's own refreshes
            expect(said).to_be_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        if stand_in.poll() is None:
            os.killpg(stand_in.pid, signal.SIGKILL)
