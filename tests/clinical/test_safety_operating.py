"""Issue 34, items 3, 4 and part of 7: the Operating point page and site calibration must not mislead about the
threshold in use, nor accept a calibration they should refuse.

The bundled model (models/default) is only ever used through a copy in tmp_path.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers.synthetic import make_dataset
from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from xraycore.access import audit
from xraycore.evaluation import model_card as card
from xraycore.cli import main as cli
from xraycore.evaluation import external as evaluate
from xraycore.clinical import fit_bootstrap
from xraycore import metrics
from xraycore.metrics.calibration import TEMPERATURE_BOUNDS
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.common.tensor_files import load_arrays, save_arrays
from xraycore.evaluation import site_calibration
from xraycore.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "default"
SHIPPED = "kermany-site"


def make_site_sample(root: Path, per_class: int = 50, swapped: int = 4, seed: int = 5) -> Path:
    """A site's labelled sample of ``per_class`` films per class whose labels disagree with the film on
    ``swapped`` films of each class, as a real site's do: the tiny model then cannot call it perfectly, so its
    temperature fit converges inside its bounds (perfectly separated films drive it to the bound)."""
    make_dataset(root, per_class=per_class, seed=seed)
    for source, target in (("NORMAL", "PNEUMONIA"), ("PNEUMONIA", "NORMAL")):
        for path in sorted((root / source).iterdir())[:swapped]:
            path.rename(root / target / f"swapped-{path.name}")
    return root


def sharpen(model: Path, factor: float = 100.0) -> Path:
    """Scale the tiny run's classifier head by ``factor``: its logits are ~0.05 apart, so any temperature fit on
    them runs into the lower bound (0.05) and fails; a sharper head calls the same films with real confidence."""
    arrays = load_arrays(model / runs.WEIGHTS_FILE)
    for key in ("classifier.weight", "classifier.bias"):
        arrays[key] = arrays[key] * factor
    save_arrays(model / runs.WEIGHTS_FILE, arrays)
    return model


@pytest.fixture
def sharp_model(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run whose temperature fit converges on :func:`make_site_sample`."""
    return sharpen(Path(shutil.copytree(tiny_run, tmp_path / "sharp")))


@pytest.fixture
def bundled(tmp_path) -> Path:
    """A private copy of the bundled model (its points file is changed by these tests)."""
    return Path(shutil.copytree(BUNDLED, tmp_path / "default"))


@pytest.fixture
def model_dir(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "model"))


@pytest.fixture
def site_sample(tmp_path) -> Path:
    return make_site_sample(tmp_path / "site")


