"""One self-contained HTML file per study: ``python -m xraycore report STUDY``.

The file opens offline (plotly.js is inlined once, in the head) and holds the metrics with 95%
bootstrap intervals, the source study's reported numbers beside ours, fold mean ± std for k-fold
studies, confusion matrices, ROC/PR and training curves, and how the runs' settings differ.
This module gathers the values; the markup is ``templates/study_report.html.j2`` (Jinja2, autoescaped,
so every piece of text from a run — names, notes, class names — is HTML-escaped).
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import plotly.graph_objects as go
import plotly.offline
from markupsafe import Markup

from xraycore.evaluation import figures
from xraycore import metrics
from xraycore.training import presets
from xraycore.runs.directory import Run, runs_root
from xraycore.common.files import atomic_write_text
from xraycore.evaluation.comparison import TABLE_METRICS, comparison_table, config_differences, confusion_of, curves, evaluate_run, fold_number, fold_summary, reported_numbers, resolve_runs, run_label, scores

CURVE_METRICS = ("train_loss", "val_loss", "val_auroc", "val_accuracy")
MULTICLASS_COLUMNS = ("multiclass_accuracy", "macro_auroc")
BAR_METRICS = ["accuracy", "precision", "recall", "specificity", "f1", "auroc"]
TEMPLATE = "study_report.html.j2"

Table = tuple[list[str], list[list[Any]]]  # (headers, rows) for the template's table macro


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> str:
    """Cell text: floats to 3 decimals, missing values as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if np.isfinite(value) else "–"
    return str(value)


