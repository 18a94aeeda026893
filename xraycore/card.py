"""Turn a finished run into a shippable model directory with a model card.

The bundle keeps what prediction and the Operating point page need (weights, config, operating
point, out-of-domain model, validation predictions, curves) and drops what only resuming needs.
The card's numbers are computed here from the run's own files, never typed in.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics, runs

BUNDLED_FILES = ("config.json", "status.json", "metrics.jsonl", "model.safetensors", "operating_point.json",
                 "ood.safetensors", "summary.json", "val_predictions.csv", "test_predictions.csv", "log.txt")


def validation_figures(run: runs.Run, n_resamples: int = 1000) -> dict[str, Any]:
    """Validation metrics with 95% CIs at the saved threshold, and calibration before/after temperature."""
    predictions = run.predictions("val")
    operating = run.operating_point
    positive = int(operating["positive_index"])
    y_true = (predictions["label"] == positive).astype(int)
    score = predictions["probs"][:, positive]
    threshold = float(operating["threshold"])
    result = {
        "report": metrics.binary_report(y_true, score, threshold, float(operating.get("beta", 2.0))),
        "ci": metrics.bootstrap_report(y_true, score, threshold, float(operating.get("beta", 2.0)),
                                       n_resamples=n_resamples),
        "ece_calibrated": metrics.expected_calibration_error(y_true, score),
    }
    if predictions.get("logits") is not None:
        raw = metrics.softmax(np.asarray(predictions["logits"]))[:, positive]
        result["ece_uncalibrated"] = metrics.expected_calibration_error(y_true, raw)
    return result


def _ci_row(name: str, point: float, ci: Any) -> str:
    low, high = (ci[1], ci[2]) if ci is not None else (float("nan"), float("nan"))
    return f"| {name} | {point:.4f} | {low:.4f} – {high:.4f} |"


def model_card(run: runs.Run, command: str, extra: dict[str, str] | None = None) -> str:
    config, figures = run.config, validation_figures(run)
    report, ci = figures["report"], figures["ci"]
    train = config.get("train", {})
    counts = config.get("counts", {})
    lines = [
        f"# Model card: {run.id}",
        "",
        "## What it is",
        f"A {config['backbone']} classifier ({', '.join(config['class_names'])}) for frontal chest X-rays, "
        f"input {config['image_size']} px grey (repeated to 3 channels). Weights: {config.get('weights_source')}.",
        *([f"Its training images are {config.get('load_size')} px JPEGs saved at quality {config['input_jpeg_quality']}; "
           "an image resized for prediction is re-encoded the same way, so a sharp full-resolution scan does not "
           "look out of domain for its sharpness alone."] if config.get("input_jpeg_quality") else []),
        "",
        "## Intended use and limits",
        "- Research and demonstration: a second reader that flags likely pneumonia. Not a medical device; "
        "never the only basis of a diagnosis.",
        "- Trained on **pediatric** (1–5 years) anterior-posterior chest X-rays from one hospital (Guangzhou Women "
        "and Children's Medical Center, Kermany et al. 2018). Adults, other hospitals, other projections, "
        "portable or post-operative films are outside its population: the out-of-domain flag warns about "
        "inputs unlike its training data, but cannot catch every shift.",
        "- It does not distinguish bacterial from viral pneumonia, nor pneumonia from other opacities.",
        "",
        "## Data",
        f"- Source: `{train.get('data')}` ({sum(counts.values()) if counts else '?'} images).",
        f"- Split: {config.get('split')}: {counts.get('train')} training / {counts.get('val')} validation images; "
        "no patient appears on both sides; byte-identical duplicates are kept in one group.",
        f"- Unreadable files skipped: {config.get('skipped_files', 0)}.",
        "",
        "## Recipe (reproduce with)",
        "```bash",
        command.strip(),
        "```",
        "",
        "## Validation (held-out patients), at the saved operating point",
        f"Threshold {report['threshold']:.4f} on the calibrated pneumonia probability, chosen as the "
        f"F{report['beta']:g}-optimal threshold on validation (recall weighs more than precision). "
        f"n = {report['n']}, prevalence {report['prevalence']:.3f}. 95% bootstrap confidence intervals "
        "(stratified, 1000 resamples). The validation split also chose the threshold, so these "
        "figures are slightly optimistic for new data.",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
    ]
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "fbeta", "auroc"):
        lines.append(_ci_row(key, report[key], ci.get(key)))
    cm = report["confusion_matrix"]
    lines += [
        "",
        f"Confusion matrix [[tn, fp], [fn, tp]]: {cm}. AUPRC {report['auprc']:.4f}.",
        "",
        "## Calibration",
        f"Temperature {run.operating_point.get('temperature', 1.0):.3f}, fitted on validation logits. Expected "
        f"calibration error (10 bins) {figures.get('ece_uncalibrated', float('nan')):.4f} before, "
        f"{figures['ece_calibrated']:.4f} after (measured on the same validation split).",
    ]
    for title, text in (extra or {}).items():
        lines += ["", f"## {title}", text.strip()]
    return "\n".join(lines) + "\n"


def bundle_model(run_ref: str | Path, destination: Path, command: str, extra: dict[str, str] | None = None) -> Path:
    """Copy a finished run's serving files to ``destination`` and write MODEL_CARD.md there."""
    run = runs.open_run(Path(run_ref))
    if run.status().get("state") != "finished":
        raise ValueError(f"run {run.id} is not finished (state: {run.status().get('state')})")
    destination.mkdir(parents=True, exist_ok=True)
    for name in BUNDLED_FILES:
        if (run.path / name).exists():
            shutil.copy2(run.path / name, destination / name)
    bundled = runs.Run(destination)
    runs.atomic_write_text(destination / "MODEL_CARD.md", model_card(bundled, command, extra))
    return destination
