"""A damaged model directory gets one plain sentence naming the file and the remedy: from the Predictor,
the CLI (exit 2, no traceback) and the Diagnose page."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from tests.io.test_io import assert_plain_message
from xraycore.cli import main as cli
from xraycore import models
from xraycore.runs import directory as runs
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import save_weights
from xraycore.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _swap_in_another_backbone(model: Path) -> None:
    other, _ = models.build_model("mobilenetv2_100", 2, pretrained="none")
    save_weights(model / runs.WEIGHTS_FILE, other.state_dict())


def _bundled_member(backbone: str) -> Path:
    """The bundled default's member of this backbone (member names change when the default is retrained)."""
    members = REPO / "models" / "default" / "members"
    return next(p for p in sorted(members.iterdir()) if json.loads((p / runs.CONFIG_FILE).read_text())["backbone"] == backbone)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {  # damage: (how, the file the message must name)
    "truncated weights": (lambda model: _truncate(model / runs.WEIGHTS_FILE), "model.safetensors"),
    "weights of another backbone": (_swap_in_another_backbone, "model.safetensors"),
    "missing weights": (lambda model: (model / runs.WEIGHTS_FILE).unlink(), "model.safetensors"),
    "corrupt config": (lambda model: (model / runs.CONFIG_FILE).write_text('{"backbone": "simple_cnn", '),
                       "config.json"),
    "config without a backbone": (lambda model: (model / runs.CONFIG_FILE).write_text('{"class_names": ["A", "B"]}'),
                                  "config.json"),
    "unknown backbone": (lambda model: (model / runs.CONFIG_FILE).write_text(
        (model / runs.CONFIG_FILE).read_text().replace('"simple_cnn"', '"alexnet_2031"')), "config.json"),
    "truncated out-of-domain detector": (lambda model: _truncate(model / runs.OOD_FILE), "ood.safetensors"),
    "out-of-domain detector of another network": (
        lambda model: shutil.copy(_bundled_member("mobilenetv2_100") / runs.OOD_FILE, model),  # blocks of other widths
        "ood.safetensors"),
    "corrupt operating point": (lambda model: (model / runs.OPERATING_POINT_FILE).write_bytes(b"\x00\xff junk"),
                                "operating_point.json"),
}


@pytest.fixture
def damaged(request, tiny_run, tmp_path) -> tuple[Path, str]:
    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    damage, file_name = DAMAGES[request.param]
    damage(model)
    return model, file_name


@pytest.fixture
def scan(tmp_path) -> Path:
    path = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("damaged", list(DAMAGES), indirect=True)
def test_predictor_and_cli_say_which_file_and_what_to_do(damaged, scan, capsys):
    model, file_name = damaged
    with pytest.raises(ModelDirectoryError) as caught:
        Predictor(model, device="cpu")
    message = str(caught.value)
    assert f": {file_name} " in message and str(model) in message and "Copy the model directory again" in message
    assert_plain_message(message)
    assert caught.value.__cause__ is None and isinstance(caught.value, ValueError)

    assert cli.main(["predict", "--model", str(model), str(scan)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {message}" and captured.out == ""


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["truncated weights"], indirect=True)  # every damage in process above
def test_cli_process_exits_2_with_a_sentence_and_no_traceback(damaged, scan):
    model, file_name = damaged
    done = subprocess.run([sys.executable, "-m", "xraycore", "predict", "--model", str(model), str(scan)], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: The model in ") and file_name in line


def test_missing_directory_is_named_too(tmp_path):
    with pytest.raises(ModelDirectoryError, match="config.json is missing"):
        Predictor(tmp_path / "nowhere", device="cpu")


def test_diagnose_page_shows_a_damaged_model_as_one_message(app_env):
    _truncate(app_env / "run-a" / runs.WEIGHTS_FILE)  # the page's model: a private copy of tiny_run
    at = start_app()
    assert not at.exception, [e.value for e in at.exception]
    [error] = at.error
    assert "model.safetensors is damaged or cut short" in error.value and "Traceback" not in error.value
    # The uploader and the samples are drawn before the model loads (a fast first page); the page stops at the
    # model's error, so no result and no summary can follow.
    assert not any(header.value == "Summary" for header in at.subheader)
