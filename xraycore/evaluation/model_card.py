"""Turn a finished run into a shippable model directory with a model card.

The bundle keeps what prediction and the Operating point page need (weights, config, operating
point, out-of-domain model, validation predictions, curves) and drops what only resuming needs.
The card's numbers are computed here from the run's own files, never typed in.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xraycore.io import intended_use
from xraycore import metrics
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.common.files import atomic_write_text
from xraycore.common.tensor_files import load_arrays, save_arrays
from xraycore.evaluation import shortcuts
from xraycore.inference.backends.choice import GRAPH_FILE

# What serving needs; config.json and the prediction files are rewritten without machine paths. An exported
# ONNX graph travels too (it records the weights it was made from, so it is served only with them).
SERVING_FILES = ("metrics.jsonl", "model.safetensors", "operating_point.json", operating.POINTS_FILE,
                 "ood.safetensors", "summary.json", intended_use.INTENDED_USE_FILE, GRAPH_FILE,
                 "selfcheck.json")  # the self-check's reference values: valid while the weights are the same


def validation_figures(run: runs.Run, n_resamples: int = 1000) -> dict[str, Any]:
    """Validation metrics with 95% CIs at the saved threshold, and calibration before/after temperature."""
    predictions = run.predictions("val")
    operating = run.operating_point
    positive = int(operating["positive_index"])
    y_true = (predictions["label"] == positive).astype(int)
    score = predictions["probs"][:, positive]
    report, ci = metrics.report_with_ci(y_true, score, float(operating["threshold"]), float(operating.get("beta", 2.0)),
                                        n_resamples=n_resamples)
    result = {"report": report, "ci": ci, "ece_calibrated": metrics.expected_calibration_error(y_true, score)}
    if predictions.get("logits") is not None:
        raw = metrics.softmax(np.asarray(predictions["logits"]))[:, positive]
        result["ece_uncalibrated"] = metrics.expected_calibration_error(y_true, raw)
    return result


def _four(value: float | None) -> str:
    """A card number: four decimals, or "n/a" where metrics says it is undefined (None)."""
    return "n/a" if value is None else f"{value:.4f}"


def _ci_row(name: str, point: float | None, ci: tuple[float, float, float] | None) -> str:
    interval = "–" if ci is None else f"{ci[1]:.4f} – {ci[2]:.4f}"
    return f"| {name} | {_four(point)} | {interval} |"


def model_card(run: runs.Run, command: str, extra: dict[str, str] | None = None) -> str:
    config, figures = run.config, validation_figures(run)
    report, ci = figures["report"], figures["ci"]
    train = config.get("train", {})
    counts = config.get("counts", {})
    lines = [
        f"# Model card: {run.id}",
        "",
        "## What it is",
        f"{'An' if str(config['backbone'])[:1].lower() in 'aeiou' else 'A'} {config['backbone']} classifier ({', '.join(config['class_names'])}) for frontal chest X-rays, "
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
        *intended_population_section(run.path),
        "",
        "## Data",
        f"- Source: `{train.get('data')}` ({sum(counts.values()) if counts else '?'} images).",
        f"- Split: {config.get('split')}: {counts.get('train')} training / {counts.get('val')} validation images; "
        "no patient appears on both sides; byte-identical duplicates are kept in one group.",
        f"- Unreadable files skipped: {_skipped_files(config)}.",
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
        f"Confusion matrix [[tn, fp], [fn, tp]]: {cm}. AUPRC {_four(report['auprc'])}.",
        "",
        "## Calibration",
        f"Temperature {run.operating_point.get('temperature', 1.0):.3f}, fitted on validation logits. Expected "
        f"calibration error (10 bins) {_four(figures.get('ece_uncalibrated'))} before, "
        f"{figures['ece_calibrated']:.4f} after (measured on the same validation split).",
    ]
    lines += ["", *evidence_section(run.path), "", *operating_points_section(run.path)]
    lines += ["", *heat_map_section] if (heat_map_section := shortcuts.card_section(run.path)) else []
    for title, text in (extra or {}).items():
        lines += ["", f"## {title}", text.strip()]
    return "\n".join(lines) + "\n"


def _skipped_files(config: dict[str, Any]) -> str:
    """"3 (not an image: 2, damaged or truncated: 1)"; runs made before reasons were counted give the number only."""
    by_reason = config.get("skipped_by_reason") or {}
    detail = ", ".join(f"{reason}: {count}" for reason, count in by_reason.items())
    return f"{config.get('skipped_files', 0)}" + (f" ({detail})" if detail else "")


def intended_population_section(model_dir: Path) -> list[str]:
    """The 'Intended population' section (preceded by a blank line) when the model states one."""
    intended = intended_use.load(model_dir)
    return [] if intended is None else ["", *intended_use.card_section(intended)]


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value or "–")


def evidence_section(model_dir: Path) -> list[str]:
    """Internal validation and every saved external evaluation, side by side, labelled."""
    from xraycore.evaluation.external import evidence

    lines = ["## What to expect on new patients: internal validation beside external evaluations",
             "Internal validation images come from the same collection as the training images; new patients, "
             "even of the same hospital, score lower. External evaluations were never trained on.", "",
             "| data | n | prevalence | AUROC | accuracy | sensitivity | specificity | operating point | date |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = evidence(model_dir)
    for row in rows:
        lines.append(f"| {row['data']} | {row['n']} | {_cell(row['prevalence'])} | {_cell(row['auroc'])} | "
                     f"{_cell(row['accuracy'])} | {_cell(row['sensitivity'])} | {_cell(row['specificity'])} | "
                     f"{row['operating_point']} | {row['date'] or '–'} |")
    if not any(row["kind"] == "external" for row in rows):
        lines.append("")
        lines.append("No external evaluation is recorded: the internal figures above overstate what to expect.")
    return lines


def operating_points_section(model_dir: Path) -> list[str]:
    from xraycore.clinical import operating_points as operating

    state = operating.load(model_dir)
    lines = ["## Operating points", f"Active: **{state['active']}**.", "",
             "| name | threshold | temperature | F-beta | how it was chosen |", "|---|---|---|---|---|"]
    for name, point in state["points"].items():
        lines.append(f"| {name} | {_cell(point.get('threshold'))} | {_cell(point.get('temperature'))} | "
                     f"{_cell(point.get('beta'))} | {point.get('source', '–')} |")
    return lines


MACHINE_KEYS = ("out", "cache_dir", "threads", "device", "num_workers")  # the training machine's, not the model's


def _portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json without the training machine: no host, no absolute paths, no weights-file path."""
    portable = json.loads(json.dumps(config))
    portable.get("environment", {}).pop("host", None)
    train = portable.get("train", {})
    for key in MACHINE_KEYS:
        train.pop(key, None)
    for key in ("data", "watch_data"):
        if train.get(key):
            train[key] = Path(train[key]).name
    if train.get("pretrained") not in (None, "none", "hub", "wheel", "auto"):
        train["pretrained"] = f"local file {Path(train['pretrained']).name}"
    source = str(portable.get("weights_source") or "")
    if source.startswith("local file "):  # "local file /some/path/x.pth (sha256 ...)" → file name only
        path, _, rest = source[len("local file "):].partition(" (")
        portable["weights_source"] = f"local file {Path(path).name} ({rest}"
    return portable


