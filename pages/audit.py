"""Audit: the trail of who scored, changed, launched or was refused what (admins only).

Reads ``xraycore.access.audit`` (the same lines ``python -m xraycore audit`` prints); newest first.
"""
from __future__ import annotations

import streamlit as st

from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.app import auth as webauth

SHOWN = 500  # newest lines in the table; the CLI reads everything

webauth.require(access.READ_AUDIT)
st.title("Audit")
st.caption(f"Append-only log: `{audit.log_path()}`. Counts and settings only: no patient data, no file names.")

left, middle, right = st.columns(3)
since = left.text_input("Since (e.g. 24h, 7d, 2026-11-29)", key="audit_since")
user = middle.text_input("User (e-mail address)", key="audit_user")
action = right.text_input("Action (e.g. score, operating_point, run)", key="audit_action")
try:
    since_time = audit.parse_since(since) if since.strip() else None
except ValueError:
    st.error(f"“Since” needs a span back from now, such as 30m, 24h or 7d, or a date, such as 2026-11-29: "
             f"{since.strip()!r} is neither.")
    st.stop()
try:
    entries = audit.read(since=since_time, user=user.strip() or None, action=action.strip() or None)
except ValueError as error:
    st.error(str(error))
    st.stop()

if not entries:
    st.info("No audit lines match.")
    st.stop()
rows = [audit.table_row(entry) for entry in reversed(entries[-SHOWN:])]
st.caption(f"{len(entries)} line(s); the newest {min(len(entries), SHOWN)} shown.")
st.dataframe(rows, hide_index=True, width="stretch")
