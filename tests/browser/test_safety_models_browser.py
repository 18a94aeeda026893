"""Issue 34 in real Chromium, signed in through the real OIDC provider of test_access_browser: a reader's Diagnose
model list holds only released models, a researcher previews an unreleased run under the banner, and Compare's
"a study" mode compares the study's runs; and (issue 29) a reader records a read on Diagnose with one click, which
`reads list` shows with the reader's identity and role, never the file's name. One provider, app server and browser
for the module (the fixtures are test_access_browser's; this module gets its own instances, with a second, unreleased
run in a study)."""
from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.browser.test_access_browser import app_server, browser, provider, sign_in  # noqa: F401 - shared fixtures
from tests.helpers.synthetic import xray_like
from xraycore.cli import main as cli
from xraycore.evaluation import comparison
from xraycore.clinical import releases
from xraycore.runs import directory as runs
from xraycore.store.database import DB_URL_ENV

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")]
STUDY = "pair"


@pytest.fixture(scope="module")
def study_runs(app_server):
    """run-a (the bundled model, released as shipped) and run-b (an unreleased copy), both of study 'pair'."""
    root = app_server.model.parent
    shutil.copytree(app_server.model, root / "run-b")
    for name in ("run-a", "run-b"):
        run = runs.Run(root / name)
        run.write_json(runs.CONFIG_FILE, {**run.config, "study": STUDY})
    return [runs.Run(root / name) for name in ("run-a", "run-b")]


def model_options(page) -> list[str]:
    """The sidebar's Model list, as the dropdown shows it."""
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Model").click()
    options = page.get_by_role("option")
    options.first.wait_for()
    return [text.strip() for text in options.all_inner_texts()]


def record_a_read(page) -> str:
    """Upload a film on Diagnose and agree with its call in one click (issue 29); the call agreed with."""
    from playwright.sync_api import expect

    buffer = io.BytesIO()
    Image.fromarray(xray_like(np.random.default_rng(5), 64, True)).save(buffer, format="PNG")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        [{"name": "person99_virus_1.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    agree = page.get_by_role("button", name=re.compile(r"^Agree: "))
    expect(agree).to_be_visible()
    call = agree.inner_text().strip().splitlines()[-1].removeprefix("Agree: ")
    agree.click()
    expect(page.get_by_text("Your read (no. 1)")).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    return call


def test_a_reader_sees_released_models_only_and_a_researcher_previews_the_rest(browser, app_server, study_runs,
                                                                              monkeypatch, capsys):
    from playwright.sync_api import expect

    reader = sign_in(browser, app_server, "rita")
    expect(reader.locator('[data-testid="stFileUploader"]')).to_be_visible()
    assert model_options(reader) == ["default model (run-a)"]
    reader.keyboard.press("Escape")  # the dropdown closed again
    call = record_a_read(reader)
    reader.context.close()
    # The read recorded in the browser is in `reads list`: the reader and role, no file name.
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{app_server.model.parent.parent / 'xray.db'}")
    capsys.readouterr()
    assert cli.main(["reads", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [(row["read"], row["agrees"], row["reader"], row["role"]) for row in rows] == [
        (call, True, "rita@ward.example", "reader")]
    assert "person99" not in json.dumps(rows)

    researcher = sign_in(browser, app_server, "sam")
    expect(researcher.locator('[data-testid="stFileUploader"]')).to_be_visible()
    assert model_options(researcher) == ["default model (run-a)", "run run-b · not released"]
    expect(researcher.get_by_text(releases.PREVIEW_BANNER)).to_have_count(0)
    researcher.get_by_role("option", name="run run-b · not released").click()
    expect(researcher.get_by_text(releases.PREVIEW_BANNER)).to_be_visible()
    expect(researcher.get_by_text("run-b", exact=True)).to_be_visible()  # the model answering (sidebar)
    researcher.context.close()


def test_compare_a_study_in_a_real_browser(browser, app_server, study_runs):
    from playwright.sync_api import expect

    page = sign_in(browser, app_server, "sam")
    page.get_by_role("link", name="Compare").click()
    expect(page.get_by_text("Internal validation (95% bootstrap CIs)")).to_be_visible()
    page.get_by_text("a study", exact=True).click()
    expect(page.get_by_text("2 of the study's 2 runs finished")).to_be_visible()
    expect(page.get_by_text("Pick at least two models.")).to_have_count(0)
    for run in study_runs:  # each run's confusion matrix is titled with its label
        expect(page.locator('[data-testid="stPlotlyChart"]').get_by_text(comparison.run_label(run)).first).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.context.close()
