"""Rolling back: which point answered before the last change of the active one, and making it active again.

The history in ``operating_points.json`` records each change with the point in use before it (``old``); the point
in use after an entry is the next entry's ``old`` (or, for the last entry, the active one now). A change of the
active point is an entry whose ``old`` differs from what was in use after it: a save that did not activate is
not one. Rolling back activates the point in use before the latest such change, through
:func:`operating_points.activate`: admin only, audited, refused like any activation. Apart from
:mod:`operating_points` so that module keeps to storing points; torch-free.
"""
from __future__ import annotations

from pathlib import Path

from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating


def previous_active(model_dir: str | Path) -> str | None:
    """The point in use before the latest change of the active point, if it still exists; else None."""
    state = operating.load(model_dir)
    history = state["history"]
    after = [entry.get("old", {}).get("name") for entry in history[1:]] + [state["active"]]
    for entry, in_use_after in zip(reversed(history), reversed(after)):
        before = (entry.get("old") or {}).get("name")
        if before is not None and before != in_use_after:
            return before if before in state["points"] else None
    return None


def roll_back(model_dir: str | Path, *, identity: access.Identity | None = None) -> str:
    """Make the point in use before the latest change active again (admin only; one audit line). Returns its name."""
    previous = previous_active(model_dir)
    if previous is None:
        access.require(access.acting(identity, "operating_point.activate"), access.CHANGE_OPERATING_POINT,
                       "operating_point.activate")
        raise ValueError("There is no earlier point to roll back to.")
    operating.activate(model_dir, previous, identity=identity)
    return previous
