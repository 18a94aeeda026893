"""Issue 34, items 2, 5 and 6 (triage): readers answer with released models only, Compare's study mode and
figures, and films that are not chest X-rays get no call. Through xraycore directly and through the app
(streamlit.testing, signed in as a reader or a researcher by replacing xraycore.app.auth.identify)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers.corpus import _colour_photo, _dicom, chest_like
from tests.helpers.synthetic import xray_like
from tests.app.test_app import app_env, png_bytes, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.app import catalog
from xraycore.cli import main as cli
from xraycore.evaluation import comparison
from xraycore.io import intended_use
from xraycore.clinical import operating_points as operating
from xraycore.evaluation import point_evidence
from xraycore.inference import provenance
from xraycore.clinical import releases
from xraycore.reading_room import pdf_report as report_pdf
from xraycore.runs import directory as runs
from xraycore.common.tensor_files import load_weights, save_weights
from xraycore.clinical import triage
from xraycore.app import auth as webauth
from xraycore.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]
READER = access.Identity("Rita Reader", "rita@ward.example", {access.READER})
RESEARCHER = access.Identity("Sam Researcher", "sam@lab.example", {access.RESEARCHER})
ADMIN = access.Identity("Ada Admin", "ada@it.example", {access.ADMIN})


def as_person(monkeypatch, identity: access.Identity) -> None:
    """The app's sessions are ``identity`` (as if signed in through OIDC with that role)."""
    monkeypatch.setattr(webauth, "identify", lambda: identity)


def model_options(at) -> list[str]:
    [picker] = [box for box in at.sidebar.selectbox if box.label == "Model"]
    return list(picker.options)  # as people read them (format_func applied)


# ------------------------------------------------------------------ item 2: released models


def test_a_reader_is_offered_released_models_only_and_a_retrained_directory_loses_its_release(app_env, monkeypatch):
    root = app_env  # run-a is the bundled model ($XRAY_MODEL_DIR), run-b an ordinary finished run
    run_b = (root / "run-b").resolve()
    log = root / "audit-test.jsonl"
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(log))
    assert [c.path.name for c in catalog.model_choices(root, READER)] == ["run-a"]
    researcher_sees = catalog.model_choices(root, RESEARCHER)
    assert [(c.path.name, c.released) for c in researcher_sees] == [("run-a", True), ("run-b", False)]
    assert researcher_sees[1].label == "run run-b · not released"

    with pytest.raises(access.AccessDenied):
        releases.release(run_b, identity=RESEARCHER, root=root)
    releases.release(run_b, identity=ADMIN, root=root)
    assert [c.path.name for c in catalog.model_choices(root, READER)] == ["run-a", "run-b"]
    stored = json.loads((root / releases.RELEASES_FILE).read_text())["models"][str(run_b)]
    assert stored["sha256"] == audit.model_info(run_b)["sha256"] and stored["released_by"] == "ada@it.example"
    lines = [(e["action"], e["outcome"], e["user"]) for e in audit.read(log)]
    assert lines == [("model.release", "refused", "sam@lab.example"), ("model.release", "ok", "ada@it.example")]

    releases.withdraw(run_b, identity=ADMIN, root=root)
    assert [c.path.name for c in catalog.model_choices(root, READER)] == ["run-a"]
    with pytest.raises(ValueError, match="bundled default"):
        releases.withdraw(root / "run-a", identity=ADMIN, root=root)


