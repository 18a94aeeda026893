"""The Compare page's tables as rows: what to expect on new patients, across folds, reported, configured.

The page draws; the numbers and how they are rounded and labelled are decided here, so the page holds
widgets only and every table can be tested without Streamlit. Each function takes the runs chosen and
returns one dict per row, in the order the page shows them.
"""
from __future__ import annotations

from typing import Any, Sequence

from xraycore.evaluation import comparison, shortcuts
from xraycore.evaluation.point_evidence import ordered_evidence
from xraycore.runs.directory import Run
from xraycore.training import tracking

EXPECTATION_FIGURES = ("auroc", "accuracy", "sensitivity", "specificity")


def expectation_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Internal validation beside external evaluations, per model, the point in use first (three decimals)."""
    return [{"model": comparison.run_label(run), "in use": "yes" if row["active"] else "",
             **{key: row[key] for key in ("data", "n", "operating_point", "date")},
             **{key: None if row[key] is None else round(row[key], 3) for key in EXPECTATION_FIGURES}}
            for run in runs for row in ordered_evidence(run.path)]


def has_external(rows: Sequence[dict[str, Any]]) -> bool:
    """True when any expectation row comes from an external evaluation."""
    return any(str(row["data"]).startswith("external") for row in rows)


def fold_rows(runs: Sequence[Run], split: str = "val") -> list[dict[str, Any]]:
    """k-fold cross-validation: each metric's mean, standard deviation and "mean ± std" across the folds."""
    summary = comparison.fold_summary(list(runs), split)
    return [{"metric": key, "mean": value["mean"], "std": value["std"],
             "mean ± std": f"{value['mean']:.3f} ± {value['std']:.3f}"} for key, value in summary.items()]


def reported_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """What the source study reported for each run's preset and backbone; runs it reported nothing for are left out."""
    reported = {comparison.run_label(run): comparison.reported_numbers(run) for run in runs}
    return [{"run": label, **numbers} for label, numbers in reported.items() if numbers]


def config_difference_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """One row per training setting that differs: the setting, then each run's value as text."""
    differences = comparison.config_differences(list(runs))
    return [{"setting": key, **{label: str(value) for label, value in values.items()}}
            for key, values in differences.items()]


def tracking_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Each run's state (pruned when a sweep pruned it) and its MLflow run id, to find it in the lab's MLflow."""
    return [{"run": run.id, "state": "pruned" if run.status().get("pruned") else run.status().get("state"),
             "MLflow run id": tracking.run_id_of(run) or "not tracked"} for run in runs]


def shortcut_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Where each model's heat maps look: one row per stored shortcut report (``python -m xraycore shortcuts
    --save NAME``), the main figures with their 95% CIs and whether every limit is met."""
    return [row for run in runs for row in shortcuts.compare_rows(comparison.run_label(run), run.path)]
