"""What the Train page says about runs, as plain text and table rows.

Pure functions over what a run directory holds (status.json, config.json, metrics.jsonl rows), so the
page only draws and every sentence is tested here: a progress line with batch, speed and time left, the
weights a run really started from, and a runs table whose columns mean the same thing in every row.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xraycore import models
from xraycore.runs import directory as runs
from xraycore.training.durations import format_duration

RUNNING = runs.RUNNING
STOPPING, VALIDATING, SCORING = "stopping", "validating", "scoring"


def status_line(status: dict[str, Any]) -> str:
    """'running · epoch 2 of 10 · batch 12 of 40 · 35.2 images/s · about 3 min left' while training; the
    state, epochs done and message afterwards. Before a run's first progress report: 'starting'."""
    state = status.get("state") or runs.UNKNOWN_STATE
    epochs, done = status.get("epochs"), int(status.get("epoch") or 0)
    progress = status.get("progress") or {}
    parts = [state]
    if state == RUNNING and progress:
        phase = progress.get("phase")
        if phase == STOPPING:
            parts[0] = "stopping"
        parts.append(f"epoch {progress.get('epoch', done + 1)} of {epochs or '?'}")
        if progress.get("batch") and progress.get("batches"):
            parts.append(f"batch {progress['batch']} of {progress['batches']}")
        if isinstance(progress.get("images_per_second"), (int, float)):
            parts.append(f"{progress['images_per_second']:.1f} images/s")
        if phase in (VALIDATING, SCORING):
            parts.append("validating" if phase == VALIDATING else "scoring the kept epoch")
        if phase not in (STOPPING, SCORING) and isinstance(progress.get("seconds_left"), (int, float)):
            parts.append(f"{format_duration(progress['seconds_left'])} left")
    elif state == RUNNING:
        parts.append(f"epoch {done + 1} of {epochs}" if epochs else "starting")
    elif epochs:
        parts.append(f"{done} of {epochs} epochs done")
    if status.get("message") and (state != RUNNING or progress.get("phase") == STOPPING):
        parts.append(str(status["message"]))
    return " · ".join(parts)


def progress_fraction(status: dict[str, Any]) -> float | None:
    """Share of the run done (completed epochs plus the current one's batches), for a progress bar."""
    epochs = status.get("epochs")
    if not epochs:
        return None
    done = float(status.get("epoch") or 0)
    progress = status.get("progress") or {}
    if status.get("state") == RUNNING and progress.get("batches") and progress.get("epoch") == done + 1:
        done += min(1.0, progress.get("batch", 0) / progress["batches"])
    return max(0.0, min(1.0, done / epochs))


def weights_note(config: dict[str, Any]) -> tuple[str, bool]:
    """(sentence, fell back): what a run started from, and whether that is less than what was asked for
    (ImageNet requested, random weights used), which the page must show as a warning."""
    source = config.get("weights_source")
    if not source:
        return "Weights: not recorded yet (the run is still loading its data).", False
    requested = (config.get("train") or {}).get("pretrained")
    fell_back = models.weights_fell_back(source)
    asked = f" (asked for: {requested})" if fell_back and requested else ""
    return f"Weights: **{models.weights_label(source)}**{asked}. {source}", fell_back


def local_time(iso: str | None, timezone: str | None = None) -> str | None:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM' in ``timezone`` (the browser's), else the server's zone."""
    if not iso:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def took(status: dict[str, Any]) -> str | None:
    """How long a run that ended took ('12 min'), from its recorded start and end."""
    try:
        started = dt.datetime.fromisoformat(str(status["started"]))
        ended = dt.datetime.fromisoformat(str(status["ended"]))
    except (KeyError, ValueError):
        return None
    return format_duration((ended - started).total_seconds()).removeprefix("about ")


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch whose weights the run kept: the last one flagged best (None before the first epoch)."""
    flagged = [row for row in rows if row.get("best")]
    return flagged[-1] if flagged else None


def runs_table_row(run_id: str, config: dict[str, Any], status: dict[str, Any], rows: Sequence[dict[str, Any]],
                   timezone: str | None = None) -> dict[str, Any]:
    """One row of the runs table: the same validation metrics in every row (AUROC and accuracy of the kept
    epoch, whichever metric chose it), readable local times."""
    best = best_row(rows)
    planned = (config.get("train") or {}).get("epochs")

    def metric(name: str) -> float | None:
        value = best.get(name) if best else None
        return round(float(value), 3) if isinstance(value, (int, float)) else None

    return {
        "id": run_id, "state": status.get("state"), "backbone": config.get("backbone"),
        "weights": models.weights_label(config.get("weights_source")), "study": config.get("study"),
        "epochs": f"{len(rows)} of {planned}" if planned else len(rows),
        "val AUROC": metric("val_auroc"), "val accuracy": metric("val_accuracy"),
        "kept epoch": best.get("epoch") if best else None,
        "chosen by": (config.get("train") or {}).get("monitor") or status.get("best_metric"),
        "started": local_time(status.get("started"), timezone), "took": took(status),
    }


def runs_table(found: Sequence[runs.Run], timezone: str | None = None) -> list[dict[str, Any]]:
    """:func:`runs_table_row` for every run."""
    return [runs_table_row(run.id, run.config, run.status(), run.metrics(), timezone) for run in found]
