"""``python -m xraycore shortcuts``: one JSON object whose every figure has a bootstrap 95% CI and a verdict, a
readable table without --json, --save keeps the report with the model, and bad input is one plain error."""
from __future__ import annotations

import json
import shutil

from xraycore.cli import main as cli
from xraycore.evaluation import shortcuts


def test_shortcuts_json_has_every_figure_with_its_ci_and_limit(tiny_run, tiny_dataset, capsys):
    assert cli.main(["shortcuts", "--model", str(tiny_run), "--data", str(tiny_dataset / "test"), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # stdout holds the JSON alone: progress went to stderr
    assert report["n"] == 32 and report["model"] == tiny_run.name
    for name in ("band_mass", "peak_in_band", "lung_lift", "lungs_blanked_drop", "band_blanked_flips",
                 "corners_blanked_flips"):
        figure = report["figures"][name]
        assert figure["limit"] == f"{shortcuts.LIMITS[name][1]} {shortcuts.LIMITS[name][2]:g}"
        if figure["value"] is not None:
            low, high = figure["ci95"]
            assert isinstance(low, float) and low <= figure["value"] <= high
            assert figure["pass"] in (True, False)
    assert report["figures"]["band_mass"]["value"] is not None  # the tiny model's heat maps are not all empty


def test_shortcuts_table_and_save(tiny_run, tiny_dataset, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    assert cli.main(["shortcuts", "--model", str(model), "--data", str(tiny_dataset / "test"), "--save", "tiny"]) == 0
    captured = capsys.readouterr()
    assert "CAM mass in the outer 10% band" in captured.out and "<= 0.15" in captured.out
    assert "limits" in captured.out.splitlines()[-1] or "nothing" in captured.out.splitlines()[-1]
    assert "kept the report" in captured.err
    [kept] = shortcuts.list_reports(model)
    assert kept["name"] == "tiny" and kept["n"] == 32


def test_shortcuts_on_a_folder_without_images_is_one_plain_error(tiny_run, tmp_path, capsys):
    (tmp_path / "empty" / "PNEUMONIA").mkdir(parents=True)
    assert cli.main(["shortcuts", "--model", str(tiny_run), "--data", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: no images found")
