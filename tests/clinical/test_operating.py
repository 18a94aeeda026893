"""Named operating points, site calibration and external evaluation records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.clinical.test_safety_operating import make_site_sample, sharpen
from xraycore.evaluation import external as evaluate
from xraycore import metrics
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.evaluation import site_calibration
from xraycore.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_dir(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny trained run (tests change its operating points)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "model"))


def test_is_positive_calls_a_score_at_the_threshold_positive():
    assert metrics.is_positive(0.5, 0.5) and not metrics.is_positive(0.4999, 0.5)
    assert metrics.is_positive(np.array([0.2, 0.5, 0.7]), 0.5).tolist() == [False, True, True]


def test_a_run_without_named_points_answers_with_its_internal_point(model_dir):
    internal = json.loads((model_dir / runs.OPERATING_POINT_FILE).read_text())
    point = operating.get(model_dir)
    assert point["name"] == operating.INTERNAL and point["threshold"] == internal["threshold"]
    assert Predictor(model_dir).operating_point == operating.INTERNAL


def test_saving_a_point_keeps_the_shipped_one_and_records_history(model_dir):
    shipped = (model_dir / runs.OPERATING_POINT_FILE).read_text()
    operating.save(model_dir, "ward 3", {"threshold": 0.3, "temperature": 1.5, "beta": 1.0}, user="dr-a")
    assert (model_dir / runs.OPERATING_POINT_FILE).read_text() == shipped, "the shipped value is never rewritten"
    state = operating.load(model_dir)
    assert state["active"] == "ward 3" and set(state["points"]) == {"internal", "ward 3"}
    [entry] = state["history"]
    assert entry["user"] == "dr-a" and entry["old"]["name"] == "internal" and entry["new"]["threshold"] == 0.3
    predictor = Predictor(model_dir)
    assert predictor.threshold == 0.3 and predictor.temperature == 1.5 and predictor.operating_point == "ward 3"

    operating.reset(model_dir)
    assert Predictor(model_dir).operating_point == "internal"
    assert Predictor(model_dir, operating_point="ward 3").threshold == 0.3, "a stored point can still be asked for"


@pytest.mark.parametrize("name", ["internal", "", "../escape", "x" * 100])
def test_bad_or_reserved_names_are_refused(model_dir, name):
    with pytest.raises(ValueError):
        operating.save(model_dir, name, {"threshold": 0.5})
    assert not (model_dir / operating.POINTS_FILE).exists()


def test_threshold_outside_zero_one_is_refused(model_dir):
    with pytest.raises(ValueError, match="between 0 and 1"):
        operating.save(model_dir, "bad", {"threshold": 1.5})


def test_fit_site_point_recovers_a_known_temperature_and_threshold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    true_logit = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.0, y.size)
    overconfident = np.stack([np.zeros_like(true_logit), 3.0 * true_logit], axis=1)  # 3x too sharp
    point = operating.fit_site_point(y, overconfident, positive_index=1, beta=2.0)
    assert point["temperature"] == pytest.approx(3.0 * 0.5, rel=0.15)  # logit of a N(±1, 1) mix is 2x; 3x / 2
    probability = metrics.softmax(overconfident, point["temperature"])[:, 1]
    assert point["threshold"] == pytest.approx(metrics.best_fbeta_threshold(y, probability, 2.0)[0])


def test_cross_fitted_rates_see_what_the_calibration_sample_hides():
    """A point fitted and measured on the same noise looks better than chance; on held-out folds it does not."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 60)
    noise = np.stack([np.zeros(120), rng.normal(0, 1, 120)], axis=1)
    point = operating.fit_site_point(y, noise, positive_index=1, beta=1.0)
    in_sample = float(np.mean(metrics.is_positive(metrics.softmax(noise, point["temperature"])[:, 1],
                                                    point["threshold"]) == y))
    crossed = operating.cross_fitted_rates(y, noise, positive_index=1, beta=1.0)
    assert crossed["accuracy"] < in_sample and crossed["accuracy"] < 0.6
    assert (crossed["folds"], crossed["repeats"]) == (5, 10) and crossed["accuracy_sd"] > 0

    signal = np.stack([np.zeros(120), np.where(y == 1, 4.0, -4.0)], axis=1)  # separable: every fold calls all right
    assert operating.cross_fitted_rates(y, signal, 1)["accuracy"] == 1.0
    assert operating.cross_fitted_rates(y[:63], signal[:63], 1) is None, "3 positives cannot fill 5 folds"


