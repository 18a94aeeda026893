"""Worklist: today's chest studies from a PACS, scored and sorted, most probable first.

Pick a configured PACS node (never a typed host: administrators keep the list, here or in
``.streamlit/pacs_nodes.toml``), list the studies (no patient attribute is asked for), score every frontal
chest image, open one in Diagnose, send the results (SR and overlay) back into their studies. The work is
in ``xraycore.reading_room.pacs``, ``.pacs_nodes``, ``.pacs_scan`` and ``.worklist``; this page holds widgets only.
"""
from __future__ import annotations

import datetime as dt

import streamlit as st

from xraycore.access import policy as access
from xraycore.app import catalog
from xraycore.app import model_cache
from xraycore.app import read_form
from xraycore.app import monitoring_view
from xraycore.reading_room import pacs
from xraycore.reading_room import pacs_scan
from xraycore.reading_room import pacs_nodes
from xraycore.app import auth as webauth
from xraycore.reading_room import worklist
from xraycore.io.intended_use import SkipNonFrontal
from xraycore.common.model_directory import ModelDirectoryError

STUDIES_KEY = "worklist_studies"
ENTRIES_KEY = "worklist_entries"
NOTICES_KEY = "worklist_notices"
OPEN_KEY = "worklist_open"  # name -> image bytes (in memory) that Diagnose adds to its sources


identity = webauth.require(access.PACS_QUERY)
st.title("Worklist")
st.caption("Chest studies from your PACS, scored and sorted: most probable first, out-of-domain and failed images "
           "flagged. A decision aid, not for diagnostic use: the radiologist decides.")

model_path = catalog.chosen_model_dir(st.session_state.get("model_path"))
if model_path is None:
    st.info("No model is available yet. Train one on the Train page (or install the bundled model in models/default).")
    st.stop()
try:
    predictor = model_cache.load_predictor(model_path)
except ModelDirectoryError as error:
    st.error(str(error))
    st.stop()



def node_settings(nodes: dict[str, pacs.Node]) -> None:
    """Administrators add or remove a configured node (xraycore.reading_room.pacs_nodes checks the role and audits)."""
    with st.expander("PACS nodes (administrators)", icon=":material/settings:", expanded=not nodes):
        with st.form("pacs_node_add", clear_on_submit=True):
            left, middle, right = st.columns([2, 3, 1])
            name = left.text_input("Name", key="pacs_new_name", placeholder="main")
            host = middle.text_input("Host", key="pacs_new_host", placeholder="pacs.hospital.local")
            port = right.number_input("Port", 1, 65535, 104, key="pacs_new_port")
            left, right = st.columns(2)
            called = left.text_input("PACS AE title", key="pacs_new_called", placeholder="PACS")
            calling = right.text_input("Our AE title", "XRAY", key="pacs_new_calling")
            if st.form_submit_button("Add the node", icon=":material/add:"):
                try:
                    pacs_nodes.add_node(name.strip(), pacs.Node(host.strip(), int(port), called.strip(),
                                                                calling.strip() or "XRAY"), identity=identity)
                except (ValueError, access.AccessDenied) as error:
                    st.error(str(error))
                else:
                    st.rerun()
        if nodes:
            left, right = st.columns([3, 1], vertical_alignment="bottom")
            gone = left.selectbox("Configured node", list(nodes), key="pacs_remove_pick")
            if right.button("Remove", key="pacs_remove", icon=":material/delete:"):
                try:
                    pacs_nodes.remove_node(gone, identity=identity)
                except (ValueError, access.AccessDenied) as error:
                    st.error(str(error))
                else:
                    st.rerun()


try:
    nodes = pacs_nodes.load_nodes()
except ValueError as error:  # a broken file: no node, and why
    st.error(str(error))
    nodes = {}
if access.can(identity, access.PACS_SETTINGS):
    node_settings(nodes)
if not nodes:
    st.info("No PACS node is configured yet. "
            + ("Add one under “PACS nodes” above." if access.can(identity, access.PACS_SETTINGS)
               else "Ask an administrator to add one."))
    st.stop()

with st.form("pacs_connection"):
    left, middle, right = st.columns([3, 1, 2])
    node_name = left.selectbox("PACS", list(nodes), format_func=lambda name: f"{name}: {nodes[name]}", key="pacs_node")
    since = middle.date_input("Studies since", dt.date.today(), key="pacs_since")
    modalities = right.multiselect("Modalities", ["DX", "CR"], ["DX", "CR"], key="pacs_modalities")
    find = st.form_submit_button("Find studies", icon=":material/search:")


def node() -> pacs.Node | None:
    """The configured node the form names, or None after saying it is gone."""
    if node_name not in nodes:
        st.warning("That PACS node is no longer configured: pick another.")
        return None
    return nodes[node_name]


if find and (target := node()) is not None:
    try:
        st.session_state[STUDIES_KEY] = pacs.find_studies(target, since.strftime("%Y%m%d"), tuple(modalities),
                                                              identity=identity)
    except (pacs.PacsError, access.AccessDenied) as error:
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
st.dataframe(worklist.study_rows(studies), hide_index=True, width="stretch")

if st.button("Score these studies", type="primary", key="worklist_score", icon=":material/radiology:"):
    if (target := node()) is not None:
        progress = st.progress(0.0, text="Fetching and scoring…")
        expected = max(1, sum(s.images or 0 for s in studies))
        skip = SkipNonFrontal()
        items = pacs_scan.scan(target, predictor, studies, modalities=tuple(modalities), skip=skip, identity=identity,
                               recorder=monitoring_view.recorder(predictor, "pacs"))
        try:
            entries, notices = worklist.collect(items, on_item=lambda n: progress.progress(
                min(1.0, n / expected), text=f"Scored {n} image(s)"))
        except access.AccessDenied as error:
            st.error(str(error))
            st.stop()
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
st.dataframe(worklist.rows(entries, threshold), hide_index=True, width="stretch", placeholder="",
             column_config={"threshold": st.column_config.NumberColumn(format="%.3f")})

left, right = st.columns(2)
with left:
    chosen = st.selectbox("Image", [entry.name for entry in entries], key="worklist_pick")
    picked = next(entry for entry in entries if entry.name == chosen)
    read_form.read_controls(f"worklist:{picked.sop_uid}", picked.result, picked.result.call(threshold), model_path,
                            identity)
    if st.button("Open in Diagnose", key="worklist_open_button", icon=":material/open_in_new:"):
        if (target := node()) is not None:
            entry = next(e for e in entries if e.name == chosen)
            try:
                st.session_state[OPEN_KEY] = {entry.name: worklist.fetch(target, entry, identity)}
            except (pacs.PacsError, access.AccessDenied) as error:
                st.error(str(error))
            else:
                st.switch_page("pages/diagnose.py")
with right:
    st.caption("Store a structured report and the overlay of every scored image in its study.")
    can_store = access.can(identity, access.PACS_STORE)
    if st.button("Send results to the PACS", key="worklist_send", icon=":material/upload:", disabled=not can_store,
                 help=None if can_store else "Sending results back needs the admin role."):
        if (target := node()) is not None:
            model = model_cache.model_provenance(model_path)
            sent = worklist.send_back(target, entries, threshold, predictor.operating_point, model, identity=identity)
            if sent.stored:
                st.success(f"Results stored for {sent.stored} image(s).")
            if sent.already:
                st.info(f"The PACS already holds the results of {sent.already} image(s) from this model version and "
                        "operating point: not sent again.")
            for problem in sent.problems:
                st.error(problem)
