"""MLflow tracking of training runs (issue 32): what a run logs, studies as parent runs, resumed runs, torchrun,
and a tracking server that cannot be reached. Each test trains the scratch CNN on tiny synthetic images, with
tracking turned on (the rest of the suite trains untracked, see tests/conftest.py)."""
from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest

from tests.helpers.synthetic import make_dataset
from xraycore.cli.main import main
from xraycore.runs import directory as runs
from xraycore.training import stopping, tracking
from xraycore.training.config import TrainConfig

SETTINGS = dict(backbone="simple_cnn", pretrained="none", image_size=32, batch_size=8, augment=[], lr=3e-3,
                val_fraction=0.25, fit_ood=False)


@pytest.fixture(autouse=True)
def tracked(monkeypatch):
    """Tracking on, to the default SQLite store of each test's runs folder; the CLI's choice forgotten after."""
    monkeypatch.setenv(tracking.OFF_ENV, "on")
    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    yield
    tracking.configure()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tracking-data"), per_class=12, size=40)


def store(out: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / tracking.DB_FILE}")


def search(out: Path):
    """Every run of the "xray" experiment in the runs folder's store, oldest first."""
    client = store(out)
    return client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
                              order_by=["attributes.start_time ASC"])


def test_a_smoke_run_is_found_by_mlflow_with_params_epoch_metrics_and_artifacts(data, tmp_path, capsys):
    import mlflow

    out = tmp_path / "runs"
    assert main(["train", "--data", str(data), "--backbone", "simple_cnn", "--pretrained", "none", "--image-size",
                 "32", "--epochs", "2", "--batch-size", "8", "--fit-ood", "false", "--out", str(out), "--quiet"]) == 0
    run = runs.list_runs(out)[0]
    mlflow.set_tracking_uri(f"sqlite:///{out.resolve() / tracking.DB_FILE}")
    found = mlflow.search_runs(experiment_names=["xray"], output_format="list")
    assert [r.info.run_id for r in found] == [run.config["tracking"]["run_id"]]
    params, tags = found[0].data.params, found[0].data.tags
    assert params["optimisation.lr"] == "0.001" and params["model.backbone"] == "simple_cnn"
    assert params["optimisation.epochs"] == "2" and params["dataset.data"] == str(data)
    assert tags["xray.seed"] == "0" and tags["xray.split_seed"] == "0" and len(tags["xray.dataset_fingerprint"]) == 64
    assert tags["xray.version"] and tags["xray.weights_source"] and tags["mlflow.runName"] == run.id
    client = store(out)
    for name in ("loss", "val_auroc", "val_accuracy", "val_sensitivity", "val_specificity", "val_fbeta", "lr",
                 "images_per_second"):
        assert [m.step for m in client.get_metric_history(found[0].info.run_id, name)] == [1, 2], name
    files = {a.path for a in client.list_artifacts(found[0].info.run_id)}
    assert {"config.json", "val_predictions.csv", "MODEL_CARD.md", "figures"} <= files
    shared = Path(client.download_artifacts(found[0].info.run_id, "val_predictions.csv", str(tmp_path))).read_text()
    kept = (run.path / "val_predictions.csv").read_text()
    films = [line.split(",")[0] for line in kept.splitlines()[1:]]
    assert films and not any(film in shared for film in films), "the tracking store holds no film's name"
    assert [line.split(",")[2:] for line in shared.splitlines()[1:]] == [line.split(",")[2:] for line in kept.splitlines()[1:]]
    figures = {a.path for a in client.list_artifacts(found[0].info.run_id, "figures")}
    assert figures == {"figures/confusion_matrix.html", "figures/roc.html", "figures/pr.html"}
    assert found[0].info.status == "FINISHED"
    capsys.readouterr()
    main(["runs", "--root", str(out)])
    assert run.config["tracking"]["run_id"] in capsys.readouterr().out


def test_a_study_is_a_parent_run_with_its_runs_as_children(data, tmp_path):
    from xraycore.training.studies import launch

    out = tmp_path / "runs"
    paths = launch([TrainConfig(data=str(data), epochs=1, folds=2, study="cv", out=str(out), **SETTINGS)],
                   lambda event: None)
    assert len(paths) == 2
    found = search(out)
    parents = [r for r in found if r.data.tags.get(tracking.PARENT_TAG) == "cv"]
    assert len(parents) == 1 and len(found) == 3
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["xray.run"] for r in children) == sorted(p.name for p in paths)
    assert all(r.data.tags["xray.study"] == "cv" for r in children)


def test_a_resumed_run_continues_the_same_mlflow_run(data, tmp_path):
    from xraycore.training.loop import resume, train

    out = tmp_path / "runs"

    def stop_after_first_epoch(event: dict) -> None:
        if event.get("kind") == "epoch" and event["epoch"] == 1:
            stopping.request()

    path = train(TrainConfig(data=str(data), epochs=3, out=str(out), **SETTINGS), stop_after_first_epoch)
    first = runs.Run(path).config["tracking"]["run_id"]
    assert runs.Run(path).status()["state"] == "stopped" and store(out).get_run(first).info.status == "KILLED"
    resume(path)
    assert runs.Run(path).config["tracking"]["run_id"] == first
    found = search(out)
    assert [r.info.run_id for r in found] == [first] and found[0].info.status == "FINISHED"
    assert [m.step for m in store(out).get_metric_history(first, "val_auroc")] == [1, 2, 3]


def test_a_tracking_uri_that_points_nowhere_warns_once_and_training_finishes(data, tmp_path):
    from xraycore.training.loop import train

    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tracking.configure(uri=f"http://user:secret@127.0.0.1:{port}")
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = train(TrainConfig(data=str(data), epochs=2, out=str(tmp_path), **SETTINGS),
                     lambda event: messages.append(event.get("text", "")))
    said = [w for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(said) == 1 and "secret" not in str(said[0].message)
    assert runs.Run(path).status()["state"] == "finished" and len(runs.Run(path).metrics()) == 2
    assert sum("experiment tracking off" in text for text in messages) == 1
    assert "tracking" not in runs.Run(path).config
