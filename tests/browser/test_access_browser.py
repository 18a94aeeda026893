"""Sign-in end to end with real parts: an OpenID Connect provider on loopback (oidc-provider-mock, a real
OIDC server made for tests), ``streamlit run app.py`` with the bundled configuration, Debian's Chromium.

One provider, one app server and one browser for the module; each role signs in in a fresh browser
context. Without /usr/bin/chromium the browser tests are skipped locally and fail in CI, as in
test_browser.py.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tests.browser.test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, require_browser, stop_server, wait_for_health
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs

# The provider (oidc-provider-mock) calls an Authlib hook that Authlib has deprecated: not ours to fix.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 90_000  # the first Diagnose load imports torch and loads the model on a busy CPU
CLAIMS = {
    "rita": {"email": "rita@ward.example", "name": "Rita Reader"},
    "sam": {"email": "sam@lab.example", "name": "Sam Researcher", "groups": ["ml-research"]},
    "ada": {"email": "ada@it.example", "name": "Ada Admin", "groups": ["radiology"]},
}
ROLES = ('[emails]\n"rita@ward.example" = "reader"\n"ada@it.example" = "admin"\n'
         '[groups]\n"ml-research" = "researcher"\n"radiology" = "reader"\n')


@pytest.fixture(scope="module")
def provider():
    """The OIDC provider on 127.0.0.1, with the three people as one-click users."""
    import authlib.deprecate  # noqa: F401 - first, so its own "always show" filter sits below ours

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mock imports authlib.jose, deprecated upstream
        from oidc_provider_mock import User, app
    from werkzeug.serving import make_server

    previous = os.environ.get("AUTHLIB_INSECURE_TRANSPORT")
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback, for the provider's side
    people = [User(sub=sub, claims=claims) for sub, claims in CLAIMS.items()]
    server = make_server("127.0.0.1", 0, app(user_claims=people), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        if previous is None:
            os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None)


@contextlib.contextmanager
def signed_in_server(provider: str, base: Path, model: Path, runs_dir: Path):
    """``streamlit run app.py`` with the repository's .streamlit/config.toml (no --server.address), [auth]
    pointing at the provider, roles from a roles file, serving ``model``; its own runs folder and audit log."""
    port = free_port()
    secrets_file = base / "secrets.toml"
    secrets_file.write_text(f'[auth]\nredirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
                            f'cookie_secret = "{secrets.token_hex(16)}"\nclient_id = "xray-workbench"\n'
                            f'client_secret = "{secrets.token_hex(8)}"\n'
                            f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n')
    roles = base / "roles.toml"
    roles.write_text(ROLES)
    log_file = base / "audit.jsonl"
    env = {**os.environ, "XRAY_RUNS_DIR": str(runs_dir), "XRAY_MODEL_DIR": str(model),
           "XRAY_SAMPLES_DIR": str(base / "no-samples"), access.ROLES_FILE_ENV: str(roles),
           audit.AUDIT_LOG_ENV: str(log_file), "AUTHLIB_INSECURE_TRANSPORT": "1",
           "XRAY_DB_URL": f"sqlite:///{base / 'xray.db'}",  # the server's own store, whichever test started it
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    server_log = base / "streamlit.log"
    with open(server_log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--secrets.files", str(secrets_file), "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_health(port, server, server_log)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", pid=server.pid, log=log_file, roles=roles,
                              model=model, port=port, server_log=server_log)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def app_server(provider, tiny_run, tmp_path_factory):
    """The signed-in app serving a copy of the tiny run as its model."""
    base = tmp_path_factory.mktemp("signin")
    root = base / "runs"
    shutil.copytree(tiny_run, root / "run-a")
    with signed_in_server(provider, base, root / "run-a", root) as server:
        yield server


@pytest.fixture(scope="module")
def browser(app_server):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(browser, app_server, sub: str):
    """A fresh browser profile signs in through the provider's page as ``sub``."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_server.url)
    wait_for(page, page.get_by_role("button", name="Sign in"), app_server).click()
    page.get_by_role("button", name=sub, exact=True).click()  # the provider's one-click user
    wait_for(page, page.get_by_text(f"Signed in as {CLAIMS[sub]['name']}"), app_server)
    reload_after_a_failed_chunk(page)
    return page


CHUNK_FAILURE = "Failed to fetch dynamically imported module"


