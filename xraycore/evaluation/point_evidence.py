"""What a model's figures rest on, the ACTIVE operating point's first: Diagnose's sidebar and Compare's table.

:func:`external.evidence` lists the internal validation (at the internal point) and the saved external
evaluations. When the active point is a site calibration (``kermany-site`` for the bundled model) the calls
every reader gets are made at *that* point, so its figures lead: measured on the site's own sample and
cross-fitted (fitted on part of the sample, measured on the rest: :func:`operating.cross_fitted_rates`), as
recorded in ``operating_points.json``. Then the rest, in :func:`external.evidence`'s order. Reads
``clinical/operating_points.py``'s functions only; no scikit-learn, so a serving install shows it too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xraycore.clinical import operating_points as operating
from xraycore.evaluation.external import evidence


def active_point_row(model_dir: str | Path) -> dict[str, Any] | None:
    """The active point's figures as an evidence row, when it is a site calibration with cross-fitted figures."""
    point = operating.get(model_dir)
    crossed, report = point.get("site_cross_fitted"), point.get("site_report") or {}
    if point["name"] == operating.INTERNAL or not crossed:
        return None
    return {"data": f"active point {point['name']}: {point.get('source') or 'site calibration'} (cross-fitted)",
            "kind": "active", "n": point.get("n"), "prevalence": None,
            "auroc": report.get("auroc", crossed.get("auroc")),  # a site profile's is cross-fitted too
            "accuracy": crossed.get("accuracy"), "sensitivity": crossed.get("sensitivity"),
            "specificity": crossed.get("specificity"), "operating_point": point["name"],
            "date": (point.get("saved") or "")[:10] or None}


def ordered_evidence(model_dir: str | Path) -> list[dict[str, Any]]:
    """:func:`external.evidence`'s rows behind the active point's: the figures of the point in use first, each
    row marked ``active`` when it was measured at the active point."""
    try:
        active_name = operating.active_name(model_dir)
        leading = active_point_row(model_dir)
    except (ValueError, OSError):  # an unreadable operating_points.json: the recorded figures still show
        active_name, leading = operating.INTERNAL, None
    rows = [{**row, "active": row.get("operating_point") == active_name} for row in evidence(model_dir)]
    rows.sort(key=lambda row: not row["active"])  # stable: the active point's rows first, the rest in order
    return ([{**leading, "active": True}] if leading else []) + rows
