"""Does outlier exposure carry over to films of sources it never saw? Leave one source out.

covid_qu's two classes come from different collections (its COVID-19 films from several hospitals and
repositories, its normal adults largely from another challenge set). For each class: a copy of the model is
exposed (``xraycore.fit_exposure``, the settings ``ood-expose`` uses) to the films of that class only, then the
flag rate is measured on the other class, as the 224 px copies and brought in at full resolution, beside the
internal validation images and the site sample. Takes about 25 minutes on 2 cores.

Usage: python experiments/ood_sources.py [--model models/default] [--n 500]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, REPO  # noqa: E402
from experiments.site_check import flag_rate  # noqa: E402
from xraycore import Predictor, Run, fit_exposure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--n", type=int, default=500, help="films of the left-out class to measure on")
    args = parser.parse_args()
    train = DATA / "chest_xray" / "train"
    site = sorted((DATA / "kermany_site").rglob("*.jpeg"))
    for seen, unseen in (("Normal", "COVID"), ("COVID", "Normal")):
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model"
            shutil.copytree(args.model, model)
            fit_exposure(model, train, DATA / "covid_qu" / seen, say=lambda _: None)
            predictor = Predictor(model, device="cpu")
            val = Run(model).predictions("val") or {"file": []}
            train_files = {p.name: p for p in train.rglob("*.jpeg")}
            others = sorted((DATA / "covid_qu" / unseen).iterdir())[: args.n]
            print(json.dumps({"model": args.model, "exposed_to": f"covid_qu/{seen}", "measured_on": f"covid_qu/{unseen}",
                              "flagged": {
                                  "internal_validation": flag_rate(predictor, [train_files[Path(f).name] for f in val["file"]
                                                                               if Path(f).name in train_files]),
                                  "site": flag_rate(predictor, site),
                                  "unseen_source": flag_rate(predictor, others),
                                  "unseen_source_at_full_resolution": flag_rate(predictor, others, "full_resolution")}}),
                  flush=True)


if __name__ == "__main__":
    main()
