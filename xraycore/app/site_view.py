"""The Site page's tables and its one long action: the reads so far in rows, the site profiles and points with
their cross-fitted figures before and after, and adapting with a progress bar.

Widgets and shapes only: the numbers are :mod:`xraycore.clinical.read_stats`' and the adaptation's
(:mod:`xraycore.evaluation.site_adaptation`), the checks of who may and the audit are inside those calls.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.clinical.read_export import describe_export, export_reads
from xraycore.common.timestamps import utc_timestamp
from xraycore.runs.directory import runs_root
from xraycore.store.database import Store

FIGURES = ("auroc", "accuracy", "sensitivity", "specificity")


def reader_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per reader: reads, per class, agreement with the model."""
    return [{"reader": reader, "reads": found["reads"],
             **{f"read {label}": n for label, n in sorted(found["per_class"].items())},
             "agree with the model": _share(found["ai_agreement_rate"])}
            for reader, found in stats["per_reader"].items()]


def kappa_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pair of readers who read the same films: how many, and Cohen's kappa."""
    return [{"readers": " & ".join(pair["readers"]), "films read by both": pair["films"],
             "Cohen's kappa": "n/a" if pair["kappa"] is None else f"{pair['kappa']:.3f}"} for pair in stats["kappa"]]


def profile_rows(profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The site profiles, newest first: who made it, on how many films, and the cross-fitted figures before → after."""
    rows = []
    for profile in profiles:
        before, after = profile.get("before") or {}, profile.get("after") or {}
        rows.append({"profile": profile["name"], "active": "yes" if profile.get("active") else "",
                     "method": profile.get("method"), "recipe": recipe_text(profile),
                     "made": (profile.get("created") or "")[:16],
                     "by": profile.get("created_by"),
                     "films (negative / positive)": f"{profile.get('n_negative')} / {profile.get('n_positive')}",
                     **{f"{key} (before → after)": f"{_share(before.get(key))} → {_share(after.get(key))}"
                        for key in FIGURES}})
    return rows


def recipe_text(profile: dict[str, Any]) -> str:
    """How the profile trained, in words: epochs and the shortcut remedies (profiles made before them have none)."""
    parts = [f"{profile['epochs']} epochs"] if profile.get("epochs") else []
    if profile.get("band_penalty"):
        parts.append(f"band penalty {profile['band_penalty']:g}")
    if profile.get("lung_penalty"):
        parts.append(f"lung penalty {profile['lung_penalty']:g}")
    if profile.get("erasing_views"):
        parts.append("erasing views")
    return ", ".join(parts)


def history_rows(model_dir: Path) -> list[dict[str, Any]]:
    """Every change of the model's points, newest first."""
    return [{"time": entry.get("time", "")[:19], "who": entry.get("user"), "action": entry.get("action"),
             "point": entry.get("name"), "in use before": (entry.get("old") or {}).get("name")}
            for entry in reversed(operating.load(model_dir)["history"])]


def export_for_learning(store: Store) -> tuple[Path, str]:
    """The reads so far as class folders inside the runs folder (a data root), and the sentence saying what went in."""
    folder = runs_root() / f".site-reads-{utc_timestamp().replace(':', '')}"
    counts = export_reads(store, folder)
    return folder, describe_export(counts, "the sample")


def adapt_with_progress(model_dir: Path, data_dir: Path, name: str, method: str, epochs: int | None,
                        identity: access.Identity) -> dict[str, Any]:
    """Adapt, drawing the stages on a progress bar; the stored point (ValueError / AccessDenied: one sentence)."""
    from xraycore.evaluation import site_adaptation  # torch: only when someone adapts

    bar = st.progress(0.0, text="Reading the site's films…")

    def tell(stage: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{stage}: {done} of {total}")

    try:
        return site_adaptation.adapt_folder(model_dir, data_dir, name, method=method, epochs=epochs,
                                            identity=identity, progress=tell)
    finally:
        bar.empty()


def _share(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