def test_cross_fitted_rates_keep_a_patients_images_on_one_side(monkeypatch):
    seen = []
    real = operating.fit_site_point
    monkeypatch.setattr(operating, "fit_site_point", lambda y, logits, *a: seen.append(logits[:, 1].copy()) or real(y, logits, *a))
    y = np.repeat([0, 1], 20)
    patient = np.arange(40) // 2  # two images per patient, with the same logit: the patient's tag
    logits = np.stack([np.zeros(40), patient.astype(float)], axis=1)
    operating.cross_fitted_rates(y, logits, 1, groups=[str(p) for p in patient], repeats=2)
    for fitted in seen:
        values, counts = np.unique(fitted, return_counts=True)
        assert (counts == 2).all(), "a patient was split between fitting and measuring"


def test_sample_warning_only_for_small_samples():
    assert operating.sample_warning(120, 80) is None
    assert "Only 12 images" in operating.sample_warning(12, 80)
    assert operating.sample_warning(50, 50) is None and "Only 49 images" in operating.sample_warning(49, 50)


def test_calibrate_on_a_site_folder_stores_an_active_point(model_dir, tmp_path):
    sharpen(model_dir)  # the tiny run's own logits are too flat for a temperature fit to converge
    sample = make_site_sample(tmp_path / "site")
    point = site_calibration.calibrate_folder(model_dir, sample, "site-a", beta=2.0)
    assert operating.active_name(model_dir) == "site-a"
    assert point["n"] == 100 and point["n_positive"] == 50 and point["kind"] == "site calibration"
    assert point["warning"] is None
    assert len(point["data_fingerprint"]) == 64
    crossed = point["site_cross_fitted"]
    assert crossed["folds"] == 5 and 0.0 <= crossed["accuracy"] <= 1.0
    result = evaluate.evaluate_folder(model_dir, sample)
    assert result["operating_point"] == "site-a" and result["threshold"] == pytest.approx(point["threshold"])
    assert result["recall"] == pytest.approx(point["site_report"]["recall"])
    internal = evaluate.evaluate_folder(model_dir, sample, operating_point="internal")
    assert internal["operating_point"] == "internal"


def test_evaluation_record_is_saved_and_listed(model_dir, tiny_dataset):
    result = evaluate.evaluate_folder(model_dir, tiny_dataset / "test", with_ci=True)
    path = evaluate.save_evaluation(model_dir, "site-check", tiny_dataset / "test", result, note="external")
    [record] = evaluate.list_evaluations(model_dir)
    assert path.parent.name == evaluate.EVALUATIONS_DIR
    assert record["n"] == 32 and record["prevalence"] == 0.5 and record["ci95"]["accuracy"]
    assert record["data_fingerprint"] == result["data_fingerprint"] and record["date"]
    assert str(tiny_dataset) not in json.dumps(record), "no machine paths in the record"


@pytest.mark.slow
def test_calibrate_and_evaluate_from_the_command_line(model_dir, tiny_dataset, tmp_path, capsys):
    def cli(*args):  # the verbs in this process (the process contract itself: tests/cli/test_cli.py)
        from types import SimpleNamespace

        from xraycore.cli import main as command_line

        capsys.readouterr()
        code = command_line.main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    sharpen(model_dir)
    done = cli("calibrate", "--model", str(model_dir), "--data", str(make_site_sample(tmp_path / "site")), "--name", "site-b",
               "--no-activate", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "site-b" and operating.active_name(model_dir) == "internal"
    done = cli("evaluate", "--model", str(model_dir), "--data", str(tiny_dataset / "test"),
               "--operating-point", "site-b", "--save", "b-check", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["operating_point"] == "site-b"
    assert (model_dir / "evaluations" / "b-check.json").is_file()
    listing = cli("operating-point", "--model", str(model_dir), "--activate", "site-b")
    assert listing.returncode == 0 and "* site-b" in listing.stdout