def test_changed_weights_withdraw_a_release(tiny_run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    for name in ("run-a", "run-b"):
        shutil.copytree(tiny_run, root / name)
    monkeypatch.setenv("XRAY_MODEL_DIR", str(root / "run-a"))
    releases.release(root / "run-b", identity=ADMIN, root=root)
    assert releases.is_released(root / "run-b", root)
    weights = root / "run-b" / runs.WEIGHTS_FILE
    tensors = load_weights(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1.0  # a retrained directory: same place, other weights
    save_weights(weights, tensors)
    assert not releases.is_released(root / "run-b", root)
    assert [c.path.name for c in catalog.model_choices(root, READER)] == ["run-a"]


def test_scoring_with_an_unreleased_model_is_refused_for_a_reader_in_xraycore(app_env, monkeypatch):
    log = app_env / "audit-score.jsonl"
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(log))
    scan = [("chest.png", png_bytes(xray_like(np.random.default_rng(0), 48, pneumonia=True)))]
    unreleased = Predictor(app_env / "run-b", device="cpu")
    with pytest.raises(access.AccessDenied, match="not released for reading"):
        list(unreleased.predict_sources(scan, identity=READER))
    assert [(e["action"], e["outcome"], e["detail"]) for e in audit.read(log)] == [("score", "refused", "not released")]
    assert next(unreleased.predict_sources(scan, identity=RESEARCHER)).ok  # a research preview
    assert next(Predictor(app_env / "run-a", device="cpu").predict_sources(scan, identity=READER)).ok  # bundled


def test_the_app_offers_a_reader_released_models_and_refuses_an_unreleased_one_by_path(app_env, monkeypatch):
    as_person(monkeypatch, READER)
    at = start_app()
    assert model_options(at) == ["default model (run-a)"]
    # Diagnose itself, when a session names an unreleased model by its path (no picker in between).
    page = AppTest.from_file(str(REPO / "pages" / "diagnose.py"), default_timeout=60)
    page.session_state["model_path"] = str((app_env / "run-b").resolve())
    page.run()
    assert [e.value for e in page.error] == [releases.NOT_RELEASED]
    assert not page.file_uploader and "run-b" not in " ".join(m.value for m in page.sidebar.markdown)


def test_a_researcher_previews_an_unreleased_run_under_a_banner_and_an_admin_releases_it(app_env, monkeypatch):
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(app_env / "audit-app.jsonl"))
    as_person(monkeypatch, RESEARCHER)
    at = start_app()
    assert model_options(at) == ["default model (run-a)", "run run-b · not released"]
    assert not any(releases.PREVIEW_BANNER in w.value for w in at.warning)
    at.sidebar.selectbox(key="model_path").set_value(str((app_env / "run-b").resolve())).run()
    assert any(releases.PREVIEW_BANNER in w.value for w in at.warning)
    assert not [b for b in at.sidebar.button if b.key == "release_model"]  # releasing is an admin's

    as_person(monkeypatch, ADMIN)
    at.run()
    [release] = [b for b in at.sidebar.button if b.key == "release_model"]
    release.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert releases.is_released(app_env / "run-b", app_env)
    assert not any(releases.PREVIEW_BANNER in w.value for w in at.warning)
    assert [(e["action"], e["outcome"]) for e in audit.read(app_env / "audit-app.jsonl")
            if e["action"].startswith("model.")] == [("model.release", "ok")]


def test_stopped_runs_are_listed_alike_by_diagnose_and_compare(app_env, monkeypatch):
    (app_env / "run-b" / runs.STATUS_FILE).write_text(json.dumps({"state": "stopped"}))
    assert [c.label for c in catalog.model_choices(app_env)] == ["default model (run-a)",
                                                                 "run run-b · stopped · not released"]
    at = start_app()
    assert model_options(at) == ["default model (run-a)", "run run-b · stopped · not released"]
    at.switch_page("pages/compare.py").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="compare_runs").options == ["default model (run-a)", "run run-b · stopped · not released"]


def test_release_verb_releases_withdraws_and_lists(app_env, monkeypatch, capsys):
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(app_env / "audit-cli.jsonl"))
    run_b = str((app_env / "run-b").resolve())
    assert cli.main(["release", "--model", run_b]) == 0
    assert run_b in capsys.readouterr().out and releases.is_released(run_b, app_env)
    assert cli.main(["release"]) == 0  # the listing alone
    listed = capsys.readouterr().out
    assert run_b in listed and "shipped" in listed
    assert cli.main(["release", "--model", run_b, "--withdraw"]) == 0
    assert not releases.is_released(run_b, app_env) and run_b not in capsys.readouterr().out
    assert cli.main(["release", "--withdraw"]) == 2
    entries = audit.read(app_env / "audit-cli.jsonl")
    assert [(e["action"], e["outcome"], e["via"]) for e in entries] == [("model.release", "ok", access.TERMINAL),
                                                                        ("model.withdraw", "ok", access.TERMINAL)]


# ------------------------------------------------------------------ item 5: Compare


def test_compare_study_mode_compares_the_runs_of_a_study(app_env):
    for name in ("run-a", "run-b"):
        run = runs.Run(app_env / name)
        run.write_json(runs.CONFIG_FILE, {**run.config, "study": "backbones"})
    at = start_app()
    at.switch_page("pages/compare.py").run(timeout=120)
    at.radio(key="compare_mode").set_value("a study").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert "Pick at least two models." not in [info.value for info in at.info]
    table = at.dataframe[0].value
    assert len(table) == 2 and sorted(table["model"]) == sorted(
        comparison.run_label(runs.Run(app_env / name)) for name in ("run-a", "run-b"))


