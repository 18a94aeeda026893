"""The command-line contract, exactly as README promises it.

``train`` prints the run directory last; ``evaluate --json`` prints one JSON object whose confusion
matrix agrees with the files; ``predict --json`` prints one line per file and survives every bad
input of tests/helpers/corpus.py; ``runs``, ``presets`` and every ``--help`` work (each preset's
``--smoke`` run: test_presets.py). Subprocesses where the contract is about the process
(stdout, exit code, no traceback); in-process ``cli.main`` where only the numbers matter.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.corpus import PHI, make_corpus
from xraycore.cli import main as cli
from xraycore import metrics
from xraycore.runs import directory as runs

REPO = Path(__file__).resolve().parents[2]
METRIC_KEYS = ("n", "accuracy", "precision", "recall", "specificity", "f1", "auroc", "threshold", "confusion_matrix")


def subprocess_env() -> dict[str, str]:
    """Built at call time, not import time: conftest points $XRAY_AUDIT_LOG at a temporary file only once the
    session starts, after this module was imported (an import-time copy let `predict` write ./runs/audit.jsonl)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "XRAY_OFFLINE": "1"}


def xraycore(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "xraycore", *args], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("cli-runs")
    done = xraycore("train", "--data", str(tiny_dataset / "train"), "--backbone", "simple_cnn", "--epochs", "1",
                    "--image-size", "48", "--batch-size", "8", "--pretrained", "none", "--val-fraction", "0.25",
                    "--out", str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


@pytest.mark.slow
def test_train_prints_the_run_directory_last(trained):
    root, done = trained
    printed = Path(done.stdout.splitlines()[-1])
    assert printed.parent == root and (printed / "config.json").is_file() and (printed / "model.safetensors").is_file()
    run = runs.Run(printed)
    assert run.status()["state"] == "finished"
    assert run.config["train"]["image_size"] == 48 and run.config["train"]["val_fraction"] == 0.25
    assert len(run.metrics()) == 1


# ------------------------------------------------------------------ evaluate
def stored_val_folder(run_dir: Path, folder: Path) -> Path:
    """The run's validation films, copied into class folders: what its stored predictions were made on."""
    stored = runs.Run(run_dir).predictions("val")
    for path, label in zip(stored["file"], stored["label"]):
        target = folder / stored["class_names"][label] / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(path).read_bytes())
    return folder


def expected_from_stored(run_dir: Path, positive: str, threshold: float) -> dict:
    """Independent reference: the validation predictions the training stored (its own data pipeline, not the
    Predictor) and scikit-learn's metrics at ``threshold``."""
    from sklearn import metrics as sk

    stored = runs.Run(run_dir).predictions("val")
    index = stored["class_names"].index(positive)
    truth = (stored["label"] == index).astype(int)
    score = stored["probs"][:, index]
    calls = (score >= threshold).astype(int)
    (tn, fp), (fn, tp) = sk.confusion_matrix(truth, calls, labels=[0, 1])
    return {"n": len(truth), "confusion_matrix": [[tn, fp], [fn, tp]], "accuracy": sk.accuracy_score(truth, calls),
            "precision": sk.precision_score(truth, calls, zero_division=0), "recall": sk.recall_score(truth, calls),
            "specificity": tn / (tn + fp), "f1": sk.f1_score(truth, calls, zero_division=0),
            "auroc": sk.roc_auc_score(truth, score)}


def check_report(result: dict, expected: dict) -> None:
    assert result["n"] == expected["n"] and result["confusion_matrix"] == expected["confusion_matrix"]
    for name in ("accuracy", "precision", "recall", "specificity", "f1", "auroc"):
        assert result[name] == pytest.approx(expected[name], abs=1e-3), name


