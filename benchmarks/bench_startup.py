"""Start-up: seconds from ``streamlit run app.py`` to Diagnose's uploader on screen, in a real browser.

The browser (Debian's Chromium through Playwright, from this environment) is started first; then the clock
starts with the server process, run by ``--python`` (e.g. a reading-room venv made with
``pip install -r requirements-serve.txt``), on a copy of ``--model`` exported to ONNX when ``--export``.
Goal: ≤ 2 s in the serving install. Also reports the same with this environment's Python (full install), and
the floor: a bare Streamlit script holding only a title and an uploader, served by the serving install.
Usage: python benchmarks/bench_startup.py --python /path/to/serve-venv/bin/python [--model models/default]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, report  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BARE_APP = 'import streamlit as st\nst.title("Diagnose")\nst.file_uploader("Chest X-rays")\n'


def uploader_seconds(python: str, model: Path, page, app: Path = REPO / "app.py") -> float:
    """Server start → file uploader visible, once."""
    port = free_port()
    env = {**os.environ, "XRAY_MODEL_DIR": str(model), "XRAY_RUNS_DIR": str(model.parent / "no-runs"),
           "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    server = subprocess.Popen([python, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() - started > 60:
                    raise RuntimeError("streamlit did not start")
                time.sleep(0.05)
        page.goto(f"http://127.0.0.1:{port}")
        page.locator('[data-testid="stFileUploader"]').wait_for(state="visible", timeout=60_000)
        return time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True, help="the Python of the install to measure (serving venv)")
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from xraycore import export_model

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        model = Path(folder) / "model"
        shutil.copytree(args.model, model)
        export_model(model, "onnx")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        bare = Path(folder) / "bare_app.py"
        bare.write_text(BARE_APP)
        results = {}
        for label, python, app in (("serving_install", args.python, REPO / "app.py"),
                                   ("full_install", sys.executable, REPO / "app.py"),
                                   ("bare_streamlit_floor", args.python, bare)):
            times = []
            for _ in range(args.repeats):
                page = browser.new_context().new_page()
                times.append(uploader_seconds(python, model, page, app))
                page.context.close()
            results[f"{label}_uploader_on_screen_s"] = round(min(times), 2)
            results[f"{label}_all_runs_s"] = [round(t, 2) for t in times]
        browser.close()
    results["ratio_serving_over_bare_streamlit"] = round(results["serving_install_uploader_on_screen_s"]
                                                          / results["bare_streamlit_floor_uploader_on_screen_s"], 2)
    report("start-up: server start → Diagnose's uploader on screen (exported model, onnxruntime backend)",
           {"model": args.model, "serving_python": args.python, **results})


if __name__ == "__main__":
    main()