_ENVIRONMENT = jinja2.Environment(loader=jinja2.PackageLoader("xraycore.evaluation", "templates"),
                                  autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENVIRONMENT.filters["cell"] = _number
_ENVIRONMENT.tests["numeric"] = _is_numeric


def _with_interval(row: dict, metric: str) -> str:
    value = row.get(metric)
    if value is None:
        return "–"
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    interval = f" ({low:.3f}–{high:.3f})" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"


def _figure(figure: go.Figure, height: int = 420) -> Markup:
    """A plotly figure's div and script (plotly's own markup, with its data JSON-escaped)."""
    figure.update_layout(height=height)
    return Markup(figure.to_html(full_html=False, include_plotlyjs=False))


# ---------------------------------------------------------------- sections


def _runs_table(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        config, status = run.config, run.status()
        counts = config.get("counts") or {}
        rows.append([run_label(run), run.id, config.get("backbone"), status.get("state"),
                     config.get("weights_source"), config.get("split"),
                     " / ".join(f"{counts.get(part, 0)}" for part in ("train", "val", "test")),
                     (config.get("train") or {}).get("notes") or ""])
    return ["run", "id", "backbone", "state", "weights", "split", "images train / val / test", "notes"], rows


def _metrics_section(runs: list[Run], split: str) -> tuple[dict | None, list[dict]]:
    table = comparison_table(runs, split=split)
    if all(row["n"] is None for row in table):
        return None, table
    multiclass = [key for key in MULTICLASS_COLUMNS if any(row.get(key) is not None for row in table)]
    headers = ["run", *multiclass, "positive class", "n", "threshold", *TABLE_METRICS]
    rows = [[row["label"], *(row.get(key) for key in multiclass), row.get("positive_class", "–"), row["n"],
             row["threshold"], *(_with_interval(row, metric) for metric in TABLE_METRICS)] for row in table]
    bars = figures.metric_bars_figure([row for row in table if row["n"] is not None], BAR_METRICS)
    return {"split": split, "multiclass": bool(multiclass), "table": (headers, rows), "bars": _figure(bars, 380)}, table


def _reported_section(runs: list[Run], tables: dict[str, list[dict]]) -> dict | None:
    """The source study's numbers next to ours, metric by metric."""
    by_id = {split: {row["id"]: row for row in rows} for split, rows in tables.items()}
    rows, sources = [], {}
    for run in runs:
        reported = reported_numbers(run)
        if not reported:
            continue
        preset = presets.load(run.config["preset"])
        sources[preset["name"]] = preset
        for metric, value in reported.items():
            ours = [_ours(by_id[split].get(run.id, {}), metric) for split in tables]
            rows.append([run_label(run), metric, value, *ours])
    if not rows:
        return None
    headers = ["run", "metric", "reported", *(f"ours ({split})" for split in tables)]
    return {"presets": [{"source": preset["source"], "notes": preset.get("notes", "")} for preset in sources.values()],
            "table": (headers, rows)}


def _ours(row: dict, reported_metric: str) -> float | None:
    """Our number for a study's reported one: a multi-class study's accuracy is over all classes, and a
    variant such as ``accuracy_warmup_cosine`` compares with our plain metric (the preset ran that variant)."""
    metric = reported_metric.split("_")[0] if reported_metric not in row else reported_metric
    if metric == "accuracy" and row.get("multiclass_accuracy") is not None:
        return row["multiclass_accuracy"]
    return row.get(metric)


def _folds_table(runs: list[Run]) -> Table | None:
    """Mean ± std across folds, one line per backbone that was cross-validated."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if fold_number(run) is not None:
            groups.setdefault(str(run.config.get("backbone")), []).append(run)
    rows = []
    for backbone, folds in groups.items():
        summary = fold_summary(folds)
        if not summary:
            continue
        cells = [f"{summary[m]['mean']:.3f} ± {summary[m]['std']:.3f}" if m in summary else "–"
                 for m in TABLE_METRICS]
        rows.append([backbone, len(folds), *cells])
    return (["backbone", "folds", *TABLE_METRICS], rows) if rows else None


def _confusion_figures(runs: list[Run], split: str) -> list[Markup]:
    panels = []
    for run in runs:
        if run.predictions(split) is None:
            continue
        report = evaluate_run(run, split, with_ci=False)
        matrix, names = confusion_of(report)
        how = "(arg-max)" if "multiclass" in report else f"@ threshold {report['threshold']:.3f}"
        panels.append(_figure(figures.confusion_matrix_figure(matrix, names, f"{run_label(run)} {how}"), 360))
    return panels


def _curve_figures(runs: list[Run], split: str) -> list[Markup]:
    roc, pr = curves(runs, split)
    if not roc:
        return []
    prevalences = [pair[0].mean() for run in runs if (pair := scores(run, split)) is not None]
    prevalence = float(np.mean(prevalences)) if len(set(np.round(prevalences, 6))) == 1 else None
    return [_figure(figures.roc_figure(roc)), _figure(figures.pr_figure(pr, prevalence=prevalence))]


def _calibration_figures(runs: list[Run], split: str) -> list[Markup]:
    panels = []
    for run in runs:
        pair = scores(run, split)
        if pair is None:
            continue
        truth, score = pair
        bins = metrics.reliability_bins(truth, score)
        ece = metrics.expected_calibration_error(truth, score)
        panels.append(_figure(figures.reliability_figure(bins, ece, run_label(run)), 340))
    return panels


def _training_figures(runs: list[Run]) -> list[Markup]:
    histories = {run_label(run): run.metrics() for run in runs}
    return [_figure(figures.training_curves_figure(histories, metric), 340) for metric in CURVE_METRICS
            if any(metric in row for rows in histories.values() for row in rows)]


def _config_differences(runs: list[Run]) -> Table | None:
    """None for a single run; a table without rows when the runs share every setting."""
    if len(runs) < 2:
        return None
    differences = config_differences(runs)
    labels = [run_label(run) for run in runs]
    rows = [[key, *(_display(values.get(label)) for label in labels)] for key, values in differences.items()]
    return ["setting", *labels], rows


def _display(value: Any) -> str:
    return "–" if value is None else str(value)


def _shared_settings(runs: list[Run]) -> Table:
    """Every setting of the first run, folded away: what was held fixed."""
    settings = (runs[0].config.get("train") or {}) if runs else {}
    differing = set(config_differences(runs))
    return ["setting", "value"], [[key, _display(value)] for key, value in sorted(settings.items())
                                  if key not in differing]


# ---------------------------------------------------------------- the report


def _default_output(name: str, root: Path | None) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "study"
    return runs_root(root) / f"{slug}.html"


def build_study_html(name: str, runs: list[Run]) -> str:
    """The whole report page for ``runs`` (titled ``name``) as one HTML string."""
    preset_names = sorted({run.config.get("preset") for run in runs} - {None})
    splits = [split for split in ("val", "test") if any(run.predictions(split) is not None for run in runs)]
    tables: dict[str, list[dict]] = {}
    metric_sections = []
    for split in splits:
        section, tables[split] = _metrics_section(runs, split)
        metric_sections += [section] if section else []
    return _ENVIRONMENT.get_template(TEMPLATE).render(
        name=name,
        subtitle="; ".join(presets.load(p)["title"] for p in preset_names if p in presets.names()),
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        run_count=len(runs),
        plotly_js=Markup(plotly.offline.get_plotlyjs()),
        runs_table=_runs_table(runs),
        metric_sections=metric_sections,
        reported=_reported_section(runs, tables),
        folds=_folds_table(runs),
        confusions=[(split, panels) for split in splits if (panels := _confusion_figures(runs, split))],
        curves=[(split, panels) for split in splits if (panels := _curve_figures(runs, split))],
        calibration=_calibration_figures(runs, "val"),
        training=_training_figures(runs),
        config_differences=_config_differences(runs),
        shared_settings=_shared_settings(runs),
    )


def write_study_report(study: str, root: Path | None = None, output: Path | None = None) -> Path:
    """Write the report of a study (or of a single run id) and return its path.

    Default location: ``<runs root>/<study>.html``. Unknown names raise ValueError listing the
    known studies.
    """
    runs = resolve_runs(study, root)
    path = Path(output) if output is not None else _default_output(study, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, build_study_html(study, runs))
    return path
