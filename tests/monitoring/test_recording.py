"""Every scored film leaves a row (never a file name or identifier), a broken store says so in one sentence and
scoring goes on, a fresh store gives no alert and no error, and `monitor` over recorded rows answers with exact
keys and exit status 1 while an alert is active."""

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xraycore.clinical import operating_points as operating
from xraycore.common.hashing import sha256_of_pixels
from xraycore.inference.prediction import Prediction
from xraycore.monitoring import figures, recording, report
from xraycore.monitoring.reference_files import load_reference
from xraycore.store.database import open_store
from xraycore.store.reads import add_read
from xraycore.store.scored_films import record_scored_films

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "default"
BROKEN_URL = "postgresql+psycopg://monitor:secret-word@127.0.0.1:9/xray"  # a closed port
MODEL = {"name": "default", "version": "test", "sha256": "ab" * 32}


def scored(name: str = "PATIENT_JOHN_DOE_1234.png") -> Prediction:
    pixels = np.random.default_rng(0).random((64, 64))
    network_input = (pixels[:32, :32] * 255).astype(np.uint8)  # what the Predictor fed the network, and its key
    return Prediction(name=name, probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8}, label="PNEUMONIA",
                      positive_class="PNEUMONIA", positive_probability=0.8, threshold=0.5, operating_point="site-a",
                      logits=[-0.7, 0.7], out_of_domain=False, ood_score=0.4, backend="onnxruntime",
                      guards=["The DICOM marks this film as a view this model does not read"],
                      metadata={"dicom_guards": {"non_frontal": True}, "PatientName": "DOE^JOHN"}, image=pixels,
                      input_pixels=network_input, film_sha256=sha256_of_pixels(network_input))


def test_a_scored_film_leaves_one_row_without_file_name_or_identifier(tmp_path):
    url = f"sqlite:///{tmp_path / 'xray.db'}"
    done = recording.Recorder("upload", MODEL, site="ward-7", store=url).record([scored()])
    assert done.ok and done.count == 1
    connection = sqlite3.connect(tmp_path / "xray.db")
    connection.row_factory = sqlite3.Row
    row = dict(connection.execute("select * from scored_films").fetchone())
    assert row["logit"] == pytest.approx(1.4) and row["probability"] == pytest.approx(0.8)
    assert (row["ai_call"], row["ood_flag"], row["warnings"], row["source"], row["site"]) == \
        ("PNEUMONIA", 0, "view", "upload", "ward-7")
    assert row["film_sha256"] == scored().film_sha256 and row["weights_sha256"] == MODEL["sha256"]
    dump = "\n".join(connection.iterdump())
    assert "JOHN" not in dump and "DOE" not in dump and ".png" not in dump


def test_a_broken_database_url_is_one_sentence_and_the_film_says_it_was_not_recorded():
    done = recording.record([scored()], "upload", MODEL, store=BROKEN_URL)
    assert not done.ok and done.count == 0
    assert done.problem.startswith("This film was not recorded for monitoring: ")
    assert "\n" not in done.problem and "Traceback" not in done.problem and "secret-word" not in done.problem
    recorder = recording.Recorder("pacs", MODEL, store="not a url at all")
    again = recorder.record([scored(), scored()])
    assert again.problem.startswith("These 2 films were not recorded for monitoring: ")


def test_predict_record_with_a_broken_store_still_answers_and_says_so(tmp_path):
    sample = sorted((REPO / "models" / "samples" / "PNEUMONIA").iterdir())[0]
    done = subprocess.run([sys.executable, "-m", "xraycore", "predict", "--model", str(BUNDLED), str(sample),
                           "--json", "--record", "--db", BROKEN_URL], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[0])["label"] in ("NORMAL", "PNEUMONIA")
    assert "was not recorded for monitoring" in done.stderr and "Traceback" not in done.stderr


def test_predict_record_leaves_a_row_that_monitor_reads(tmp_path):
    url = f"sqlite:///{tmp_path / 'xray.db'}"
    samples = [str(p) for p in sorted((REPO / "models" / "samples" / "PNEUMONIA").iterdir())[:2]]
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "xraycore", "predict", "--model", str(BUNDLED), *samples,
                           "--record", "--db", url], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0 and "not recorded" not in done.stderr, done.stderr[-2000:]
    rows = open_store(url).engine.connect().exec_driver_sql("select source, model_name, operating_point "
                                                            "from scored_films").all()
    assert [tuple(r) for r in rows] == [("cli", "default", operating.active_name(BUNDLED))] * 2
    watched = report.monitor(BUNDLED, window=10, store=url)
    assert watched.films == 2 and watched.alerts == []


def test_a_fresh_store_gives_no_alert_and_no_error(tmp_path, capsys):
    from xraycore.cli.main import main

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = report.monitor(BUNDLED, store=url)
    assert fresh.empty and fresh.alerts == [] and fresh.films == 0
    assert main(["monitor", "--model", str(BUNDLED), "--db", url, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "No films scored yet" in captured.err


def test_monitor_with_a_down_database_is_one_sentence(capsys):
    from xraycore.cli.main import main

    assert main(["monitor", "--model", str(BUNDLED), "--db", BROKEN_URL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "secret-word" not in err


def _stream_rows(rng, n, answering, start, shifted=False):
    reference = load_reference(BUNDLED)
    logits = rng.choice(reference.logits, n) + rng.normal(0, 0.1, n)
    if shifted:
        logits = logits * 0.2 + 1.5
    probability = 1 / (1 + np.exp(-logits / reference.temperature))
    ood = rng.random(n) < (0.5 if shifted else 0.01)
    calls = np.where(probability >= reference.threshold, "PNEUMONIA", "NORMAL")
    return [{"created": start + dt.timedelta(minutes=i), "source": "pacs", "model_name": "default",
             "operating_point": answering, "logit": float(x), "probability": float(p), "ai_call": str(c),
             "ood_flag": bool(o), "film_sha256": f"{start:%Y%m%d}{i:056d}"}
            for i, (x, p, c, o) in enumerate(zip(logits, probability, calls, ood))]


def test_monitor_cli_json_keys_exit_status_and_realised_figures(tmp_path, capsys):
    from xraycore.cli.main import main

    url = f"sqlite:///{tmp_path / 'stream.db'}"
    store = open_store(url)
    answering, rng = operating.active_name(BUNDLED), np.random.default_rng(30)
    start = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    calm = _stream_rows(rng, 300, answering, start)
    record_scored_films(store, calm)
    for row in calm[:100]:  # reads of the first window's films: realised figures for it only
        add_read(store, film_sha256=row["film_sha256"], read=row["ai_call"], reader="dr-a")
    assert main(["monitor", "--model", str(BUNDLED), "--db", url, "--window", "100", "--json"]) == 0
    windows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(windows) == 3 and all(tuple(w) == figures.KEYS for w in windows)
    assert windows[0]["realised_n"] == 100 and windows[0]["realised_accuracy"] == 1.0 and windows[1]["realised_n"] == 0
    record_scored_films(store, _stream_rows(rng, 100, answering, start + dt.timedelta(days=1), shifted=True))
    assert main(["monitor", "--model", str(BUNDLED), "--db", url, "--window", "100", "--json"]) == 1
    captured = capsys.readouterr()
    last = [json.loads(line) for line in captured.out.splitlines()][-1]
    assert last["alerts"] and "ALERT: Out-of-domain surge" in captured.err
    since = main(["monitor", "--model", str(BUNDLED), "--db", url, "--since", "2026-03-03", "--json"])
    assert since == 1 and len(capsys.readouterr().out.splitlines()) == 1
