"""Monitor: is the model still working? Drift, expected and realised performance and alerts over the films the
app, the Worklist and `predict --record` scored (admins and researchers; `python -m xraycore monitor` prints the
same windows)."""
from __future__ import annotations

import streamlit as st

from xraycore.access import policy as access
from xraycore.app import auth as webauth
from xraycore.app import catalog
from xraycore.app import monitor_charts, monitoring_view
from xraycore.monitoring import rules
from xraycore.monitoring.report import NO_FILMS
from xraycore.monitoring.windows import parse_window

identity = webauth.require(access.MONITOR)
st.title("Monitor")
st.caption("Expected accuracy is estimated from the calibrated probabilities (CBPE): it assumes the calibration "
           "still holds and there is no concept shift. Realised figures come from radiologists' reads.")
model_path = catalog.chosen_model_dir(st.session_state.get("model_path"), identity)
if model_path is None:
    st.info("No model is available yet.")
    st.stop()
window = st.selectbox("Window", ["week", "day", "100", "500"], key="monitor_window",
                      help="Calendar weeks or days (UTC), or that many consecutive scored films.")
found = monitoring_view.report(model_path, window=parse_window(window))
if isinstance(found, str):
    st.error(found)
    st.stop()
if found.empty:
    st.info(NO_FILMS)
    st.stop()
for sentence in found.alerts:
    st.error(sentence, icon=":material/monitor_heart:")
if not found.alerts and (watching := rules.watch(found.windows[-1], alerted=False)):
    st.warning(watching, icon=":material/visibility:")
elif not found.alerts:
    st.success("No alert: the last windows look like the reference.")
st.caption(f"{found.films} films scored at operating point **{found.operating_point}**; reference: {found.reference}.")
for title, figure in monitor_charts.charts(found.windows):
    st.subheader(title)
    st.plotly_chart(figure, key=f"monitor_{title}")
st.dataframe(found.windows, hide_index=True)
