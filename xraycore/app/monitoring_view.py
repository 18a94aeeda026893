"""What the pages show of monitoring: recording the films Diagnose and the Worklist score, the admin's alert
banner on Diagnose, and the Monitor page's report, each one call for a thin page.

Recording never hides a failure: a store that refuses gives the sentence the page shows beside the answer.
The banner's report is cached for a minute per model, so Diagnose does not read the store on every rerun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import streamlit as st

from xraycore.access import policy as access
from xraycore.inference.prediction import Prediction
from xraycore.inference.predictor import Predictor
from xraycore.monitoring.recording import Recorder
from xraycore.monitoring.report import MonitorReport, monitor
from xraycore.store.database import StoreUnavailable

BANNER_TTL_S = 60


def recorder(predictor: Predictor, source: str) -> Recorder:
    """A recorder for films ``predictor`` scores from ``source`` (upload or pacs), into the configured store."""
    return Recorder(source, predictor.audit_model)


def record_uploads(predictor: Predictor, predictions: Sequence[Prediction]) -> str | None:
    """Record uploaded films Diagnose scored; the sentence to show when they were not recorded, else None."""
    return recorder(predictor, "upload").record(list(predictions)).problem


def report(model_path: Path, window: str | int = "week", since=None) -> MonitorReport | str:  # noqa: ANN001
    """The monitor's report for ``model_path``, or the one sentence saying why there is none."""
    try:
        return monitor(model_path, window=window, since=since)
    except (StoreUnavailable, ValueError) as error:
        return str(error)


@st.cache_data(ttl=BANNER_TTL_S, show_spinner=False)
def _active_alerts(model_path: str, version: float) -> list[str]:
    found = report(Path(model_path))
    return [] if isinstance(found, str) else found.alerts


def alert_banner(model_path: Path, identity: access.Identity | None, version: float) -> None:
    """Admins see the active monitoring alerts on Diagnose (readers do not: the Monitor page is the place)."""
    if identity is None or not access.can(identity, access.CHANGE_OPERATING_POINT):
        return
    for sentence in _active_alerts(str(model_path), version):
        st.warning(f"**Monitoring alert.** {sentence} See the Monitor page.", icon=":material/monitor_heart:")