def _copy_portable_predictions(source: runs.Run, destination: runs.Run, split: str) -> None:
    """<split>_predictions.csv with file names only (no machine paths)."""
    predictions = source.predictions(split)
    if predictions is None:
        return
    names = source.config.get("class_names")
    destination.write_predictions(split, [Path(f).name for f in predictions["file"]], predictions["label"],
                                  predictions["probs"], names, patients=predictions["patient"],
                                  logits=predictions["logits"])


def _bundle_files(run: runs.Run, destination: Path) -> runs.Run:
    destination.mkdir(parents=True, exist_ok=True)
    for name in SERVING_FILES:
        if (run.path / name).exists():
            shutil.copy2(run.path / name, destination / name)
    bundled = runs.Run(destination)
    bundled.write_json(runs.CONFIG_FILE, _portable_config(run.config))
    for split in ("val", "test"):
        _copy_portable_predictions(run, bundled, split)
    if (destination / runs.OOD_FILE).exists():  # written again in today's layout (half the bytes of older runs')
        from xraycore.ood.distance import OodModel

        detector = OodModel.from_arrays(load_arrays(destination / runs.OOD_FILE))
        save_arrays(destination / runs.OOD_FILE, detector.to_arrays())
    return bundled


def bundle_model(run_ref: str | Path, destination: Path, command: str, extra: dict[str, str] | None = None) -> Path:
    """A finished run's serving files in ``destination``, made portable, with MODEL_CARD.md.

    A bundle is not a run: no status (pid, host), no resume state, no machine paths.
    """
    run = runs.open_run(Path(run_ref))
    if run.status().get("state") != "finished":
        raise ValueError(f"run {run.id} is not finished (state: {run.status().get('state')})")
    bundled = _bundle_files(run, destination)
    if (destination / operating.POINTS_FILE).exists():  # the point active now is the one the bundle ships with
        operating.mark_shipped(destination)
    atomic_write_text(destination / "MODEL_CARD.md", model_card(bundled, command, extra))
    return destination


