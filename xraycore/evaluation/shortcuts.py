"""Does a model look at the lungs? The shortcut report's measures, limits and records.

Issue 33.

Chest X-ray classifiers learn shortcuts: markers, text, collimator edges, the look of one unit (DeGrave et
al., Nature Machine Intelligence 2021), and saliency maps show them. This module holds what is measured on
each film's heat map and probes, how a folder's films become figures with bootstrap 95% CIs, the documented
limits each figure passes or fails, and the report a model directory keeps (``shortcuts/NAME.json``, beside,
not inside, ``evaluations/``: those are accuracy records). Scoring the films is :mod:`shortcut_probes`'s job;
this module is numpy only, so every number can be checked on crafted heat maps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xraycore.common.files import atomic_write_json, read_json_file
from xraycore.explain.lung_attention import outside_the_lungs
from xraycore.explain.lung_fields import lung_boxes
from xraycore.metrics.bootstrap import bootstrap_ci
from xraycore.metrics.regions import BAND_FRACTION, CORNER_FRACTION, band_mask, corner_mask  # noqa: F401 (re-exported)

SHORTCUTS_DIR = "shortcuts"
N_RESAMPLES = 1000

# Each figure: what it is, the limit, and which way passes. Band mass, peak in band, the lifts and the pointing
# game are issue 33's targets (its pointing game and box lift are on expert lung boxes; here on the boxes of the
# lung-field estimate, which cover less of the film); the probe limits are ours: blanking the lungs should lower
# P(pneumonia) on most pneumonia films, and blanking where no anatomy is should change almost no call.
LIMITS: dict[str, tuple[str, str, float]] = {
    "band_mass": ("CAM mass in the outer 10% band (mean over films)", "<=", 0.15),
    "peak_in_band": ("films whose hottest pixel is in the outer band", "<=", 0.03),
    "lung_mass": ("CAM mass on the lung-field estimate (mean)", "report", float("nan")),
    "lung_area": ("image share of the lung-field estimate (mean)", "report", float("nan")),
    "mostly_outside": ("films whose heat map lies mostly outside the lung fields (Diagnose warns)", "report",
                       float("nan")),
    "lung_lift": ("lung mass / lung area (1: no better than a uniform map)", ">=", 1.5),
    "pointing_game": ("films whose hottest pixel is in a lung box (each side's box around its lung field)", ">=",
                      0.85),
    "box_lift": ("CAM mass in the lung boxes / their area", ">=", 1.5),
    "lungs_blanked_drop": ("mean fall of P(pneumonia), pneumonia films, lungs blanked", ">", 0.0),
    "lungs_blanked_share": ("pneumonia films whose P(pneumonia) falls, lungs blanked", ">=", 0.75),
    "band_blanked_flips": ("calls that flip, outer band blanked", "<=", 0.05),
    "corners_blanked_flips": ("calls that flip, four corners blanked", "<=", 0.05),
}


def heat_measures(heatmap: np.ndarray, lungs: np.ndarray | None) -> dict[str, float]:
    """One film's heat-map figures: band mass, peak in band (0/1), and (lungs found) lung mass and lung area, and
    on the boxes around each lung field (:func:`lung_boxes`, the region of expert lung boxes) the pointing game
    (hottest pixel inside, 0/1), box mass and box area.

    An empty map (the explained class has no positive evidence anywhere: a confident normal) gives NaN, so
    the film is left out of every heat-map figure and counted as such by the caller.

    ``lungs`` is the lung-field mask in the heat map's coordinates, or None when none was found (NaN then).
    """
    heat = np.maximum(np.asarray(heatmap, dtype=np.float64), 0)
    total = heat.sum()
    band = band_mask(heat.shape)
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    measures = {"band_mass": float(heat[band].sum() / total) if total > 0 else float("nan"),
                "peak_in_band": float(band[peak]) if total > 0 else float("nan"),
                **dict.fromkeys(("lung_mass", "lung_area", "pointing", "box_mass", "box_area"), float("nan"))}
    if lungs is not None and total > 0:
        boxes = lung_boxes(lungs)
        measures.update(lung_mass=float(heat[lungs].sum() / total), lung_area=float(lungs.mean()),
                        pointing=float(boxes[peak]), box_mass=float(heat[boxes].sum() / total),
                        box_area=float(boxes.mean()))
    return measures


def _mean(_: np.ndarray, values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _lift(_: np.ndarray, pairs: np.ndarray) -> float:
    """Ratio of means: the share of all the films' heat on the lungs over the share of image they cover."""
    return float(pairs[:, 0].mean() / pairs[:, 1].mean()) if pairs.size and pairs[:, 1].mean() > 0 else float("nan")


