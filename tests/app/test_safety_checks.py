"""Small safety details of issue 34, item 6: the Audit page speaks its own words about a bad "since" (one parser,
in xraycore.access.audit), and a damaged ONNX graph never makes `predict` fall back to torch in silence."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.synthetic import make_dataset
from tests.app.test_access_app import env, run  # noqa: F401 - env is a fixture
from tests.app.test_app import app_env, runs_root  # noqa: F401 - fixtures
from xraycore.access import audit

REPO = Path(__file__).resolve().parents[2]


def test_a_bad_since_on_the_audit_page_is_said_in_the_pages_words(env):  # noqa: F811
    at = run("pages/audit.py", "admin")
    at.text_input(key="audit_since").set_value("yesterday").run()
    [error] = [e.value for e in at.error]
    assert "--since" not in error, "the page has no command-line options"
    assert error.startswith("“Since” needs") and "'yesterday' is neither" in error
    at.text_input(key="audit_since").set_value("7d").run()
    assert not at.error


def test_one_since_parser_with_neutral_words():
    with pytest.raises(ValueError) as refused:
        audit.parse_since("soon")
    assert "--since" not in str(refused.value) and "'soon' is not a time" in str(refused.value)
    assert audit.parse_since("2026-11-29").year == 2026


def test_predict_says_on_stderr_why_torch_answers_for_a_damaged_graph(tiny_exported, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_exported, model)
    (model / "model.onnx").write_bytes((model / "model.onnx").read_bytes()[:200])  # cut short: a damaged graph
    films = make_dataset(tmp_path / "films", per_class=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-m", "xraycore", "predict", "--model", str(model), "--json",
                           *map(str, sorted((films / "NORMAL").iterdir()))], capture_output=True, text=True, cwd=REPO, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["backend"] for line in done.stdout.splitlines() if line.strip()] == ["torch"]
    assert "ONNX Runtime cannot serve the exported graph, so torch answers" in done.stderr
    assert "is damaged" in done.stderr, done.stderr
