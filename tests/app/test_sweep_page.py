"""The Train page's sweeps (issue 32), through streamlit.testing: a sweep's trials as a table with Optuna's
optimisation history and parameter importances, and a sweep launched from the page as a queued job."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.app.test_app import app_env, runs_root  # noqa: F401 - fixtures shared with the app tests
from xraycore.access import audit
from xraycore.training import jobs, sweep, sweep_jobs

REPO = Path(__file__).resolve().parents[2]


def record_sweep(root: Path, name: str) -> None:
    """A sweep's journal as `sweep` writes it: two complete trials and one pruned after its first epoch."""
    import optuna
    from optuna.distributions import FloatDistribution

    plan = sweep.SweepPlan("xray-default", "", 3, name, sweep.storage_path(name, root), str(root))
    study = sweep.open_study(plan)
    space = {"lr": FloatDistribution(1e-4, 3e-3, log=True), "augment_strength": FloatDistribution(0.0, 1.5)}
    for number, (lr, strength, value) in enumerate([(1e-3, 0.5, 0.91), (2e-4, 1.2, 0.83)]):
        study.add_trial(optuna.trial.create_trial(params={"lr": lr, "augment_strength": strength}, distributions=space,
                                                  value=value, intermediate_values={1: value - 0.1, 2: value},
                                                  user_attrs={"run": f"{name}-t{number:03d}"}))
    study.add_trial(optuna.trial.create_trial(params={"lr": 2.5e-3, "augment_strength": 0.1}, distributions=space,
                                              state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.4},
                                              user_attrs={"run": f"{name}-t002"}))


def test_the_train_page_shows_a_sweeps_trials_history_and_importances(app_env):
    record_sweep(app_env, "sweep-demo")
    at = AppTest.from_file(str(REPO / "pages/train.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="sweep_name").value == "sweep-demo"
    table = next(frame.value for frame in at.dataframe if "val_auroc" in frame.value.columns)
    assert list(table["trial"]) == [0, 1, 2]
    assert list(table["state"]) == ["complete", "complete", "pruned"]
    assert list(table["val_auroc"])[:2] == [0.91, 0.83] and list(table["pruned_after_epoch"])[2] == 1
    assert list(table["run"]) == ["sweep-demo-t000", "sweep-demo-t001", "sweep-demo-t002"]
    charts = [chart for chart in at.get("plotly_chart")]
    titles = " ".join(chart.proto.spec for chart in charts)
    assert len(charts) == 2 and "Optimization History" in titles and "Hyperparameter Importances" in titles


def test_a_sweep_launched_from_the_page_is_a_queued_job(app_env, tmp_path, monkeypatch, log):
    monkeypatch.setattr(sweep_jobs, "sweep_command", lambda *args: ["/bin/true"])  # the queue, not a real sweep
    data = tmp_path / "data"
    (data / "NORMAL").mkdir(parents=True)
    at = AppTest.from_file(str(REPO / "pages/train.py"), default_timeout=60).run()
    at.text_input(key="sweep_data").set_value(str(data))
    at.number_input(key="sweep_trials").set_value(3)
    at.button(key="sweep_go").click().run()
    assert not at.exception and any("queued" in s.value for s in at.success), [e.value for e in at.error]
    [job] = jobs.list_jobs(app_env)
    assert job.id.startswith("sweep-xray-default-") and job.study == job.id
    [entry] = [e for e in audit.read() if e["action"] == "sweep.launch"]
    assert entry["outcome"] == "ok" and entry["new"]["trials"] == 3

    at.text_input(key="sweep_data").set_value("/etc")
    at.button(key="sweep_go").click().run()
    assert at.error and len(jobs.list_jobs(app_env)) == 1


def test_the_compare_page_shows_each_runs_mlflow_run_id_and_a_pruned_trial(app_env):
    from xraycore.runs import directory as runs

    tracked = runs.Run(app_env / "run-a")
    tracked.write_json(runs.CONFIG_FILE, {**tracked.config, "tracking": {"uri": "sqlite:///x.db", "run_id": "abc123"}})
    runs.Run(app_env / "run-b").set_status("stopped", pruned=True, pruned_after_epoch=1)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.multiselect(key="compare_runs")
    picker.set_value(list(picker.options)[:2]).run()
    table = at.dataframe[-1].value
    by_run = {row["run"]: row for row in table.to_dict("records")}
    assert by_run["run-a"]["MLflow run id"] == "abc123" and by_run["run-b"]["MLflow run id"] == "not tracked"
    assert by_run["run-b"]["state"] == "pruned"


def test_a_pruned_trial_is_not_offered_to_continue(app_env):
    from xraycore.runs import directory as runs

    runs.Run(app_env / "run-a").set_status("stopped")
    runs.Run(app_env / "run-b").set_status("stopped", pruned=True, pruned_after_epoch=1)
    assert jobs.resumable(app_env) == ["run-a"]
