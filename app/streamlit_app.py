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

from app import state  # noqa: E402
from app.components import esc  # noqa: E402

VIEWS = Path(__file__).parent / "views"


def page(name: str, title: str, icon: str, default: bool = False) -> st.Page:
    return st.Page(VIEWS / f"{name}.py", title=title, icon=icon, url_path=name, default=default)


def main() -> None:
    # An emoji icon is drawn locally; a :material/…: one makes every browser fetch it from fonts.gstatic.com.
    st.set_page_config(page_title="tuneloop", page_icon="🔁", layout="wide")
    if not state.has_project():  # the app never creates a project: say how to make or pick one
        st.navigation([page("open_project", "Open a project", ":material/folder_open:", default=True)]).run()
        return

    if not state.sign_in():
        return

    pages: dict[str, list[st.Page]] = {"Project": [page("overview", "Overview", ":material/dashboard:", default=True)]}
    curate = [page("review", "Review", ":material/rate_review:")]
    if state.can("ingest"):
        curate.insert(0, page("ingest", "Ingest", ":material/upload_file:"))
    if state.can("curate"):
        curate += [page("duplicates", "Duplicates", ":material/content_copy:"),
                   page("explore", "Explore", ":material/travel_explore:"),
                   page("slices", "Slices", ":material/dataset:")]
    pages["Curate"] = curate
    if state.can("analyse"):
        pages["Model"] = [page("train", "Train", ":material/model_training:"),
                          page("errors", "Errors", ":material/bug_report:"),
                          page("compare", "Compare", ":material/compare_arrows:"),
                          page("ab", "Blind A/B", ":material/thumbs_up_down:")]
    pages["Team"] = [page("users", "Reviewers", ":material/group:")]

    with st.sidebar:
        st.caption(f"Signed in as **{esc(state.user())}** ({esc(state.role())})"
                   + (" · local admin: add accounts under Reviewers" if state.is_local_admin() else ""))
        if not state.is_local_admin():
            st.button("Sign out", on_click=state.sign_out, key="sign_out", type="tertiary")
        st.caption(f"Project {esc(str(state.project().root))}")

    state.show_flash()
    st.navigation(pages).run()


# Streamlit runs this file as __main__. A multiprocessing child (the ingest parser workers)
# started later in the same process re-runs the parent's main file as __mp_main__ to prepare
# itself: it must not render the app (nor open a project) there.
if __name__ == "__main__":
    main()
