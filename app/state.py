"""The only module that touches ``st.session_state`` and Streamlit caches."""

from __future__ import annotations

import os

import streamlit as st

from store.db import Project, open_project


@st.cache_resource(show_spinner=False)
def _project(root: str) -> Project:
    return open_project(root, create=True)


def project() -> Project:
    root = st.session_state.get("project_root") or os.environ.get("TUNELOOP_PROJECT") or ".tuneloop/sample"
    st.session_state["project_root"] = root
    return _project(root)


def user() -> str:
    return st.session_state.get("user") or os.environ.get("TUNELOOP_USER") or "reviewer"
