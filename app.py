"""Pneumonia-detection workbench: ``streamlit run app.py``.

The entry point only decides who is using the session (sign-in, roles: ``xraycore.app.auth``), lays out
the navigation they may use and the model choice every page shares (sidebar); each page in ``pages/``
is a thin layer of widgets over ``xraycore``.
"""
from __future__ import annotations

import streamlit as st

from xraycore.access import policy as access  # no torch: the sign-in page and the navigation appear at once
from xraycore.app import auth as webauth

st.set_page_config(page_title="Chest X-ray workbench", page_icon=":material/radiology:", layout="wide")

PAGES = [
    webauth.PageSpec("pages/diagnose.py", "Diagnose", ":material/radiology:", access.SCORE),
    webauth.PageSpec("pages/worklist.py", "Worklist", ":material/format_list_numbered:", access.PACS_QUERY),
    webauth.PageSpec("pages/operating_point.py", "Operating point", ":material/tune:", access.PREVIEW_OPERATING_POINT),
    webauth.PageSpec("pages/site.py", "Site", ":material/local_hospital:", access.PREVIEW_OPERATING_POINT),
    webauth.PageSpec("pages/train.py", "Train", ":material/model_training:", access.TRAIN),
    webauth.PageSpec("pages/compare.py", "Compare", ":material/compare:", access.COMPARE),
    webauth.PageSpec("pages/monitor.py", "Monitor", ":material/monitor_heart:", access.MONITOR),
    webauth.PageSpec("pages/audit.py", "Audit", ":material/receipt_long:", access.READ_AUDIT),
]

identity = webauth.identify()
# Declared before importing the rest of xraycore (which imports torch: seconds on a cold start), so the
# sidebar shows the pages at once rather than Streamlit's listing of the pages/ folder.
navigation = webauth.navigation(PAGES, identity)
webauth.banner(identity)

if identity is not None and identity.role is not None:
    from xraycore.app import catalog

    choices = catalog.model_choices(identity=identity)  # a reader: the released models only
    with st.sidebar:
        if choices:
            # The path string is the value (stable across reruns); the label is what people read.
            labels = {str(choice.path): choice.label for choice in choices}
            st.selectbox("Model", list(labels), format_func=labels.get, key="model_path",
                         help="The bundled model and the runs released for reading (researchers: any finished "
                              "or stopped run, as a research preview).")
        else:
            st.session_state.pop("model_path", None)
            st.warning("No model yet: train one on the Train page.")

navigation.run()
