"""Recording: scoring a film with and without writing its monitoring row, as a ratio in one run (goal <= 1.05).

The same films are scored one at a time through the Predictor (file → probability, call, out-of-domain score;
onnxruntime on the CPU, as Diagnose serves), alternately bare and followed by the Recorder's row (pixel sha256
at the network input size + one SQLite transaction), interleaved so the machine's drift hits both alike.
Usage: python benchmarks/bench_record.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, report  # noqa: E402
from xraycore import Predictor  # noqa: E402
from xraycore.monitoring.recording import Recorder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    files = sorted(p for p in (REPO / "models" / "samples").rglob("*") if p.suffix.lower() in (".png", ".jpeg", ".jpg", ".dcm"))
    predictor = Predictor(args.model)
    with tempfile.TemporaryDirectory() as folder:
        recorder = Recorder("cli", predictor.audit_model,
                            store=f"sqlite:///{Path(folder) / 'bench.db'}")
        list(predictor.predict_files(files[:2]))  # warm-up: sessions, caches
        recorder.record(list(predictor.predict_files(files[:1])))
        bare, recorded, record_only = [], [], []
        for _ in range(args.rounds):
            for path in files:
                start = time.perf_counter()
                list(predictor.predict_files([path]))
                bare.append(time.perf_counter() - start)
                start = time.perf_counter()
                predictions = list(predictor.predict_files([path]))
                middle = time.perf_counter()
                assert recorder.record(predictions).ok
                recorded.append(time.perf_counter() - start)
                record_only.append(time.perf_counter() - middle)
    bare_ms, recorded_ms = 1000 * sum(bare) / len(bare), 1000 * sum(recorded) / len(recorded)
    report("record", {"films": len(bare), "backend": predictor.backend, "score_ms": round(bare_ms, 2),
                      "score_and_record_ms": round(recorded_ms, 2),
                      "record_ms": round(1000 * sum(record_only) / len(record_only), 2),
                      "ratio": round(recorded_ms / bare_ms, 4), "goal_ratio": 1.05})


if __name__ == "__main__":
    main()