@pytest.mark.slow
def test_evaluate_json_is_one_object_whose_counts_match_the_files(trained, tmp_path):
    root, done = trained
    run_dir = Path(done.stdout.splitlines()[-1])
    data = stored_val_folder(run_dir, tmp_path / "val")
    evaluated = xraycore("evaluate", "--model", str(run_dir), "--data", str(data), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(evaluated.stdout.strip().splitlines()) == 1
    result = json.loads(evaluated.stdout)
    assert set(METRIC_KEYS) <= set(result)
    assert result["threshold"] == pytest.approx(runs.Run(run_dir).operating_point["threshold"])
    check_report(result, expected_from_stored(run_dir, "PNEUMONIA", result["threshold"]))


def test_evaluate_threshold_zero_calls_everything_positive(trained, tiny_dataset, capsys):
    run_dir = Path(trained[1].stdout.splitlines()[-1])
    code, out, _ = run_cli(capsys, "evaluate", "--model", str(run_dir), "--data", str(tiny_dataset / "test"),
                           "--threshold", "0.0", "--json")
    result = json.loads(out)
    assert code == 0 and result["threshold"] == 0.0
    assert result["recall"] == 1.0 and result["specificity"] == 0.0


def test_evaluate_prevalence_adds_the_shifted_precision(trained, tiny_dataset, capsys):
    run_dir = Path(trained[1].stdout.splitlines()[-1])
    code, out, _ = run_cli(capsys, "evaluate", "--model", str(run_dir), "--data", str(tiny_dataset / "test"),
                           "--threshold", "0.5", "--prevalence", "0.1", "--json")
    result = json.loads(out)
    assert code == 0 and result["at_prevalence"] == metrics.predictive_values(result["recall"], result["specificity"], 0.1)
    code, out, _ = run_cli(capsys, "evaluate", "--model", str(run_dir), "--data", str(tiny_dataset / "test"),
                           "--threshold", "0.5", "--prevalence", "0.1")
    assert code == 0 and "at prevalence 0.1: precision (PPV)" in out


def test_evaluate_positive_class_flips_the_question(trained, tiny_dataset, capsys, tmp_path):
    run_dir = Path(trained[1].stdout.splitlines()[-1])
    data = stored_val_folder(run_dir, tmp_path / "val")
    code, out, _ = run_cli(capsys, "evaluate", "--model", str(run_dir), "--data", str(data),
                           "--positive", "NORMAL", "--threshold", "0.5", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["positive"] == "NORMAL"
    check_report(result, expected_from_stored(run_dir, "NORMAL", 0.5))
    code, _, err = run_cli(capsys, "evaluate", "--model", str(run_dir), "--data", str(tiny_dataset / "test"),
                           "--positive", "COVID")
    assert code == 2 and err.startswith("error:") and "COVID" in err


# ------------------------------------------------------------------ predict
@pytest.mark.slow
def test_predict_json_survives_the_whole_bad_input_corpus(trained, tiny_dataset, tmp_path):
    run_dir = Path(trained[1].stdout.splitlines()[-1])
    corpus = make_corpus(tmp_path / "corpus")
    good = sorted((tiny_dataset / "test" / "PNEUMONIA").iterdir())[:1] + sorted((tiny_dataset / "test" / "NORMAL").iterdir())[:1]
    files = [str(case.path) for case in corpus.values()] + [str(path) for path in good]

    done = xraycore("predict", "--model", str(run_dir), *files, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == files, "one line per file, in order"
    by_file = dict(zip(files, lines))
    for case in corpus.values():
        line = by_file[str(case.path)]
        if case.expected == "ok" and case.name == "colour_photo":  # read, but not a chest X-ray: no call
            assert line["probability"] is None and line["label"] is None and line["not_assessed"], line
            assert any(case.warning in warning for warning in line["warnings"]), (case.name, line["warnings"])
        elif case.expected == "ok":
            assert 0.0 <= line["probability"] <= 1.0 and line["label"] in ("NORMAL", "PNEUMONIA"), case.name
            assert not line.get("not_assessed"), case.name
            if case.warning:
                assert any(case.warning in warning for warning in line["warnings"]), (case.name, line["warnings"])
        else:
            assert line["error"] and "probability" not in line, case.name
            assert line["error_kind"] == case.expected, (case.name, line)
    for path in good:
        assert 0.0 <= by_file[str(path)]["probability"] <= 1.0 and "error" not in by_file[str(path)]
    for identifier in PHI.values():
        assert identifier not in done.stdout and identifier not in done.stderr, "patient identifiers must not leak"


# ------------------------------------------------------------------ runs, presets, help
def test_runs_lists_the_run(trained, capsys):
    root, done = trained
    run_dir = Path(done.stdout.splitlines()[-1])
    code, out, _ = run_cli(capsys, "runs", "--root", str(root))
    assert code == 0 and run_dir.name in out and "finished" in out and "simple_cnn" in out
    code, out, _ = run_cli(capsys, "runs", "--root", str(root), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["id"] for row in rows] == [run_dir.name] and rows[0]["state"] == "finished"


def verbs() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_help_of_every_verb_documents_every_option(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([verb, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in verbs()[verb]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != action.dest, f"{verb} {action.option_strings or action.dest} is undocumented"
        for option in action.option_strings:
            assert option in text, f"{verb} --help does not show {option}"


def test_presets_lists_the_five_studies_and_the_bundled_recipe(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == ["aimi-lab1", "convnext-vs-resnet50", "resnet-d", "transfer-7", "xception-5fold", "xray-default"]
    code, out, _ = run_cli(capsys, "presets", "--show", "xception-5fold")
    assert code == 0 and json.loads(out)["config"]["folds"] == 5
