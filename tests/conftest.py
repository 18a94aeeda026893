"""Shared fixtures: generated datasets and one tiny trained run reused by slower tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("XRAY_OFFLINE", "1")  # tests never touch the network
# MLflow tracking costs seconds per fresh runs folder (its SQLite store is created and migrated): off, except in the
# tests of tracking itself (tests/training/test_tracking.py, test_sweep.py), which turn it on.
os.environ.setdefault("XRAY_TRACKING", "off")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One thread per process: CPU kernels then reduce in a fixed order, so the resume and torchrun tests can
# compare runs to 1e-5 (two threads under load changed last digits), and subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers.synthetic import make_dataset  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_audit_log(tmp_path_factory) -> Path:
    """No test writes the repository's audit trail: one log per test session in a temporary folder
    (subprocesses inherit it); a test that counts lines points $XRAY_AUDIT_LOG at its own file."""
    if "XRAY_AUDIT_LOG" not in os.environ:
        os.environ["XRAY_AUDIT_LOG"] = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
    return Path(os.environ["XRAY_AUDIT_LOG"])


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch) -> str:
    """No test writes scored films or reads into a store beside the repository, nor into another test's: one SQLite
    store per test (subprocesses inherit $XRAY_DB_URL; it is created only when opened). A test of the default
    location unsets it itself; a server a module starts names its own."""
    url = f"sqlite:///{tmp_path / 'xray.db'}"
    monkeypatch.setenv("XRAY_DB_URL", url)
    return url


@pytest.fixture
def log(tmp_path, monkeypatch) -> Path:
    """A private audit log, so a test can count its own lines."""
    from xraycore.access import audit

    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """train/ and test/ folders of 48 px Kermany-named images, 16 per class each."""
    return make_dataset(tmp_path_factory.mktemp("tiny"), per_class=16, splits=("train", "test"))


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A finished run of the scratch CNN on the tiny dataset (trained once per test session)."""
    from xraycore.training.config import TrainConfig
    from xraycore.training.loop import train

    config = TrainConfig(data=str(tiny_dataset), backbone="simple_cnn", pretrained="none",
                         image_size=48, epochs=3, batch_size=8, lr=3e-3, val_fraction=0.25,
                         out=str(tmp_path_factory.mktemp("runs")), augment=["hflip"])
    return train(config)


@pytest.fixture(scope="session")
def tiny_exported(tiny_run, tmp_path_factory) -> Path:
    """A copy of tiny_run with its ONNX graph exported (tiny_run itself stays torch-only for other tests)."""
    import shutil

    from xraycore.inference.export import export_model

    model = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(tiny_run, model)
    export_model(model, "onnx")
    return model