def separated(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logits of films the model calls perfectly, far from the threshold."""
    y = np.repeat([0, 1], per_class)
    rng = np.random.default_rng(per_class)
    return y, np.stack([np.zeros(y.size), np.where(y == 1, 4.0, -4.0) + rng.normal(0, 0.5, y.size)], axis=1)


def fitted_point(y: np.ndarray, logits: np.ndarray) -> dict:
    """site_calibration.fit_site_calibration on given logits (as if a predictor had scored these films)."""
    names = ["NORMAL", "PNEUMONIA"]
    predictor = SimpleNamespace(positive_class="PNEUMONIA", class_names=names, positive_index=1)
    labels = [names[value] for value in y]
    scored = evaluate.ScoredFolder([f"IM-{i:04d}-0001.jpeg" for i in range(y.size)], labels, logits, logits, [],
                                   names, [f"{i:064x}" for i in range(y.size)])
    return site_calibration.fit_site_calibration(predictor, scored, 2.0, "sample")


# ----------------------------------------------------------------------------- item 3: the shipped point


def test_reset_restores_the_point_the_bundled_model_shipped_active(bundled, capsys):
    shipped = operating.get(bundled, SHIPPED)
    operating.activate(bundled, operating.INTERNAL)
    assert operating.reset(bundled) == SHIPPED
    predictor = Predictor(bundled)
    assert predictor.operating_point == SHIPPED
    assert (predictor.threshold, predictor.temperature) == (shipped["threshold"], shipped["temperature"])

    operating.activate(bundled, operating.INTERNAL)
    assert cli.main(["operating-point", "--model", str(bundled), "--reset"]) == 0
    assert operating.active_name(bundled) == SHIPPED
    assert f"* {SHIPPED} (shipped)" in capsys.readouterr().out


def test_a_points_file_without_the_record_ships_what_it_holds(model_dir):
    operating.save(model_dir, "ward 3", {"threshold": 0.3, "temperature": 1.5})
    stored = json.loads((model_dir / operating.POINTS_FILE).read_text())
    del stored[operating.SHIPPED_KEY]  # as an older version wrote it: the point active then is what shipped
    (model_dir / operating.POINTS_FILE).write_text(json.dumps(stored))
    assert operating.shipped_name(model_dir) == "ward 3"
    operating.activate(model_dir, operating.INTERNAL)  # the first change records it
    assert json.loads((model_dir / operating.POINTS_FILE).read_text())[operating.SHIPPED_KEY] == "ward 3"
    assert operating.reset(model_dir) == "ward 3" and operating.active_name(model_dir) == "ward 3"


def test_a_bundle_records_the_point_it_ships_with(model_dir, tmp_path):
    operating.save(model_dir, "ward 3", {"threshold": 0.3, "temperature": 1.5})
    bundle = card.bundle_model(model_dir, tmp_path / "bundle", "test")
    assert json.loads((bundle / operating.POINTS_FILE).read_text())[operating.SHIPPED_KEY] == "ward 3"
    operating.activate(bundle, operating.INTERNAL)
    assert operating.reset(bundle) == "ward 3"


def test_the_shipped_point_cannot_be_overwritten(bundled):
    before = (bundled / operating.POINTS_FILE).read_bytes()
    with pytest.raises(ValueError, match="shipped with"):
        operating.save(bundled, SHIPPED, {"threshold": 0.05, "temperature": 1.0})
    with pytest.raises(ValueError, match="shipped with"):
        operating.save(bundled, f" {SHIPPED} ", {"threshold": 0.05})
    assert (bundled / operating.POINTS_FILE).read_bytes() == before


def test_old_is_filled_in_the_history_and_the_audit_line(bundled, tmp_path, monkeypatch):
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(log))
    shipped = operating.get(bundled, SHIPPED)
    operating.save(bundled, "ward 3", {"threshold": 0.4, "temperature": 1.2, "beta": 2.0})
    operating.activate(bundled, operating.INTERNAL)
    expected_old = {"name": SHIPPED, "threshold": shipped["threshold"], "temperature": shipped["temperature"],
                    "beta": shipped["beta"]}
    saved, activated = operating.load(bundled)["history"][-2:]
    assert saved["old"] == expected_old and saved["new"]["name"] == "ward 3"
    assert activated["old"]["name"] == "ward 3" and activated["new"]["name"] == operating.INTERNAL
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["action"] == "operating_point.save" and lines[0]["old"] == expected_old


def test_a_chosen_threshold_keeps_the_temperature_it_was_shown_with(bundled):
    shown = operating.get(bundled)
    assert shown["name"] == SHIPPED
    record = site_calibration.chosen_point(0.5, 2.0, shown)
    assert record["temperature"] == shown["temperature"] != operating.get(bundled, operating.INTERNAL)["temperature"]
    assert f"{shown['temperature']:.3f}" in record["source"] and SHIPPED in record["source"]
    run = runs.Run(bundled)
    truth, score = site_calibration.validation_scores(run, "PNEUMONIA", shown["temperature"])
    logits = run.predictions("val")["logits"]
    assert score == pytest.approx(metrics.softmax(logits, shown["temperature"])[:, 1])


# ----------------------------------------------------------------------------- item 3: the page (AppTest)


@pytest.fixture
def bundled_env(app_env, bundled, monkeypatch) -> Path:  # noqa: F811 - app_env is the shared fixture
    monkeypatch.setenv("XRAY_MODEL_DIR", str(bundled))
    return bundled


def test_the_page_opens_on_the_active_point_and_saving_keeps_its_temperature(bundled_env):
    shipped = operating.get(bundled_env, SHIPPED)
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"active operating point **{SHIPPED}**: threshold {shipped['threshold']:.3f}" in at.caption[0].value
    assert at.slider[0].value == pytest.approx(shipped["threshold"], abs=1e-3), "opens at the threshold in use"
    shown = {m.label: m.value for m in at.metric}
    assert shown["accuracy (cross-fitted)"] == f"{shipped['site_cross_fitted']['accuracy']:.3f}"

    at.slider[0].set_value(0.7).run()
    at.text_input(key="op_save_name").set_value("ward-7")
    at.checkbox(key="op_save_confirm").check().run()
    at.button(key="op_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = operating.get(bundled_env)
    assert saved["name"] == "ward-7" and saved["temperature"] == shipped["temperature"]
    assert any("Saved and activated 'ward-7'" in s.value and f"{shipped['temperature']:.3f}" in s.value
               for s in at.success)
    assert at.checkbox(key="op_save_confirm").value is False, "the confirmation box clears"
    at.slider[0].set_value(0.5).run()
    assert any("Saved and activated 'ward-7'" in s.value for s in at.success), "the confirmation stays"

    at.button(key="op_reset").click().run()
    assert operating.active_name(bundled_env) == SHIPPED
    assert any(f"Reset to the shipped point '{SHIPPED}'" in s.value for s in at.success)


# ----------------------------------------------------------------------------- item 4: what calibration refuses


def test_other_class_folders_get_one_sentence_and_no_fit_button(bundled_env, tmp_path):
    covid = make_dataset(tmp_path / "covid", per_class=3, classes=("COVID", "Normal"))
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    at.text_input(key="op_site_folder").set_value(str(covid)).run()
    assert not at.exception, [e.value for e in at.exception]
    [error] = [e.value for e in at.error]
    assert "NORMAL/ and PNEUMONIA/" in error and "COVID/" in error and "\n" not in error
    assert not any(button.key == "op_site_fit_button" for button in at.button), "no Fit button for it"
    with pytest.raises(ValueError, match="NORMAL/ and PNEUMONIA/"):
        site_calibration.calibrate_folder(bundled_env, covid, "covid")


def test_under_fifty_films_per_class_is_a_preview_only(model_dir, tiny_dataset, capsys):
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(ValueError, match="preview only"):
        site_calibration.calibrate_folder(model_dir, tiny_dataset / "test", "small")
    assert cli.main(["calibrate", "--model", str(model_dir), "--data", str(tiny_dataset / "test"),
                     "--name", "small"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: Only 16 images") and "preview only" in error and "\n" not in error
    assert sorted(p.name for p in model_dir.iterdir()) == before, "nothing stored"

    small = {"kind": operating.SITE_KIND, "threshold": 0.5, "temperature": 1.0, "n_positive": 16, "n_negative": 16}
    with pytest.raises(ValueError, match="preview only"):
        operating.save(model_dir, "small", small)
    operating.save(model_dir, "ok", {"threshold": 0.5})
    stored = json.loads((model_dir / operating.POINTS_FILE).read_text())
    stored["points"]["small"] = small  # written by an older version that let it through
    (model_dir / operating.POINTS_FILE).write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="preview only"):
        operating.activate(model_dir, "small")
    assert operating.active_name(model_dir) == "ok"


def test_a_temperature_at_its_search_bound_is_a_failed_fit(model_dir):
    point = fitted_point(*separated(60))
    assert point["temperature"] < 0.1 and point["temperature_at_bound"]
    assert point["warning"].startswith("The fit failed") and "search range (0.05 to 20)" in point["warning"]
    with pytest.raises(ValueError, match="The fit failed"):
        operating.save(model_dir, "saturated", point)


def test_intervals_show_the_uncertainty_of_twenty_films():
    y, logits = separated(10)
    fixed = metrics.bootstrap_report(y, metrics.softmax(logits)[:, 1], 0.5)
    assert fixed["accuracy"][1:] == (1.0, 1.0), "a bootstrap at one fixed threshold cannot see it"
    point = fitted_point(y, logits)
    assert point["site_report"]["accuracy"] == 1.0
    for key in ("accuracy", "recall", "specificity", "auroc"):
        value, low, high = point["site_ci95"][key]
        assert value == 1.0 and low < 0.9, f"{key}: {low:.3f}–{high:.3f} hides how few films there were"


def test_a_sound_site_calibration_of_enough_films_is_saved(sharp_model, site_sample, capsys):
    model_dir = sharp_model
    point = site_calibration.calibrate_folder(model_dir, site_sample, "site-a")
    assert point["n_positive"] == point["n_negative"] == 50 and point["warning"] is None
    low, high = TEMPERATURE_BOUNDS
    assert low * 1.05 < point["temperature"] < high / 1.05
    assert operating.active_name(model_dir) == "site-a"
    accuracy, lower, upper = point["site_ci95"]["accuracy"]
    assert lower < accuracy <= upper and point["site_ci95"]["threshold"][1] <= point["threshold"]
    assert cli.main(["calibrate", "--model", str(model_dir), "--data", str(site_sample), "--name", "site-b",
                     "--no-activate"]) == 0
    out = capsys.readouterr().out
    assert "'site-b' (stored, not active)" in out and f"accuracy: {accuracy:.4f} (95% CI {lower:.3f}-" in out


def test_the_page_previews_a_small_fit_and_saves_a_sound_one(app_env, sharp_model, site_sample, tiny_dataset,  # noqa: F811
                                                            monkeypatch):
    monkeypatch.setenv("XRAY_MODEL_DIR", str(sharp_model))
    at = start_app()
    at.switch_page("pages/operating_point.py").run()
    at.text_input(key="op_site_folder").set_value(str(tiny_dataset / "test")).run()
    at.button(key="op_site_fit_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("preview only" in w.value for w in at.warning)
    assert not any(button.key == "op_site_save" for button in at.button), "a preview cannot be saved"

    at.text_input(key="op_site_folder").set_value(str(site_sample)).run()
    at.button(key="op_site_fit_button").click().run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    at.text_input(key="op_site_name").set_value("site-x")
    at.button(key="op_site_save").click().run()
    point = operating.get(sharp_model)
    assert point["name"] == "site-x" and point["n"] == 100 and point["kind"] == operating.SITE_KIND
    assert any("Saved and activated 'site-x'" in s.value for s in at.success)
    assert f"active operating point **site-x**: threshold {point['threshold']:.3f}" in at.caption[0].value


def test_fit_intervals_are_never_narrower_than_the_films_can_show():
    """On films the model does not separate, the bootstrap of the fit is at least as wide as the binomial normal
    approximation of the count (it adds the threshold's own uncertainty), and not absurdly wider."""
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 100)
    logits = np.stack([np.zeros(y.size), np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.0, y.size)], axis=1)
    intervals = fit_bootstrap.procedure_intervals(y, logits, 1)
    for name, films in (("accuracy", 200), ("recall", 100), ("specificity", 100)):
        point, low, high = intervals[name]
        binomial = 2 * 1.96 * np.sqrt(point * (1 - point) / films)
        assert 0.8 * binomial <= high - low <= 4 * binomial, (name, high - low, binomial)
    assert fit_bootstrap.wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-3)  # 10 of 10: not 1.00-1.00
