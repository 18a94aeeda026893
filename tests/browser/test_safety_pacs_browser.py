"""Issue 34, item 1 from another address: ``streamlit run app.py`` without sign-in, served inside a network
namespace this test creates (ip netns + a veth pair: iproute2, as root) on that namespace's address, and opened
in Chromium from the host's side of the pair, so the visitor is a real network visitor. A PACS node is
configured (a socket that would see any association); the visitor must not reach the Worklist, and the server
must never connect to the node.

Without network namespaces (no root, no iproute2) the test is skipped on a developer's machine and fails in
CI (``$CI`` set), as the other browser tests do without Chromium.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser.test_access_browser import links
from tests.browser.test_browser import CHROMIUM, CHROMIUM_ARGS, SERVER_START_TIMEOUT, free_port, require_browser, stop_server
from xraycore.access import audit
from xraycore.reading_room import pacs
from xraycore.reading_room import pacs_nodes

pytestmark = pytest.mark.slow  # a network namespace, a real Streamlit server and Chromium

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 90_000  # the first Diagnose load imports torch and loads the model on a busy CPU
SUFFIX = os.getpid() % 100_000
NAMESPACE, HOST_END, NS_END = f"xray-pacs-{SUFFIX}", f"xph{SUFFIX}", f"xpn{SUFFIX}"  # link names: 15 characters
SUBNET = f"10.231.{os.getpid() % 250}"
HOST_ADDRESS, APP_ADDRESS = f"{SUBNET}.1", f"{SUBNET}.2"


def ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", "netns", "exec", namespace, "ip", *args] if namespace else ["ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the test from another network address must run in CI")
    pytest.skip(reason)


@pytest.fixture
def namespace():
    """A network namespace joined to this one by a veth pair: the host side is HOST_ADDRESS, the namespace's
    side APP_ADDRESS (a /30 of their own); removed afterwards."""
    if shutil.which("ip") is None:
        unavailable("iproute2 (ip) is not installed")
    try:
        ip("netns", "add", NAMESPACE)
    except subprocess.CalledProcessError as error:
        unavailable(f"cannot create a network namespace: {error.stderr.strip()}")
    try:
        ip("link", "add", HOST_END, "type", "veth", "peer", "name", NS_END)
        ip("link", "set", NS_END, "netns", NAMESPACE)
        ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_END)
        ip("link", "set", HOST_END, "up")
        ip("addr", "add", f"{APP_ADDRESS}/30", "dev", NS_END, namespace=NAMESPACE)
        ip("link", "set", NS_END, "up", namespace=NAMESPACE)
        ip("link", "set", "lo", "up", namespace=NAMESPACE)
        yield NAMESPACE
    finally:
        subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, timeout=30)  # takes the pair along
        subprocess.run(["ip", "link", "del", HOST_END], capture_output=True, timeout=30)


@pytest.fixture
def pacs_listener():
    """The configured node: a socket on the host's side of the pair that records any connection."""
    with socket.socket() as server:
        server.bind((HOST_ADDRESS, 0))
        server.listen(8)
        server.settimeout(0.5)
        yield server


def wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy between the two ends
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{log.read_text()[-3000:]}")
        try:
            with direct.open(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {SERVER_START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def test_an_anonymous_visitor_from_another_address_cannot_reach_the_pacs(namespace, pacs_listener, tiny_run, tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    shutil.copytree(tiny_run, tmp_path / "runs" / "run-a")
    nodes_file, log_file = tmp_path / "pacs_nodes.toml", tmp_path / "audit.jsonl"
    pacs_nodes.add_node("ward", pacs.Node(HOST_ADDRESS, pacs_listener.getsockname()[1], "WARD"), path=nodes_file)
    port = free_port()
    env = {**os.environ, "XRAY_RUNS_DIR": str(tmp_path / "runs"), "XRAY_MODEL_DIR": str(tmp_path / "runs" / "run-a"),
           "XRAY_SAMPLES_DIR": str(tmp_path / "no-samples"), pacs_nodes.NODES_FILE_ENV: str(nodes_file),
           audit.AUDIT_LOG_ENV: str(log_file), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    server_log = tmp_path / "streamlit.log"
    with open(server_log, "wb") as output:  # no [auth], listening on the namespace's address only
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"),
             "--server.headless", "true", "--server.address", APP_ADDRESS, "--server.port", str(port),
             "--browser.gatherUsageStats", "false"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://{APP_ADDRESS}:{port}"
    try:
        wait_for(url, server, server_log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=[*CHROMIUM_ARGS, "--no-proxy-server"])
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(TIMEOUT_MS)
                expect.set_options(timeout=TIMEOUT_MS)
                page.goto(url)
                expect(page.get_by_text("This server is reachable from the network and nobody signs in")).to_be_visible()
                expect(page.locator('[data-testid="stFileUploader"]')).to_be_visible()  # scoring works
                assert "Worklist" not in links(page)
                expect(page.get_by_role("link", name="Worklist")).to_have_count(0)
                page.goto(f"{url}/worklist")  # by its URL: refused
                expect(page.get_by_text("Access refused: This server has no sign-in")).to_be_visible()
                expect(page.get_by_role("button", name="Find studies")).to_have_count(0)
                expect(page.get_by_text("PACS nodes (administrators)")).to_have_count(0)
                expect(page.get_by_text("WARD at")).to_have_count(0)  # the configured node is not even named
            finally:
                browser.close()
    finally:
        stop_server(server)
    try:
        pacs_listener.accept()[0].close()
        connected = True
    except TimeoutError:
        connected = False
    assert not connected, "the server opened a connection to the PACS for an anonymous visitor"
    assert not [e for e in audit.read(log_file) if e["action"].startswith("pacs") and e["outcome"] == "ok"]