def _shared_intended_use(member_runs: Sequence[runs.Run]) -> intended_use.IntendedUse | None:
    """The members' intended use: the ensemble reads the population they read (those that state one must agree)."""
    stated = {intended_use.load(run.path) for run in member_runs} - {None}
    if len(stated) > 1:
        raise ValueError(f"the members of an ensemble state different intended uses ({intended_use.INTENDED_USE_FILE})")
    return next(iter(stated), None)


def bundle_ensemble(member_refs: Sequence[str | Path], destination: Path, command: str,
                    extra: dict[str, str] | None = None, beta: float = 2.0, tta: bool = False) -> Path:
    """An ensemble model directory: each finished run bundled under members/, their calibrated logits averaged.

    The members must share their classes and their validation images (same data, split and seed), so the
    ensemble's own temperature and F-beta threshold are fitted on the averaged validation logits, exactly as
    training fits a single network's. ``tta`` makes flip test-time augmentation the ensemble's default.
    """
    from xraycore.inference.model_directory import ENSEMBLE_FILE, ENSEMBLE_MEMBERS_DIR

    member_runs = [runs.open_run(Path(ref)) for ref in member_refs]
    if len(member_runs) < 2:
        raise ValueError("an ensemble needs at least two members")
    names, files, logits, configs = [], None, [], []
    for run in member_runs:
        if run.status().get("state") != "finished":
            raise ValueError(f"run {run.id} is not finished")
        predictions = run.predictions("val")
        if predictions is None or predictions["logits"] is None:
            raise ValueError(f"run {run.id} has no validation logits")
        names_only = [Path(f).name for f in predictions["file"]]  # where the data folder lay may differ per run
        order = np.argsort(names_only)
        if files is None:
            files, labels, patients = ([names_only[i] for i in order], predictions["label"][order],
                                       [predictions["patient"][i] for i in order])
        elif [names_only[i] for i in order] != files:
            raise ValueError(f"run {run.id} was validated on other images than {member_runs[0].id}")
        temperature = float(run.operating_point.get("temperature", 1.0))
        logits.append(np.asarray(predictions["logits"])[order] / temperature)
        names.append(runs.sanitize_run_id(run.id))
        configs.append(run.config)
    class_names = configs[0]["class_names"]
    if any(config["class_names"] != class_names for config in configs):
        raise ValueError("the members of an ensemble must share their classes")
    intended = _shared_intended_use(member_runs)
    destination.mkdir(parents=True, exist_ok=True)
    for run, name in zip(member_runs, names):
        bundle_model(run.path, destination / ENSEMBLE_MEMBERS_DIR / name, command)
    if intended is not None:
        intended_use.save(destination, intended)
    averaged = np.mean(logits, axis=0)
    positive = class_names.index(configs[0].get("positive_class") or class_names[-1])
    y_val = (labels == positive).astype(int)
    temperature = metrics.fit_temperature(averaged, labels)
    probability = metrics.softmax(averaged, temperature)
    threshold, _ = metrics.best_fbeta_threshold(y_val, probability[:, positive], beta)
    ensemble = runs.Run(destination)
    ensemble.write_json(ENSEMBLE_FILE, {"members": names, "combine": "mean of the members' temperature-scaled logits"})
    ensemble.write_json(runs.CONFIG_FILE, {
        "backbone": "ensemble", "members": names, "class_names": class_names,
        "positive_class": class_names[positive], "split": configs[0].get("split"), "counts": configs[0].get("counts"),
        "weights_source": "; ".join(f"{name}: {config.get('weights_source')}" for name, config in zip(names, configs)),
        "image_size": configs[0]["image_size"], "train": {"data": _portable_config(configs[0])["train"].get("data")},
        "tta": tta,  # flip test-time augmentation by default (the internal point is fitted on un-flipped scores)
    })
    ensemble.write_json(runs.OPERATING_POINT_FILE, {
        "temperature": temperature, "threshold": threshold, "beta": beta, "positive_class": class_names[positive],
        "positive_index": positive, "source": f"F{beta:g}-optimal on the validation split (averaged member logits)"})
    ensemble.write_predictions("val", [Path(f).name for f in files], labels, probability, class_names,
                               patients=patients, logits=averaged)
    ensemble.write_json(runs.SUMMARY_FILE, {
        "temperature": temperature, "split": configs[0].get("split"),
        "val": metrics.binary_report(y_val, probability[:, positive], threshold, beta)})
    atomic_write_text(destination / "MODEL_CARD.md", model_card(ensemble, command, extra))
    return destination
