"""Open a project: shown when the app has none (no ``TUNELOOP_PROJECT``, nothing picked yet).

The app never creates a project by itself (an empty one would hide the sample that
`tuneloop sample` builds): it says how to make one, and opens an existing project folder the
user names; a folder that is not a project is refused.
"""

from __future__ import annotations

import streamlit as st

from app import components, state

st.title("Open a tuneloop project")
configured = state.project_root()
if configured:
    st.warning("This folder is not a tuneloop project (it has no database):", icon=":material/folder_off:")
    st.code(configured, language=None)
st.markdown("tuneloop works on one **project folder**. Make one, or open the app on one, from a terminal:")
st.code("tuneloop sample --project DIR   # the sample project: a fictional company's documents and pairs\n"
        "tuneloop init DIR                # a new, empty project\n"
        "tuneloop ui --project DIR        # open this app on a project", language="bash")
st.markdown("Or open an existing project folder on this machine:")
folder = st.text_input("Project folder", key="op_folder", placeholder="/path/to/project")
if st.button("Open", key="op_open", type="primary"):
    problem = state.choose_project(folder)
    if problem:
        st.error(components.esc(problem), icon=":material/error:")
    else:
        st.rerun()
