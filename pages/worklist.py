"""Worklist: today's chest studies from a PACS, scored and sorted, most probable first.

Connect, list the studies (no patient attribute is asked for), score every frontal chest image, open one
in Diagnose, send the results (SR and overlay) back into their studies. The work is in
``xraycore.pacs`` and ``xraycore.worklist``; this page holds widgets only.
"""
from __future__ import annotations

import datetime as dt

import streamlit as st

from xraycore import access, catalog, pacs, provenance, webauth, worklist
from xraycore.intended_use import SkipNonFrontal
from xraycore.predict import Predictor
from xraycore.runs import ModelDirectoryError

STUDIES_KEY = "worklist_studies"
ENTRIES_KEY = "worklist_entries"
NOTICES_KEY = "worklist_notices"
OPEN_KEY = "worklist_open"  # name -> image bytes (in memory) that Diagnose adds to its sources


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def load_predictor(model_path: str, version: float) -> Predictor:
    return Predictor(model_path)


@st.cache_resource(max_entries=4, show_spinner=False)
def model_provenance(model_path: str, version: float) -> provenance.ModelProvenance:
    return provenance.of_model(model_path)


identity = webauth.require(access.PACS_QUERY)
st.title("Worklist")
st.caption("Chest studies from your PACS, scored and sorted: most probable first, out-of-domain and failed images "
           "flagged. A decision aid, not for diagnostic use: the radiologist decides.")

model_path = catalog.chosen_model_dir(st.session_state.get("model_path"))
if model_path is None:
    st.info("No model is available yet. Train one on the Train page (or install the bundled model in models/default).")
    st.stop()
try:
    predictor = load_predictor(str(model_path), catalog.model_version(model_path))
except ModelDirectoryError as error:
    st.error(str(error))
    st.stop()

with st.form("pacs_connection"):
    left, middle, right = st.columns([3, 1, 2])
    host = left.text_input("PACS host", key="pacs_host", placeholder="pacs.hospital.local")
    port = middle.number_input("Port", 1, 65535, 104, key="pacs_port")
    called = right.text_input("PACS AE title", key="pacs_called_aet", placeholder="ORTHANC")
    left, middle, right = st.columns([3, 1, 2])
    since = left.date_input("Studies since", dt.date.today(), key="pacs_since")
    calling = middle.text_input("Our AE title", "XRAY", key="pacs_calling_aet")
    modalities = right.multiselect("Modalities", ["DX", "CR"], ["DX", "CR"], key="pacs_modalities")
    find = st.form_submit_button("Find studies", icon=":material/search:")


def _day(date: str) -> str:
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else date


def node() -> pacs.Node | None:
    """The node the form describes, or None after saying what is missing."""
    if not host.strip() or not called.strip():
        st.warning("Enter the PACS host and its AE title.")
        return None
    try:
        return pacs.Node(host.strip(), int(port), called.strip(), calling.strip() or "XRAY")
    except ValueError as error:
        st.error(str(error))
        return None


if find and (target := node()) is not None:
    try:
        st.session_state[STUDIES_KEY] = pacs.find_studies(target, since.strftime("%Y%m%d"), tuple(modalities),
                                                              identity=identity)
    except pacs.PacsError as error:
        st.error(str(error))
        st.session_state.pop(STUDIES_KEY, None)
    st.session_state.pop(ENTRIES_KEY, None)
    st.session_state.pop(NOTICES_KEY, None)

studies: list[pacs.Study] = st.session_state.get(STUDIES_KEY, [])
if STUDIES_KEY not in st.session_state:
    st.info("Connect to the PACS to list its chest studies.")
    st.stop()
if not studies:
    st.info("No chest study found since that date.")
    st.stop()

st.subheader(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}")
st.dataframe([{"study": s.index, "date": _day(s.date), "time": ":".join([s.time[:2], s.time[2:4]]) if len(s.time) >= 4
               else "", "modalities": ", ".join(s.modalities),
               "images": s.images, "description": s.description} for s in studies], hide_index=True, width="stretch")

if st.button("Score these studies", type="primary", key="worklist_score", icon=":material/radiology:"):
    if (target := node()) is not None:
        progress = st.progress(0.0, text="Fetching and scoring…")
        expected = max(1, sum(s.images or 0 for s in studies))
        skip = SkipNonFrontal()
        items = pacs.scan(target, predictor, studies, modalities=tuple(modalities), skip=skip, identity=identity)
        entries, notices = worklist.collect(items, on_item=lambda n: progress.progress(
            min(1.0, n / expected), text=f"Scored {n} image(s)"))
        progress.empty()
        if skip.skipped:
            notices.append(f"skipped {len(skip.skipped)} non-frontal image(s)")
        st.session_state[ENTRIES_KEY] = worklist.ordered(entries)
        st.session_state[NOTICES_KEY] = notices

entries: list[worklist.Entry] = st.session_state.get(ENTRIES_KEY, [])
if ENTRIES_KEY not in st.session_state:
    st.stop()
threshold = predictor.threshold
for notice in st.session_state.get(NOTICES_KEY, []):
    st.caption(notice)
if not entries:
    st.info("No chest image was scored.")
    st.stop()

st.subheader("Triage")
st.dataframe(worklist.rows(entries, threshold), hide_index=True, width="stretch",
             column_config={"threshold": st.column_config.NumberColumn(format="%.3f")})

left, right = st.columns(2)
with left:
    chosen = st.selectbox("Image", [entry.name for entry in entries], key="worklist_pick")
    if st.button("Open in Diagnose", key="worklist_open_button", icon=":material/open_in_new:"):
        if (target := node()) is not None:
            entry = next(e for e in entries if e.name == chosen)
            try:
                st.session_state[OPEN_KEY] = {entry.name: worklist.fetch(target, entry, identity)}
            except pacs.PacsError as error:
                st.error(str(error))
            else:
                st.switch_page("pages/diagnose.py")
with right:
    st.caption("Store a structured report and the overlay of every scored image in its study.")
    can_store = access.can(identity, access.PACS_STORE)
    if st.button("Send results to the PACS", key="worklist_send", icon=":material/upload:", disabled=not can_store,
                 help=None if can_store else "Sending results back needs the admin role."):
        if (target := node()) is not None:
            model = model_provenance(str(model_path), catalog.model_version(model_path))
            sent, problems = worklist.send_back(target, entries, threshold, predictor.operating_point, model,
                                                identity=identity)
            if sent:
                st.success(f"Results stored for {sent} image(s).")
            for problem in problems:
                st.error(problem)