def test_config_differences_read_the_bundled_ensemble_from_its_members(tiny_run):
    bundled = runs.Run(REPO / "models" / "default")
    differences = comparison.config_differences([bundled, runs.Run(tiny_run)])
    shown = differences["backbone"][comparison.run_label(bundled)]
    assert shown is not None and "mobilenetv2_100" in shown and "efficientnet_lite0" in shown
    assert differences["lr"][comparison.run_label(bundled)] == pytest.approx(1e-3)  # the members agree
    assert sum(value is None for values in differences.values() for label, value in values.items()
               if label == comparison.run_label(bundled)) < len(differences) / 4


def test_the_bundled_model_leads_with_its_active_site_point_cross_fitted():
    bundled = REPO / "models" / "default"
    point = operating.get(bundled)
    assert point["name"] == "kermany-site"
    [first, *rest] = point_evidence.ordered_evidence(bundled)
    assert first["active"] and first["operating_point"] == "kermany-site" and first["n"] == point["n"]
    assert first["sensitivity"] == point["site_cross_fitted"]["sensitivity"]
    assert first["specificity"] == point["site_cross_fitted"]["specificity"]
    assert rest[0]["operating_point"] == "internal" and not rest[0]["active"]


def _with_site_point(model_dir: Path) -> dict:
    point = {"threshold": 0.4, "temperature": 1.3, "beta": 2.0, "kind": "site calibration", "n": 160, "n_positive": 80, "n_negative": 80,
             "source": "site calibration on 160 images of ward_sample", "site_report": {"auroc": 0.9123},
             "site_cross_fitted": {"accuracy": 0.8811, "sensitivity": 0.9345, "specificity": 0.7766,
                                   "accuracy_sd": 0.01, "folds": 5, "repeats": 10}}
    operating._save(model_dir, "ward-site", point, activate=True, user="test")
    return point


def test_diagnose_shows_the_active_points_figures_first_in_a_readable_sidebar(app_env):
    _with_site_point(app_env / "run-a")
    at = start_app()
    assert not at.exception, [e.value for e in at.exception]
    figures = next(m.value for m in at.sidebar.markdown if "AUROC" in m.value)
    first = figures.splitlines()[0]
    assert "in use" in first and "ward-site" in first and "0.934" in first and "0.777" in first and "0.912" in first
    assert "internal validation" in figures.splitlines()[1]
    assert not at.sidebar.dataframe  # no 240 px table showing one column


# ------------------------------------------------------------------ item 6: triage


def _result(name: str, p: float | None, *, ood: bool = False, not_assessed: str | None = None) -> catalog.DisplayResult:
    if p is None:
        return catalog.DisplayResult(name=name, error="unreadable")
    return catalog.DisplayResult(name=name, class_names=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA",
                                 probabilities={"NORMAL": 1 - p, "PNEUMONIA": p}, positive_probability=p,
                                 out_of_domain=ood, not_assessed=not_assessed)


def test_triage_groups_in_domain_then_out_of_domain_then_not_assessed_then_failed():
    batch = [_result("photo", 0.93, ood=True, not_assessed=triage.NOT_CHEST), _result("bad", None),
             _result("odd", 0.95, ood=True), _result("low", 0.1), _result("high", 0.6)]
    ordered = sorted(batch, key=catalog.triage_key)
    rows = catalog.summary_rows(ordered, 0.5)
    assert [(r["file"], r["flag"], r["call"]) for r in rows] == [
        ("high", "", "PNEUMONIA"), ("low", "", "NORMAL"), ("odd", "out of domain", "PNEUMONIA"),
        ("photo", "not assessed", "not assessed: not a chest X-ray"),
        ("bad", "failed", "not scored (the file could not be read)")]
    assert rows[2]["probability"] == "95.0% (not reliable for this image)"
    assert rows[3]["probability"] == "" and rows[4]["probability"] == ""
    assert all(value is not None for row in rows for key, value in row.items() if key in ("call", "flag"))


