"""tuneloop app: an ``st.navigation`` router grouped by stage; one file per page in views/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

# Run as `streamlit run app/streamlit_app.py` from the repo root: make the packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _k, _v in {"DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "HF_HUB_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)

st.set_page_config(page_title="tuneloop", page_icon=":material/model_training:", layout="wide")

VIEWS = Path(__file__).parent / "views"
pages = {
    "Project": [st.Page(VIEWS / "overview.py", title="Overview", icon=":material/dashboard:", default=True)],
}
st.navigation(pages).run()