def wait_for(page, locator, app_server):
    """``locator`` once visible; a page whose lazily loaded script failed is reloaded once first (as in
    reload_after_a_failed_chunk). If it never shows, the test fails with what the page and the server said."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    try:
        expect(locator.or_(page.get_by_text(CHUNK_FAILURE))).to_be_visible()
        if not locator.is_visible():
            page.reload()
        expect(locator).to_be_visible()
    except (AssertionError, PlaywrightError) as error:
        shown = page.locator("body").inner_text(timeout=5_000)[:1500]
        server = app_server.server_log.read_text(errors="replace")[-3000:]
        pytest.fail(f"{error}\n--- the page showed:\n{shown}\n--- the server printed:\n{server}")
    return locator


def reload_after_a_failed_chunk(page) -> None:
    """Reload once when the browser could not fetch one of Streamlit's lazily loaded scripts.

    On a loaded 2-core CI machine Chromium has, rarely, given up on one of those files (a widget then shows
    "TypeError: Failed to fetch dynamically imported module" in place of itself): a fault of the page load,
    not of the app, which a reload repairs. Any other error stays on the page for the test to see.
    """
    from playwright.sync_api import expect

    page.wait_for_load_state("networkidle")
    if page.get_by_text(CHUNK_FAILURE).count():
        page.reload()
        expect(page.get_by_text(CHUNK_FAILURE)).to_have_count(0)


def links(page) -> list[str]:
    """The page titles listed in the sidebar (each link's last line: the first is its icon's name)."""
    return [text.strip().splitlines()[-1] for text in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]


def test_the_bundled_configuration_listens_on_loopback_only(app_server):
    process = psutil.Process(app_server.pid)
    sockets = process.net_connections("inet") if hasattr(process, "net_connections") else process.connections("inet")
    listening = [s.laddr for s in sockets if s.status == psutil.CONN_LISTEN]
    assert any(address.port == app_server.port for address in listening)
    assert all(access.is_loopback(address.ip) for address in listening), listening


def test_a_page_url_on_a_fresh_server_asks_for_sign_in_and_lists_nothing(browser, app_server):
    """Before app.py has run once, Streamlit would run pages/audit.py alone and list every page file."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{app_server.url}/audit")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
    page.goto(f"{app_server.url}/site")  # a link to a page, before signing in: the sign-in, not "page not found"
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    expect(page.get_by_role("link", name="audit")).to_have_count(0)
    page.context.close()


def test_a_reader_sees_diagnose_only_and_cannot_save_an_operating_point(browser, app_server, monkeypatch):
    from playwright.sync_api import expect

    page = sign_in(browser, app_server, "rita")
    expect(page.locator('[data-testid="stFileUploader"]')).to_be_visible()  # Diagnose works
    for title in ("Train", "Operating point", "Site", "Compare", "Monitor", "Audit"):
        expect(page.get_by_role("link", name=title)).to_have_count(0)
    for path in ("train", "operating_point", "site"):
        page.goto(f"{app_server.url}/{path}")
        expect(page.get_by_text("Access refused: your role (reader)")).to_be_visible()
        expect(page.get_by_text("Signed in as Rita Reader")).to_be_visible()
    expect(page.get_by_role("button", name="Save and activate")).to_have_count(0)
    page.goto(f"{app_server.url}/diagnose")  # her first page under its own name too, not only at "/"
    expect(page.locator('[data-testid="stFileUploader"]')).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)

    # The same person through xraycore: who the server says she is (her claims, its roles file) may not save.
    reader = access.identity_from_claims(CLAIMS["rita"], access.load_roles(app_server.roles))
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(app_server.log))  # the server's trail
    before = {name: (app_server.model / name).read_bytes() for name in (runs.OPERATING_POINT_FILE,)}
    with pytest.raises(access.AccessDenied):
        operating.save(app_server.model, "rita's", {"threshold": 0.01}, identity=reader)
    assert {name: (app_server.model / name).read_bytes() for name in before} == before
    assert not (app_server.model / operating.POINTS_FILE).exists()
    refused = [e for e in audit.read(app_server.log) if e["outcome"] == "refused"]
    assert [(e["user"], e["role"], e["action"]) for e in refused] == [("rita@ward.example", "reader",
                                                                      "operating_point.save")]

    page.goto(app_server.url)
    page.get_by_role("button", name="Sign out").click()
    end_session = page.get_by_role("button", name="End session")  # the provider confirms the sign-out
    end_session.click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.context.close()


def test_a_researcher_trains_and_previews_but_does_not_save(browser, app_server):
    from playwright.sync_api import expect

    page = sign_in(browser, app_server, "sam")
    expect(page.get_by_role("link", name="Compare")).to_be_visible()
    assert links(page) == ["Diagnose", "Worklist", "Operating point", "Site", "Train", "Compare", "Monitor"]
    page.get_by_role("link", name="Operating point").click()
    expect(page.get_by_text("A preview: saving a threshold for everyone needs the admin role.")).to_be_visible()
    expect(page.get_by_role("button", name="Save and activate")).to_have_count(0)
    page.get_by_role("link", name="Train").click()
    expect(page.get_by_role("button", name="Start training")).to_be_visible()
    expect(page.get_by_text("Delete a run")).to_have_count(0)
    page.goto(f"{app_server.url}/audit")
    expect(page.get_by_text("Access refused: your role (researcher)")).to_be_visible()
    page.context.close()


def test_an_admin_saves_the_operating_point_and_reads_the_audit_trail(browser, app_server):
    from playwright.sync_api import expect

    page = sign_in(browser, app_server, "ada")
    expect(page.get_by_role("link", name="Audit")).to_be_visible()
    assert links(page) == ["Diagnose", "Worklist", "Operating point", "Site", "Train", "Compare", "Monitor", "Audit"]
    page.get_by_role("link", name="Operating point").click()
    page.get_by_text(re.compile(r"^Every reader's Diagnose will call at")).click()  # the confirmation box
    page.get_by_role("button", name="Save and activate", exact=True).click()
    expect(page.get_by_text(re.compile(r"active operating point chosen-\d{8}"))).to_be_visible()
    saved = [e for e in audit.read(app_server.log, user="ada@it.example", action="operating_point.save")]
    assert [(e["outcome"], e["role"], e["model"]["name"]) for e in saved] == [("ok", "admin", "run-a")]

    page.get_by_role("link", name="Audit").click()
    page.get_by_label("User (e-mail address)").fill("ada@it.example")
    page.get_by_label("User (e-mail address)").press("Enter")
    expect(page.get_by_text("1 line(s); the newest 1 shown.")).to_be_visible()
    page.context.close()
