"""The reader's read of one scored film, on Diagnose and on the Worklist: one click for the common case, agree,
and a small form for the rest (the final read, what it rests on, whether the heat map was on the region).

Widgets only: recording, correcting, the checks of who may and the audit are :mod:`xraycore.clinical.site_reads`'
(through :func:`xraycore.inference.read_record.record_prediction_read`). The session remembers which read it
recorded for which film (by the film's key, never its name), so a rerun shows the read and offers to correct it
rather than recording it twice. A store that cannot be reached is said in one sentence, and the read is not lost
silently: the reader sees it was not recorded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from xraycore.access import policy as access
from xraycore.app import model_cache
from xraycore.clinical import site_reads
from xraycore.clinical.site_store import open_site_store
from xraycore.inference.display import DisplayResult
from xraycore.inference.read_record import record_prediction_read
from xraycore.store.database import StoreUnavailable
from xraycore.store.reads import ReadNotCurrent
from xraycore.store.schema import OTHER_FINDING, REFERENCES, UNCERTAIN

RECORDED_KEY = "recorded_reads"  # film key -> {"id": read number, "read": what was recorded}
READ_LABELS = {OTHER_FINDING: "other finding", UNCERTAIN: "uncertain"}
HEATMAP_CHOICES = {"not judged": None, "yes": True, "no": False}
NOT_RECORDED = "Your read was not recorded: "


def read_controls(key: str, result: DisplayResult, call: str | None, model_path: Path,
                  identity: access.Identity) -> None:
    """Under one result card: "Agree" (one click), or disagree / add details; once recorded, the read and
    "Correct"."""
    if not result.ok or result.not_assessed or result.film_sha256 is None or call is None:
        return
    if not access.can(identity, access.RECORD_READS):
        st.caption("Recording your read needs sign-in." if identity.via == access.ANONYMOUS else
                   "Your role does not record reads.")
        return
    show_read_error(result)
    recorded = st.session_state.setdefault(RECORDED_KEY, {})
    done = recorded.get(result.film_sha256)
    if done is not None:
        left, right = st.columns([3, 2], vertical_alignment="center")
        left.success(f"Your read (no. {done['id']}): **{_label(done['read'])}**", icon=":material/task_alt:")
        with right.popover("Correct your read", icon=":material/edit:"):
            _read_form(f"correct:{key}", result, call, model_path, identity, correcting=done["id"])
        return
    left, right = st.columns([2, 3], vertical_alignment="center")
    if left.button(f"Agree: {call}", key=f"agree:{key}", icon=":material/check:",
                   help="Record that your final read is the model's call."):
        _save(result, call, model_path, identity, read=call, reference=None, heatmap_on_region=None)
        st.rerun()
    with right.popover("Disagree or add details", icon=":material/rate_review:"):
        _read_form(f"details:{key}", result, call, model_path, identity)


def _read_form(key: str, result: DisplayResult, call: str, model_path: Path, identity: access.Identity,
               correcting: int | None = None) -> None:
    """Final read, reference and heat-map judgement; saved (or the correction saved) on submit."""
    choices = list(site_reads.read_choices(result.class_names))
    with st.form(key, border=False):
        read = st.radio("Your final read", choices, index=choices.index(call) if call in choices else 0,
                        format_func=_label, key=f"{key}:read")
        reference = st.selectbox("It rests on", [None, *REFERENCES], format_func=lambda r: r or "my reading alone",
                                 key=f"{key}:reference")
        heatmap = st.radio("Was the heat map on the relevant region?", list(HEATMAP_CHOICES), horizontal=True,
                           key=f"{key}:heatmap")
        if st.form_submit_button("Save the correction" if correcting else "Save my read", type="primary"):
            _save(result, call, model_path, identity, read=read, reference=reference,
                  heatmap_on_region=HEATMAP_CHOICES[heatmap], correcting=correcting)
            st.rerun()


def _save(result: DisplayResult, call: str, model_path: Path, identity: access.Identity, *, read: str,
          reference: str | None, heatmap_on_region: bool | None, correcting: int | None = None) -> None:
    """Record (or correct) the read; remember it for this film, or say in one sentence why it was not recorded."""
    try:
        store = open_site_store()
        if correcting is None:
            read_id = record_prediction_read(store, result, model_cache.model_provenance(model_path), read, identity,
                                             classes=result.class_names, call=call, reference=reference,
                                             heatmap_on_region=heatmap_on_region)
        else:
            read_id = site_reads.correct_read(store, correcting, read, identity, classes=result.class_names,
                                              reference=reference, heatmap_on_region=heatmap_on_region)
    except (StoreUnavailable, access.AccessDenied, ReadNotCurrent, ValueError) as error:
        st.session_state[_error_key(result)] = NOT_RECORDED + str(error)
        return
    st.session_state.pop(_error_key(result), None)
    st.session_state.setdefault(RECORDED_KEY, {})[result.film_sha256] = {"id": read_id, "read": read}


def show_read_error(result: DisplayResult) -> None:
    """The sentence saying why this film's read was not recorded, until the next attempt."""
    message = st.session_state.get(_error_key(result))
    if message:
        st.error(message, icon=":material/error:")


def _error_key(result: DisplayResult) -> str:
    return f"read_error:{result.film_sha256}"


def _label(read: Any) -> str:
    return READ_LABELS.get(read, str(read))