def _figure(name: str, truth: np.ndarray, values: np.ndarray, metric: Any = _mean) -> dict[str, Any]:
    """One figure with its bootstrap 95% CI (stratified by the film's class) and its verdict at the limit."""
    what, direction, limit = LIMITS[name]
    n = int(len(values))
    found = bootstrap_ci(truth, values, metric, n_resamples=N_RESAMPLES) if n else None
    value, low, high = found if found else (None, None, None)
    passed = None if value is None or direction == "report" else bool(
        {"<=": value <= limit, ">=": value >= limit, ">": value > limit}[direction])
    return {"what": what, "value": value, "ci95": None if value is None else [low, high], "n": n,
            "limit": None if direction == "report" else f"{direction} {limit:g}", "pass": passed}


def summarise(films: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Every figure over a folder's films, each with a bootstrap 95% CI and a pass/fail at its limit.

    Each film: ``label`` (1 pneumonia), the :func:`heat_measures`, and (from the probes, NaN where not run)
    ``p``, ``p_lungs``, ``p_band``, ``p_corners`` and the calls ``call``, ``call_band``, ``call_corners``.
    Films without lung fields leave the lung figures (NaN) and are counted by the caller.
    """
    column = {key: np.array([film.get(key, np.nan) for film in films], dtype=np.float64)
              for key in ("label", "band_mass", "peak_in_band", "lung_mass", "lung_area", "pointing", "box_mass",
                          "box_area", "p", "p_lungs", "p_band", "p_corners", "call", "call_band", "call_corners")}
    truth = column["label"].astype(int)
    figures = {name: _figure(name, truth[~np.isnan(column[name])], column[name][~np.isnan(column[name])])
               for name in ("band_mass", "peak_in_band")}
    with_lungs = ~np.isnan(column["lung_mass"])
    for name in ("lung_mass", "lung_area"):
        figures[name] = _figure(name, truth[with_lungs], column[name][with_lungs])
    warned = [outside_the_lungs(share, area) for share, area in zip(column["lung_mass"][with_lungs],
                                                                     column["lung_area"][with_lungs])]
    figures["mostly_outside"] = _figure("mostly_outside", truth[with_lungs], np.float64(warned))
    pairs = np.stack([column["lung_mass"], column["lung_area"]], axis=1)[with_lungs]
    figures["lung_lift"] = _figure("lung_lift", truth[with_lungs], pairs, _lift)
    boxed = with_lungs & ~np.isnan(column["pointing"])  # reports made before the boxes have no box figures
    if boxed.any():
        figures["pointing_game"] = _figure("pointing_game", truth[boxed], column["pointing"][boxed])
        box_pairs = np.stack([column["box_mass"], column["box_area"]], axis=1)[boxed]
        figures["box_lift"] = _figure("box_lift", truth[boxed], box_pairs, _lift)
    probed = (truth == 1) & ~np.isnan(column["p_lungs"]) & ~np.isnan(column["p"])
    drop = (column["p"] - column["p_lungs"])[probed]
    figures["lungs_blanked_drop"] = _figure("lungs_blanked_drop", truth[probed], drop)
    figures["lungs_blanked_share"] = _figure("lungs_blanked_share", truth[probed], np.float64(drop > 0))
    for name, key in (("band_blanked_flips", "call_band"), ("corners_blanked_flips", "call_corners")):
        kept = ~np.isnan(column[key]) & ~np.isnan(column["call"])
        figures[name] = _figure(name, truth[kept], np.float64(column[key][kept] != column["call"][kept]))
    return figures


def verdict(figures: dict[str, dict[str, Any]]) -> bool | None:
    """Passed: every figure with a limit passes; None when none could be measured."""
    judged = [figure["pass"] for figure in figures.values() if figure["pass"] is not None]
    return all(judged) if judged else None


def save_report(model_dir: str | Path, name: str, report: dict[str, Any]) -> Path:
    """Keep a shortcut report with the model: ``shortcuts/NAME.json`` (the card and Compare show it)."""
    from xraycore.clinical.operating_points import _check_name

    path = Path(model_dir) / SHORTCUTS_DIR / f"{_check_name(name)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**report, "name": name})
    return path


def list_reports(model_dir: str | Path) -> list[dict[str, Any]]:
    """Every shortcut report a model directory keeps, oldest first (damaged files are left out)."""
    folder = Path(model_dir) / SHORTCUTS_DIR
    records = [read_json_file(path, None) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return sorted((r for r in records if isinstance(r, dict) and "figures" in r), key=lambda r: r.get("date", ""))


def _shown(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("value") is None:
        return "–"
    low, high = figure["ci95"]
    return f"{figure['value']:.3f} ({low:.3f}–{high:.3f})"


def _verdict_word(figure: dict[str, Any] | None) -> str:
    return "–" if not figure or figure.get("pass") is None else "pass" if figure["pass"] else "FAIL"


def figure_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per figure of a report: what, value (95% CI), limit, verdict (the card's and the CLI's table)."""
    figures = report["figures"]
    order = [name for name in LIMITS if name in figures] + [name for name in figures if name not in LIMITS]
    return [{"figure": figure["what"], "value (95% CI)": _shown(figure), "n": str(figure.get("n", "–")),
             "limit": figure.get("limit") or "–", "verdict": _verdict_word(figure)}
            for figure in (figures[name] for name in order)]  # stored JSON sorts its keys: LIMITS' order


def card_section(model_dir: str | Path) -> list[str]:
    """The model card's section: every stored shortcut report as a table, or nothing when none is stored."""
    reports = list_reports(model_dir)
    if not reports:
        return []
    lines = ["## Where the heat map looks: shortcut reports",
             "Grad-CAM mass in the outer band and on an estimate of the lung fields (docs/heat-maps.md), and "
             "occlusion probes, each with a bootstrap 95% CI. Figures from the model's own data are in-domain "
             "estimates; films it never saw decide."]
    for report in reports:
        lines += ["", f"### {report['name']}: {report.get('data')} ({report.get('n')} films, "
                      f"{(report.get('date') or '')[:10]}; lung fields not found on {report.get('lungs_not_found')})",
                  "", "| figure | value (95% CI) | n | limit | verdict |", "|---|---|---|---|---|"]
        lines += [f"| {row['figure']} | {row['value (95% CI)']} | {row['n']} | {row['limit']} | {row['verdict']} |"
                  for row in figure_rows(report)]
    return lines


COMPARE_FIGURES = ("band_mass", "peak_in_band", "lung_lift", "pointing_game", "lungs_blanked_share",
                   "band_blanked_flips", "corners_blanked_flips")


def compare_rows(model_label: str, model_dir: str | Path) -> list[dict[str, Any]]:
    """The Compare page's rows for one model: one per stored shortcut report, the main figures and the verdict."""
    return [{"model": model_label, "report": report["name"], "data": report.get("data"), "n": report.get("n"),
             **{name: _shown(report["figures"].get(name)) for name in COMPARE_FIGURES},
             "all limits met": {True: "yes", False: "no", None: "–"}[report.get("passed")]}
            for report in list_reports(model_dir)]
