"""Pneumonia-detection workbench: ``streamlit run app.py``.

The entry point only lays out navigation and the model choice every page shares (sidebar); each
page in ``pages/`` is a thin layer of widgets over ``xraycore``.
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Chest X-ray workbench", page_icon=":material/radiology:", layout="wide")

# Declared before importing xraycore (a moment on a cold start), so the sidebar
# shows these four pages at once rather than Streamlit's listing of the pages/ folder.
navigation = st.navigation([
    st.Page("pages/diagnose.py", title="Diagnose", icon=":material/radiology:", default=True),
    st.Page("pages/operating_point.py", title="Operating point", icon=":material/tune:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
])

from xraycore import catalog  # noqa: E402

choices = catalog.model_choices()
with st.sidebar:
    if choices:
        # The path string is the value (stable across reruns); the label is what people read.
        labels = {str(choice.path): choice.label for choice in choices}
        st.selectbox("Model", list(labels), format_func=labels.get, key="model_path",
                     help="The bundled model, or any finished training run.")
    else:
        st.session_state.pop("model_path", None)
        st.warning("No model yet: train one on the Train page.")

navigation.run()