def test_a_colour_photo_gets_no_call_in_predict_json(tiny_run, tmp_path, capsys):
    photo = tmp_path / "holiday.png"
    photo.write_bytes(_colour_photo())
    chest = tmp_path / "chest.png"
    chest.write_bytes(png_bytes(xray_like(np.random.default_rng(2), 64, pneumonia=True)))
    assert cli.main(["predict", "--model", str(tiny_run), "--json", str(photo), str(chest)]) == 0
    answers = {Path(line["file"]).name: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert answers["holiday.png"]["label"] is None and answers["holiday.png"]["probability"] is None
    assert answers["holiday.png"]["not_assessed"] == "not a chest X-ray"
    assert answers["chest.png"]["label"] in ("NORMAL", "PNEUMONIA") and answers["chest.png"]["not_assessed"] is None
    assert cli.main(["predict", "--model", str(tiny_run), str(photo)]) == 0
    assert "holiday.png: not assessed: not a chest X-ray" in capsys.readouterr().out


def test_a_dicom_of_another_body_part_gets_no_call(tiny_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    intended_use.save(model, intended_use.IntendedUse(body_parts=("CHEST",), views=("PA", "AP")))
    film = _dicom((chest_like(96, 96, seed=2) * 4095).round().astype(np.uint16), bits_stored=12,
                  BodyPartExamined="KNEE")
    [prediction] = Predictor(model, device="cpu").predict_sources([("knee.dcm", film)])
    assert prediction.ok and prediction.label is None and prediction.not_assessed == triage.NOT_CHEST
    assert catalog.for_display(prediction).call(0.5) is None


def test_diagnose_gives_a_colour_photo_no_call_and_failed_files_no_none(app_env):
    at = start_app()
    chest = png_bytes(xray_like(np.random.default_rng(0), 64, pneumonia=True))
    at.file_uploader(key="uploads").set_value([("holiday.png", _colour_photo(), "image/png"),
                                                ("notes.png", b"no pixels here", "image/png"),
                                                ("chest.png", chest, "image/png")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0]
    assert table.value["file"].tolist() == ["chest.png", "holiday.png", "notes.png"]
    assert table.value["call"].tolist()[1:] == ["not assessed: not a chest X-ray", "not scored (the file could not be read)"]
    assert table.proto.placeholder == ""  # a missing cell is blank, never the word None
    photo = table.value.iloc[1]
    assert all(photo[column] is None or np.isnan(photo[column]) for column in table.value.columns
               if column.startswith("P(")), "a film with no call shows no class probability either"
    assert "Call: **not assessed: not a chest X-ray**" in [m.value for m in at.markdown]
    assert len(at.metric) == 1  # the photo shows no probability
    assert not [m for m in at.markdown if m.value.startswith("Call:") and "PNEUMONIA" in m.value and "holiday" in m.value]


def test_the_pdf_gives_no_call_to_a_film_that_is_not_a_chest_xray(tiny_run):
    model = provenance.of_model(tiny_run)
    results = [_result("chest.png", 0.3), _result("holiday.png", 0.93, ood=True, not_assessed=triage.NOT_CHEST),
               _result("odd.png", 0.97, ood=True)]
    for result in results:
        result.image = xray_like(np.random.default_rng(5), 64, pneumonia=False)
    pdf = report_pdf.build(results, threshold=0.5, operating_point="internal", model=model)
    document = pdfium.PdfDocument(pdf)
    try:
        texts = [page.get_textpage().get_text_range() for page in document]
    finally:
        document.close()
    summary = " ".join(texts[0].split())  # table cells wrap
    assert summary.index("chest.png") < summary.index("odd.png") < summary.index("holiday.png")
    assert "97.0% (unreliable)" in summary and "93.2%" not in summary and "93.0%" not in summary
    photo_page = " ".join(next(text for text in texts[1:] if "holiday.png" in text).split())
    assert "not assessed: not a chest X-ray" in photo_page and "P(PNEUMONIA)" not in photo_page


def test_compare_intervals_on_a_handful_of_films_are_never_a_single_point():
    """4 of 4 right: every bootstrap resample agrees, but the interval must show what 4 films can tell."""
    from xraycore.clinical.fit_bootstrap import widened_to_counts

    truth, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    from xraycore import metrics

    _, raw = metrics.report_with_ci(truth, scores, 0.5)
    assert raw["accuracy"][1:] == (1.0, 1.0)  # what Compare showed: 1.000-1.000
    widened = widened_to_counts(raw, truth, (scores >= 0.5).astype(int))
    assert widened["accuracy"][0] == 1.0 and widened["accuracy"][1] < 0.55 and widened["accuracy"][2] == 1.0
    assert widened["recall"][1] < 0.35 and widened["auroc"] == raw["auroc"]  # 2 of 2 found: wide; AUROC as it was


def test_compare_rows_carry_intervals_at_least_as_wide_as_the_films_allow(tiny_run):
    from xraycore.clinical.fit_bootstrap import wilson_interval

    report = comparison.evaluate_run(runs.open_run(tiny_run), "val", with_ci=True)
    n, accuracy = report["n"], report["accuracy"]
    low, high = wilson_interval(round(accuracy * n), n)
    assert report["ci"]["accuracy"][1] <= low + 1e-9 and report["ci"]["accuracy"][2] >= high - 1e-9
