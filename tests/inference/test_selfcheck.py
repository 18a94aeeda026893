"""`selfcheck`: the samples' probabilities and heat maps against the model's reference values, and the weights'
sha256; plain PASS/FAIL lines, exit status 1 on a mismatch. `--write-reference` writes the reference file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import xray_like
from xraycore.cli import main as cli
from xraycore.inference import selfcheck

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "default"


@pytest.fixture
def checked_model(tiny_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of tiny_run and two sample scans per class, with reference values written by the CLI."""
    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    samples = tmp_path / "samples"
    rng = np.random.default_rng(5)
    for class_name, pneumonia in (("NORMAL", False), ("PNEUMONIA", True)):
        (samples / class_name).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(xray_like(rng, 64, pneumonia)).save(samples / class_name / f"s{index}.png")
    assert cli.main(["selfcheck", "--model", str(model), "--samples", str(samples), "--write-reference"]) == 0
    return model, samples


def _run(capsys, model: Path, samples: Path) -> tuple[int, str]:
    code = cli.main(["selfcheck", "--model", str(model), "--samples", str(samples)])
    return code, capsys.readouterr().out


def test_selfcheck_passes_on_its_own_reference_and_says_what_passed(checked_model, capsys):
    model, samples = checked_model
    capsys.readouterr()
    code, out = _run(capsys, model, samples)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("PASS  weights sha256") and sum(line.startswith("PASS") for line in lines) == 5
    assert "PASS  PNEUMONIA/s1.png: P(PNEUMONIA)" in out and "heat map mean |Δ|" in out
    assert lines[-1].startswith("self-check passed: 5 of 5 checks") and "±0.001" in lines[-1]
    reference = json.loads((model / selfcheck.REFERENCE_FILE).read_text())
    assert reference["tolerance"] == {"probability": 0.001, "heatmap_mean_abs": 0.05}
    assert len(reference["samples"]["NORMAL/s0.png"]["heatmap"]) == selfcheck.HEATMAP_GRID


@pytest.mark.parametrize("probability_shift, heat_shift, passes", [
    (0.0009, 0.0, True), (0.0011, 0.0, False), (-0.0011, 0.0, False),  # just inside and just outside ±0.001
    (0.0, 0.049, True), (0.0, 0.051, False),  # the heat map's mean |Δ| limit of 0.05
])
def test_tolerances_hold_at_their_edges(checked_model, capsys, probability_shift, heat_shift, passes):
    """The reference is set to what this installation answers, shifted by a hair less or more than each
    tolerance docs/reading-room.md promises (±0.001 on probabilities, mean |Δ| 0.05 on heat maps)."""
    model, samples = checked_model
    [found] = selfcheck.score(model, [samples / "NORMAL" / "s0.png"]).values()
    path = model / selfcheck.REFERENCE_FILE
    reference = json.loads(path.read_text())
    entry = reference["samples"]["NORMAL/s0.png"]
    entry["probabilities"] = {**found["probabilities"],
                              "PNEUMONIA": found["probabilities"]["PNEUMONIA"] + probability_shift}
    entry["heatmap"] = (np.asarray(found["heatmap"], dtype=np.float64) + heat_shift).tolist()
    path.write_text(json.dumps(reference))
    capsys.readouterr()
    code, out = _run(capsys, model, samples)
    line = next(line for line in out.splitlines() if "NORMAL/s0.png" in line)
    assert (code, line.startswith("PASS")) == ((0, True) if passes else (1, False)), out
    if not passes:
        assert ("P(PNEUMONIA)" if probability_shift else "heat map mean |Δ|") in line and ">" in line


@pytest.mark.parametrize("tamper, expected", [
    ("weights", "FAIL  weights sha256"),
    ("missing sample", "FAIL  PNEUMONIA/s1.png: the sample scan is missing"),
])
def test_a_mismatch_fails_with_exit_status_1(checked_model, capsys, tamper, expected):
    model, samples = checked_model
    path = model / selfcheck.REFERENCE_FILE
    reference = json.loads(path.read_text())
    if tamper == "weights":
        reference["weights_sha256"] = "0" * 64
    else:
        (samples / "PNEUMONIA" / "s1.png").unlink()
    path.write_text(json.dumps(reference))
    capsys.readouterr()
    code, out = _run(capsys, model, samples)
    assert code == 1 and expected in out
    assert out.splitlines()[-1].startswith("self-check FAILED: 1 of 5 checks did not match")


def test_without_a_reference_it_says_how_to_make_one(tiny_run, capsys):
    assert cli.main(["selfcheck", "--model", str(tiny_run)]) == 1
    assert "selfcheck --write-reference" in capsys.readouterr().out


def test_the_bundled_model_passes_its_selfcheck(capsys, monkeypatch):
    """What the README tells users to run after installing: the shipped reference matches this installation."""
    monkeypatch.delenv("XRAY_MODEL_DIR", raising=False)
    monkeypatch.delenv("XRAY_SAMPLES_DIR", raising=False)
    assert (BUNDLED / selfcheck.REFERENCE_FILE).is_file()
    code = cli.main(["selfcheck"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1].startswith("self-check passed: 7 of 7 checks")
