"""The external check of a recipe: how a model does on a site's own labelled sample it never saw.

For each model directory: internal-validation AUROC (from its summary), AUROC on the site sample, the
call at the model's own (internal) operating point, and what site calibration would give on images it was
not fitted on: temperature and F-beta threshold fitted on one half of the site sample (patient-grouped,
stratified) and applied to the other half, both ways round, the calls pooled; and, closer to a real
calibration on the whole sample, 5-fold cross-fitting (fitted on 4/5, applied to the held 1/5) repeated over
10 shuffles, its mean and spread. With --ood, the
out-of-domain flag rates on internal validation, the site sample and covid_qu (adult films, other hospitals),
the latter also as a full-resolution film arrives (enlarged first, so the loader resizes and re-encodes it), and
both after each processing of ``xraycore.training.outlier_exposure.PROCESSING`` (blurred, sharpened, ...). ``--covid-n N`` takes the first N
of each covid_qu class: keep them out of any ``ood-expose`` fit (the bundled model was exposed to the last 500).

Usage: python experiments/site_check.py MODEL [MODEL ...] [--site DIR] [--tta] [--ood] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA  # noqa: E402
from xraycore import Predictor, Run, score_folder  # noqa: E402
from xraycore import metrics  # noqa: E402
from xraycore.clinical import operating_points as operating  # noqa: E402
from xraycore.data import patient_id  # noqa: E402
from xraycore.runs.directory import SUMMARY_FILE  # noqa: E402
from xraycore.training.outlier_exposure import PROCESSING, processed_bytes  # noqa: E402


def rates(y: np.ndarray, calls: np.ndarray) -> dict[str, float]:
    tp, tn = int(((calls == 1) & (y == 1)).sum()), int(((calls == 0) & (y == 0)).sum())
    return {"accuracy": (tp + tn) / y.size, "sensitivity": tp / max(1, int(y.sum())),
            "specificity": tn / max(1, int((1 - y).sum()))}


def flag_rate(predictor: Predictor, files: list[Path], processing: str | None = None) -> float | None:
    """Share flagged out of domain. ``processing``: one of PROCESSING (outlier exposure's) applied first (in memory), e.g.
    "full_resolution": enlarged so that the loader resizes and re-encodes it as it does a full-resolution film
    (covid_qu holds 224 px copies)."""
    sources = ((str(f), processed_bytes(f, processing) if processing else f) for f in files)
    flags = [p.out_of_domain for p in predictor.predict_sources(sources, batch_size=32) if p.ok]
    return round(float(np.mean(flags)), 4) if flags and flags[0] is not None else None


def check(model: str, site: Path, beta: float, tta: bool, ood: bool, covid_n: int) -> dict:
    predictor = Predictor(model, device="cpu", operating_point=operating.INTERNAL)
    positive = predictor.positive_index
    scored = score_folder(predictor, site, predictor.positive_class, tta=tta)
    y = scored.binary_truth(predictor.positive_class)
    score = metrics.softmax(scored.logits, predictor.temperature)[:, positive]
    groups = [patient_id(Path(f).name) for f in scored.files]
    internal = (Run(Path(model)).read_json(SUMMARY_FILE, {}) or {}).get("val", {})
    result = {
        "model": model, "tta": tta, "internal_auroc": internal.get("auroc"), "site_n": int(y.size),
        "site_auroc": metrics.roc_auc(y, score),
        "at_internal_point": rates(y, metrics.is_positive(score, predictor.threshold).astype(int)),
        "site_calibrated_cross_fitted": operating.cross_fitted_rates(y, scored.logits, positive, beta, groups,
                                                                     folds=2, repeats=1),
        "site_calibrated_5fold": operating.cross_fitted_rates(y, scored.logits, positive, beta, groups),
    }
    if ood:
        val = Run(Path(model)).predictions("val")
        train_files = {p.name: p for p in (DATA / "chest_xray" / "train").rglob("*.jpeg")}
        val_files = [train_files[Path(f).name] for f in (val["file"] if val else []) if Path(f).name in train_files]
        covid = [p for name in ("COVID", "Normal") for p in sorted((DATA / "covid_qu" / name).iterdir())[:covid_n]]
        result["ood_flagged"] = {"internal_validation": flag_rate(predictor, val_files),
                                 "site": flag_rate(predictor, [Path(f) for f in scored.files]),
                                 "covid_qu": flag_rate(predictor, covid),
                                 "covid_qu_at_full_resolution": flag_rate(predictor, covid, "full_resolution"),
                                 "kermany_fullres": flag_rate(predictor, sorted((DATA / "chest_xray_fullres").rglob("*.jp*g")))}
        for name in PROCESSING:  # how the flag moves when a film is processed on its way here
            result["ood_flagged"][f"site_{name}"] = flag_rate(predictor, [Path(f) for f in scored.files], name)
            if name != "full_resolution":  # measured above, the same way
                result["ood_flagged"][f"covid_qu_{name}"] = flag_rate(predictor, covid, name)
    return result


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"  # None: undefined on this sample (one class only)


def markdown_row(result: dict) -> str:
    at, cal, five = (result["at_internal_point"], result["site_calibrated_cross_fitted"],
                     result["site_calibrated_5fold"])
    return (f"| {Path(result['model']).name}{' + flip TTA' if result['tta'] else ''} | {_number(result['internal_auroc'])} | "
            f"{_number(result['site_auroc'])} | {at['accuracy']:.3f} ({at['sensitivity']:.3f}/{at['specificity']:.3f}) | "
            f"{cal['accuracy']:.3f} ({cal['sensitivity']:.3f}/{cal['specificity']:.3f}) | "
            f"{five['accuracy']:.3f} ± {five['accuracy_sd']:.3f} ({five['sensitivity']:.3f}/{five['specificity']:.3f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--site", default=str(DATA / "kermany_site"))
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--ood", action="store_true")
    parser.add_argument("--covid-n", type=int, default=250, help="covid_qu images per class for the OOD rate")
    parser.add_argument("--markdown", action="store_true", help="one table row per model")
    args = parser.parse_args()
    for model in args.models:
        result = check(model, Path(args.site), args.beta, args.tta, args.ood, args.covid_n)
        print(markdown_row(result) if args.markdown else json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
