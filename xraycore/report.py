"""One self-contained HTML file per study: ``python -m xraycore report STUDY``.

The file opens offline (plotly.js is inlined once, in the head) and holds the metrics with 95%
bootstrap intervals, the source study's reported numbers beside ours, fold mean ± std for k-fold
studies, confusion matrices, ROC/PR and training curves, and how the runs' settings differ.
Every piece of text from a run (names, notes, class names) is HTML-escaped.
"""
from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import plotly.graph_objects as go
import plotly.offline

from . import figures, metrics, presets
from .runs import Run, atomic_write_text, runs_root
from .comparison import (TABLE_METRICS, comparison_table, config_differences, confusion_of, curves, evaluate_run,
                    fold_number, fold_summary, reported_numbers, resolve_runs, run_label, scores)

CURVE_METRICS = ("train_loss", "val_loss", "val_auroc", "val_accuracy")
MULTICLASS_COLUMNS = ("multiclass_accuracy", "macro_auroc")
BAR_METRICS = ["accuracy", "precision", "recall", "specificity", "f1", "auroc"]
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 1em; } .row > div { flex: 1 1 360px; min-width: 320px; }
"""


# Each figure's script runs while the page is still being parsed, when its row holds only the figures
# read so far, so it measures a wider box than it ends up with. Once the page is laid out, every
# figure is fitted to its final box.
FIT_PLOTS_SCRIPT = ('<script>window.addEventListener("load", () => document.querySelectorAll(".js-plotly-plot")'
                    '.forEach((plot) => Plotly.Plots.resize(plot)));</script>')


def _text(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    """Cell text: floats to 3 decimals, missing values as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if np.isfinite(value) else "–"
    return str(value)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """An HTML table; numbers get right-aligned cells, everything is escaped."""
    head = "".join(f"<th>{_text(header)}</th>" for header in headers)
    body = ["<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_text(_number(value))}</td>' if numeric else f"<td>{_text(_number(value))}</td>"


def _with_interval(row: dict, metric: str) -> str:
    value = row.get(metric)
    if value is None:
        return "–"
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    interval = f" ({low:.3f}–{high:.3f})" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"


def _figure(figure: go.Figure, height: int = 420) -> str:
    figure.update_layout(height=height)
    return f"<div>{figure.to_html(full_html=False, include_plotlyjs=False)}</div>"


def _section(title: str, *parts: str) -> str:
    return f"<h2>{_text(title)}</h2>\n" + "\n".join(part for part in parts if part)


# ---------------------------------------------------------------- sections


def _runs_section(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        config, status = run.config, run.status()
        counts = config.get("counts") or {}
        rows.append([run_label(run), run.id, config.get("backbone"), status.get("state"),
                     config.get("weights_source"), config.get("split"),
                     " / ".join(f"{counts.get(part, 0)}" for part in ("train", "val", "test")),
                     (config.get("train") or {}).get("notes") or ""])
    return _section("Runs", _table(["run", "id", "backbone", "state", "weights", "split",
                                    "images train / val / test", "notes"], rows))


def _metrics_section(runs: list[Run], split: str) -> tuple[str, list[dict]]:
    table = comparison_table(runs, split=split)
    if all(row["n"] is None for row in table):
        return "", table
    multiclass = [key for key in MULTICLASS_COLUMNS if any(row.get(key) is not None for row in table)]
    headers = ["run", *multiclass, "positive class", "n", "threshold", *TABLE_METRICS]
    rows = [[row["label"], *(row.get(key) for key in multiclass), row.get("positive_class", "–"), row["n"],
             row["threshold"], *(_with_interval(row, metric) for metric in TABLE_METRICS)] for row in table]
    note = (f'<p class="muted">{_text(split)} split, at each run\'s saved threshold; '
            "95% stratified bootstrap intervals in brackets; fbeta uses beta = 2."
            + (" Multi-class runs: accuracy over all classes (arg-max) and macro one-vs-rest AUROC first, then "
               "the positive class against the rest." if multiclass else "") + "</p>")
    bars = figures.metric_bars_figure([row for row in table if row["n"] is not None], BAR_METRICS)
    return _section(f"Metrics ({split})", note, _table(headers, rows), _figure(bars, 380)), table


def _reported_section(runs: list[Run], tables: dict[str, list[dict]]) -> str:
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
        return ""
    notes = "".join(f'<p class="muted">{_text(preset["source"])}. {_text(preset.get("notes", ""))}</p>'
                    for preset in sources.values())
    headers = ["run", "metric", "reported", *(f"ours ({split})" for split in tables)]
    return _section("Reported by the source study", notes, _table(headers, rows))


def _ours(row: dict, reported_metric: str) -> float | None:
    """Our number for a study's reported one: a multi-class study's accuracy is over all classes, and a
    variant such as ``accuracy_warmup_cosine`` compares with our plain metric (the preset ran that variant)."""
    metric = reported_metric.split("_")[0] if reported_metric not in row else reported_metric
    if metric == "accuracy" and row.get("multiclass_accuracy") is not None:
        return row["multiclass_accuracy"]
    return row.get(metric)


def _folds_section(runs: list[Run]) -> str:
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
    if not rows:
        return ""
    note = '<p class="muted">Validation split of each fold; sample standard deviation across folds.</p>'
    return _section("Cross-validation (mean ± std)", note, _table(["backbone", "folds", *TABLE_METRICS], rows))


def _confusion_section(runs: list[Run], split: str) -> str:
    panels = []
    for run in runs:
        if run.predictions(split) is None:
            continue
        report = evaluate_run(run, split, with_ci=False)
        matrix, names = confusion_of(report)
        how = "(arg-max)" if "multiclass" in report else f"@ threshold {report['threshold']:.3f}"
        panels.append(_figure(figures.confusion_matrix_figure(matrix, names, f"{run_label(run)} {how}"), 360))
    return _section(f"Confusion matrices ({split})", f'<div class="row">{"".join(panels)}</div>') if panels else ""


def _curves_section(runs: list[Run], split: str) -> str:
    roc, pr = curves(runs, split)
    if not roc:
        return ""
    prevalences = [pair[0].mean() for run in runs if (pair := scores(run, split)) is not None]
    prevalence = float(np.mean(prevalences)) if len(set(np.round(prevalences, 6))) == 1 else None
    return _section(f"ROC and precision-recall ({split})", '<div class="row">'
                    + _figure(figures.roc_figure(roc)) + _figure(figures.pr_figure(pr, prevalence=prevalence))
                    + "</div>")


def _calibration_section(runs: list[Run], split: str) -> str:
    panels = []
    for run in runs:
        pair = scores(run, split)
        if pair is None:
            continue
        truth, score = pair
        bins = metrics.reliability_bins(truth, score)
        ece = metrics.expected_calibration_error(truth, score)
        panels.append(_figure(figures.reliability_figure(bins, ece, run_label(run)), 340))
    return _section(f"Calibration ({split})", f'<div class="row">{"".join(panels)}</div>') if panels else ""


def _training_section(runs: list[Run]) -> str:
    histories = {run_label(run): run.metrics() for run in runs}
    panels = [_figure(figures.training_curves_figure(histories, metric), 340) for metric in CURVE_METRICS
              if any(metric in row for rows in histories.values() for row in rows)]
    return _section("Training curves", f'<div class="row">{"".join(panels)}</div>') if panels else ""


def _config_section(runs: list[Run]) -> str:
    if len(runs) < 2:
        return ""
    differences = config_differences(runs)
    labels = [run_label(run) for run in runs]
    if not differences:
        return _section("Configuration differences", "<p>All runs share the same training settings.</p>")
    rows = [[key, *(_display(values.get(label)) for label in labels)] for key, values in differences.items()]
    return _section("Configuration differences", _table(["setting", *labels], rows))


def _display(value: Any) -> str:
    return "–" if value is None else str(value)


def _shared_config(runs: list[Run]) -> str:
    """Every setting of the first run, folded away: what was held fixed."""
    settings = (runs[0].config.get("train") or {}) if runs else {}
    differing = set(config_differences(runs))
    rows = [[key, _display(value)] for key, value in sorted(settings.items()) if key not in differing]
    return f"<details><summary>Shared settings</summary>{_table(['setting', 'value'], rows)}</details>"


# ---------------------------------------------------------------- the report


def _default_output(name: str, root: Path | None) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "study"
    return runs_root(root) / f"{slug}.html"


def build_study_html(name: str, runs: list[Run]) -> str:
    """The whole report page for ``runs`` (titled ``name``) as one HTML string."""
    preset_names = sorted({run.config.get("preset") for run in runs} - {None})
    subtitle = "; ".join(presets.load(p)["title"] for p in preset_names if p in presets.names())
    splits = [split for split in ("val", "test") if any(run.predictions(split) is not None for run in runs)]
    tables: dict[str, list[dict]] = {}
    metric_sections = []
    for split in splits:
        section, tables[split] = _metrics_section(runs, split)
        metric_sections.append(section)
    body = [
        f"<h1>Study report: {_text(name)}</h1>",
        f'<p class="muted">{_text(subtitle)}</p>' if subtitle else "",
        f'<p class="muted">Generated {_text(dt.datetime.now().strftime("%Y-%m-%d %H:%M"))}; '
        f"{len(runs)} run(s).</p>",
        _runs_section(runs),
        *metric_sections,
        _reported_section(runs, tables),
        _folds_section(runs),
        *(_confusion_section(runs, split) for split in splits),
        *(_curves_section(runs, split) for split in splits),
        _calibration_section(runs, "val"),
        _training_section(runs),
        _config_section(runs),
        _shared_config(runs),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_text(name)} – study report</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head>'
        f"<body>{''.join(part for part in body if part)}{FIT_PLOTS_SCRIPT}</body></html>\n"
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
