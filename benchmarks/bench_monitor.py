"""Monitoring: `monitor` over a generated SQLite store of 100,000 scored films (goal <= 5 s on the 2-core CPU).

Generates the rows (logits drawn from the model's reference, one film a minute, a shifted stretch at the end so
the alert path runs too) with the store's own writer, then times the monitor function and the whole CLI
(`python -m xraycore monitor --json`, interpreter start included), each the fastest of a few runs.
Usage: python benchmarks/bench_monitor.py [--rows 100000] [--window week|day|N]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, best_of, report  # noqa: E402
from xraycore.clinical import operating_points as operating  # noqa: E402
from xraycore.monitoring.reference_files import load_reference  # noqa: E402
from xraycore.monitoring.report import monitor  # noqa: E402
from xraycore.store.database import open_store  # noqa: E402
from xraycore.store.scored_films import record_scored_films  # noqa: E402


def generate(url: str, model: Path, rows: int) -> float:
    reference, answering, rng = load_reference(model), operating.active_name(model), np.random.default_rng(0)
    logits = rng.choice(reference.logits, rows) + rng.normal(0, 0.1, rows)
    logits[-rows // 20:] = logits[-rows // 20:] * 0.3 + 1.0  # the last 5%: a new unit
    probability = 1 / (1 + np.exp(-logits / reference.temperature))
    start, store, began = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc), open_store(url), time.perf_counter()
    for first in range(0, rows, 10_000):
        record_scored_films(store, ({
            "created": start + dt.timedelta(minutes=i), "source": "pacs", "model_name": model.resolve().name,
            "model_version": "bench", "weights_sha256": "0" * 64, "operating_point": answering, "backend": "onnxruntime",
            "logit": float(logits[i]), "probability": float(probability[i]),
            "ai_call": "PNEUMONIA" if probability[i] >= reference.threshold else "NORMAL", "ood_score": 0.3,
            "ood_flag": bool(rng.random() < 0.02), "warnings": None, "film_sha256": f"{i:064x}",
        } for i in range(first, min(rows, first + 10_000))))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--window", default="week")
    args = parser.parse_args()
    model = Path(args.model)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        written = generate(url, model, args.rows)
        window = int(args.window) if args.window.isdigit() else args.window
        result = monitor(model, window=window, store=url)
        function_s = best_of(lambda: monitor(model, window=window, store=url))
        command = [sys.executable, "-m", "xraycore", "monitor", "--model", str(model), "--db", url, "--json",
                   "--window", args.window]
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        cli_s = best_of(lambda: subprocess.run(command, capture_output=True, cwd=REPO, env=environment))
    report("monitor", {"rows": args.rows, "window": args.window, "windows": len(result.windows),
                       "active_alerts": len(result.alerts), "generate_s": round(written, 2),
                       "monitor_function_s": round(function_s, 3), "monitor_cli_s": round(cli_s, 3), "goal_s": 5.0})


if __name__ == "__main__":
    main()
