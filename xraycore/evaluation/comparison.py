"""Comparing runs: the numbers behind the Compare page and the HTML study report.

A *study* is the set of runs sharing ``config["study"]`` (one per backbone, or one per fold of a
k-fold cross-validation). Everything here reads a run's files through :class:`runs.Run` and
computes with :mod:`metrics`, so the app, the report and the CLI show identical values.
Patient identifiers and file names in the prediction files are never returned.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from xraycore import metrics
from xraycore import models
from xraycore.training import presets
from xraycore.runs.directory import STATUS_FILE, Run, list_runs, open_run

TABLE_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "fbeta", "auroc")
DEFAULT_THRESHOLD = 0.5  # multi-class runs save no threshold; one-vs-rest reports use this
_GENERATED_ID = re.compile(r"\d{8}-\d{6}-.+-(?P<tail>[0-9a-f]{6})")


def run_label(run: Run) -> str:
    """Short label such as ``resnet18 · fold 2 · 3fa2c1`` (the id's random tail keeps it unique)."""
    parts = [str(run.config.get("backbone") or "run")]
    fold = fold_number(run)
    if fold is not None:
        parts.append(f"fold {fold}")
    generated = _GENERATED_ID.fullmatch(run.id)
    parts.append(generated["tail"] if generated else run.id)
    return " · ".join(parts)


def fold_number(run: Run) -> int | None:
    """1-based fold, as people count them; None outside k-fold studies."""
    fold = (run.config.get("train") or {}).get("fold")
    return None if fold is None else int(fold) + 1


def positive_index(run: Run, class_names: list[str], positive: str | None = None) -> int:
    """Column of the positive class: ``positive`` if named, else the run's saved positive class,
    else its configured one, else the last class."""
    if positive is not None:
        if positive not in class_names:
            raise ValueError(f"{positive!r} is not a class of run {run.id}: {', '.join(class_names)}")
        return class_names.index(positive)
    saved = run.operating_point.get("positive_index")
    if isinstance(saved, int) and 0 <= saved < len(class_names):
        return saved
    configured = run.config.get("positive_class")
    return class_names.index(configured) if configured in class_names else len(class_names) - 1


def negative_label(class_names: list[str], positive: str) -> str:
    """What a one-vs-rest call against ``positive`` is named: the other class, or "rest"."""
    others = [name for name in class_names if name != positive]
    return others[0] if len(others) == 1 else "rest"


def _predictions(run: Run, split: str) -> dict | None:
    """The run's ``split`` predictions, or None when it wrote none (or an empty file)."""
    predictions = run.predictions(split)
    return None if predictions is None or len(predictions["label"]) == 0 else predictions


def scores(run: Run, split: str = "val", positive: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(binary truth, positive-class probability) from ``<split>_predictions.csv``, or None if the
    run wrote none. Multi-class runs are read one-vs-rest for the positive class."""
    predictions = _predictions(run, split)
    if predictions is None:
        return None
    index = positive_index(run, predictions["class_names"], positive)
    return metrics.one_vs_rest(predictions["label"], predictions["probs"], index)


def evaluate_run(run: Run, split: str = "val", threshold: float | None = None, beta: float = 2.0,
                 with_ci: bool = True, n_resamples: int = 500) -> dict:
    """``metrics.binary_report`` at ``threshold`` (default: the run's saved one), plus
    ``positive_class``/``class_names``, bootstrap CIs under ``"ci"`` (metric -> (point, low, high))
    and, for multi-class runs, ``"multiclass"`` = ``metrics.multiclass_report``.

    Raises ValueError when the run has no predictions for ``split``.
    """
    predictions = _predictions(run, split)
    if predictions is None:
        raise ValueError(f"run {run.id} has no {split} predictions (is it still training?)")
    names = predictions["class_names"]
    index = positive_index(run, names)
    truth, score = metrics.one_vs_rest(predictions["label"], predictions["probs"], index)
    if threshold is None:
        threshold = float(run.operating_point.get("threshold", DEFAULT_THRESHOLD))
    if with_ci:
        report, report["ci"] = metrics.report_with_ci(truth, score, threshold, beta, n_resamples=n_resamples)
        from xraycore.clinical.fit_bootstrap import widened_to_counts  # lazy: it imports the operating-point fit

        called = np.asarray(metrics.is_positive(score, threshold), dtype=int)
        report["ci"] = widened_to_counts(report["ci"], np.asarray(truth, dtype=int), called)
    else:
        report = metrics.binary_report(truth, score, threshold, beta)
    report.update(split=split, class_names=names, positive_class=names[index])
    if len(names) > 2:
        report["multiclass"] = metrics.multiclass_report(predictions["label"], predictions["probs"], names)
    return report


def _multiclass_headline(report: dict) -> dict[str, float | None]:
    """The two multi-class numbers a table row shows (empty for binary runs)."""
    multiclass = report.get("multiclass")
    if multiclass is None:
        return {}
    return {"multiclass_accuracy": multiclass["accuracy"], "macro_auroc": multiclass["macro_auroc"]}


def confusion_of(report: dict) -> tuple[np.ndarray, list[str]]:
    """(matrix, axis names) to draw for an :func:`evaluate_run` report: every class called by
    arg-max for multi-class runs, else positive against the rest at the report's threshold."""
    if "multiclass" in report:
        return np.asarray(report["multiclass"]["confusion_matrix"]), list(report["class_names"])
    positive = report["positive_class"]
    names = [negative_label(report["class_names"], positive), positive]
    return np.asarray(report["confusion_matrix"]), names


def comparison_table(runs: list[Run], split: str = "val", beta: float = 2.0,
                     with_ci: bool = True) -> list[dict]:
    """One row per run. Runs without predictions (still training, failed) keep their row with
    the metric columns set to None, so the table shows every run of the study."""
    rows = []
    for run in runs:
        config = run.config
        row: dict[str, Any] = {
            "label": run_label(run), "id": run.id, "backbone": config.get("backbone"),
            "study": config.get("study"), "fold": fold_number(run), "state": run.status().get("state") if (run.path / STATUS_FILE).exists() else "bundled",
            "n": None, "threshold": None, **{metric: None for metric in TABLE_METRICS},
        }
        if run.predictions(split) is not None:
            report = evaluate_run(run, split, beta=beta, with_ci=with_ci)
            row.update({key: report[key] for key in ("n", "threshold", "positive_class", *TABLE_METRICS)})
            for metric, interval in (report.get("ci") or {}).items():
                if interval is not None:
                    row[f"{metric}_low"], row[f"{metric}_high"] = interval[1], interval[2]
            row.update(_multiclass_headline(report))
        rows.append(row)
    return rows


def curves(runs: list[Run], split: str = "val") -> tuple[dict, dict]:
    """({label: (fpr, tpr, auc)}, {label: (recall, precision, ap)}) for every run whose ``split``
    predictions hold both classes; ready for ``figures.roc_figure`` / ``figures.pr_figure``."""
    roc, pr = {}, {}
    for run in runs:
        pair = scores(run, split)
        if pair is None or not 0 < pair[0].sum() < pair[0].size:
            continue
        truth, score = pair
        label = run_label(run)
        fpr, tpr, _ = metrics.roc_curve(truth, score)
        precision, recall, _ = metrics.pr_curve(truth, score)
        roc[label] = (fpr, tpr, metrics.roc_auc(truth, score))
        pr[label] = (recall, precision, metrics.average_precision(truth, score))
    return roc, pr


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


ENSEMBLE_FILE, MEMBERS_DIR = "ensemble.json", "members"  # as inference/model_directory.py lays an ensemble out


def training_settings(run: Run) -> dict[str, Any]:
    """A model's training settings, flattened with dots. An ensemble (the bundled model) was not trained itself:
    its settings are its members'; one value where they agree, else each member's (``member: value; ...``)."""
    members = (run.read_json(ENSEMBLE_FILE, None) or {}).get("members") or []
    if not members:
        return _flatten(run.config.get("train") or {})
    each = {str(name): _flatten(Run(run.path / MEMBERS_DIR / str(name)).config.get("train") or {}) for name in members}
    settings: dict[str, Any] = {}
    for key in sorted({key for member in each.values() for key in member}):
        values = [member.get(key) for member in each.values()]
        settings[key] = values[0] if all(value == values[0] for value in values) else \
            "; ".join(f"{name}: {member.get(key)}" for name, member in each.items())
    return settings


def config_differences(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """The training settings that differ between runs: ``key -> {run_label: value}``.

    Nested settings are flattened with dots (:func:`training_settings`, an ensemble's from its members); a key
    missing from a run counts as None. ``weights`` is what each run really started from (``pretrained`` is
    only what was asked for: hub weights may have been out of reach).
    """
    flat = {run_label(run): {**training_settings(run),
                             "weights": models.weights_label(run.config.get("weights_source"))} for run in runs}
    keys = sorted({key for settings in flat.values() for key in settings})
    differences = {}
    for key in keys:
        values = {label: settings.get(key) for label, settings in flat.items()}
        first = next(iter(values.values()))
        if any(value != first for value in values.values()):
            differences[key] = values
    return differences


def study_names(root: Path | None = None) -> list[str]:
    """Every study name that appears in a run's config, sorted."""
    return sorted({run.config.get("study") for run in list_runs(root)} - {None, ""})


def study_runs(study: str, root: Path | None = None) -> list[Run]:
    """The runs of ``study``, oldest first (so folds and backbones appear in launch order)."""
    return [run for run in reversed(list_runs(root)) if run.config.get("study") == study]


def resolve_runs(study_or_run: str, root: Path | None = None) -> list[Run]:
    """A study's runs, or the single run with that id; ValueError naming the known studies."""
    found = study_runs(study_or_run, root)
    if found:
        return found
    try:
        return [open_run(study_or_run, root)]
    except (ValueError, FileNotFoundError):
        known = ", ".join(study_names(root)) or "none yet"
        raise ValueError(f"no study or run named {study_or_run!r}; known studies: {known}") from None


def fold_summary(runs: list[Run], split: str = "val") -> dict[str, dict[str, float]]:
    """k-fold CV: ``{metric: {"mean", "std"}}`` across the runs (sample std, ``metrics.mean_std``).
    Runs without predictions are left out."""
    per_fold = []
    for run in runs:
        if run.predictions(split) is None:
            continue
        report = evaluate_run(run, split, with_ci=False)
        per_fold.append({**report, **_multiclass_headline(report)})
    return metrics.mean_std(per_fold)


def reported_numbers(run: Run) -> dict | None:
    """What the source study reported for this run's preset and backbone (metric -> value), or
    None when the run has no preset or the study reported nothing for that backbone."""
    config = run.config
    preset_name = config.get("preset")
    if not preset_name or preset_name not in presets.names():
        return None
    reported = presets.load(preset_name).get("reported", {}).get(config.get("backbone"))
    return dict(reported) if reported else None


DISPLAY_METRICS = ("accuracy", "precision", "recall", "specificity", "fbeta", "auroc")


def display_rows(rows: list[dict], beta: float) -> list[dict]:
    """comparison_table rows as people read them: F-beta named by its beta (F1, F2), each confidence
    interval one "low–high" cell beside its metric, three decimals."""
    f_name = f"F{beta:g}"
    shown = []
    for row in rows:
        out: dict[str, Any] = {"model": row["label"], "state": row.get("state"), "n": row.get("n"),
                               "threshold": None if row.get("threshold") is None else round(row["threshold"], 3)}
        for metric in DISPLAY_METRICS:
            title = f_name if metric == "fbeta" else metric
            value = row.get(metric)
            out[title] = None if value is None else round(value, 3)
            low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
            if low is not None and high is not None:
                out[f"{title} 95% CI"] = f"{low:.3f}–{high:.3f}"
        for key in ("multiclass_accuracy", "macro_auroc"):
            if row.get(key) is not None:
                out[key] = round(row[key], 3)
        shown.append(out)
    return shown
