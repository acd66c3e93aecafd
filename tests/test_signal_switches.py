"""Overview's "Signals in use": a signal switched off in the browser is what `tuneloop signals
--disable` switches off (the project setting ``signals``), so the next run skips it and clears its flags."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from analysis import signals as sig
from analysis.curate import run_signals
from store import curation as cur
from store import pairs as pairs_store
from store import settings
from store.db import Project
from store.records import NewPair, PairContent

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


def overview() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Overview"
    return at


def save(at: AppTest, **switches: bool) -> None:
    for name, on in switches.items():
        at.toggle(key=f"ov_sig_{name}").set_value(on)
    at.button(key="ov_sig_save").click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_a_signal_switched_off_in_the_app_is_skipped_and_cleared(project: Project, monkeypatch) -> None:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        pii, empty = (pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=i, response=r))])[0]
                      for i, r in [("Contact?", "Mail jane.doe@larkspur-labs.pt"), ("Explain gravity.", "")])
    run_signals(project)
    with project.connect() as con:
        assert cur.flagged(con, "pii")["pair_id"].to_list() == [pii]

    at = overview()
    assert "Signals in use" in [e.label for e in at.expander]
    # every detector is listed, with its description, each switched on
    assert {t.key for t in at.toggle} >= {f"ov_sig_{n}" for n in sig.DETECTORS}
    assert all(at.toggle(key=f"ov_sig_{n}").value for n in sig.DETECTORS)
    captions = " ".join(c.value for c in at.caption)
    assert "applies to: tool" in captions  # tool_call applies to tool pairs only

    save(at, pii=False)
    with project.connect() as con:
        assert sig.disabled(settings.get(con, "signals", {})) == ["pii"]
        assert settings.get(con, "signals", {}) == sig.toggled({}, disable=["pii"])  # what the CLI writes
    assert any("pii" in t.value for t in at.toast)
    assert at.toggle(key="ov_sig_pii").value is False  # the page shows the saved state

    counts = run_signals(project)
    assert dict(counts.select("name", "enabled").iter_rows())["pii"] is False
    with project.connect() as con:
        assert cur.flagged(con, "pii").height == 0  # its stored flags are cleared
        assert cur.flagged(con, "empty_response")["pair_id"].to_list() == [empty]  # the others still run

    at = overview()  # a new session reads the setting back
    assert at.toggle(key="ov_sig_pii").value is False
    save(at, pii=True)
    with project.connect() as con:
        assert sig.disabled(settings.get(con, "signals", {})) == []
    run_signals(project)
    with project.connect() as con:
        assert cur.flagged(con, "pii")["pair_id"].to_list() == [pii]
