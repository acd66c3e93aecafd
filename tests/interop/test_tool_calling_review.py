"""Issue 17: the review page shows tool calls, tool results, turn weights and the tools offered,
as plain text and code (data is never rendered as Markdown)."""

from __future__ import annotations

import json

from ingest.importer import import_file
from tests.interop.test_tool_calling import OPENAI_TOOLS
from tests.test_app_pages import app


def test_review_shows_tool_calls_results_and_tools(project, tmp_path, monkeypatch):
    rec = json.loads(json.dumps(OPENAI_TOOLS))
    rec["messages"][3]["content"] = '{"temp": 18, "sky": "**cloudy** <b>x</b>"}'
    rec["messages"][-1]["weight"] = 0
    f = tmp_path / "tools.jsonl"
    f.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    assert import_file(project, f, "openai").new == 1
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = app("review")
    codes = [c.value for c in at.code]
    # each call's arguments, pretty-printed
    assert any('"city": "Paris"' in c and '"unit": "c"' in c and "\n" in c for c in codes)
    assert any('"city": "Lyon"' in c for c in codes)
    # the tool result verbatim in a code block (its Markdown/HTML inert), never in Markdown
    assert any("**cloudy** <b>x</b>" in c for c in codes)
    assert not any("<b>x</b>" in m.value for m in at.markdown)
    captions = [c.value.replace("\\", "") for c in at.caption]  # esc() backslash-escapes _
    assert any("get_weather" in c and "call_1" in c for c in captions)
    assert any("Tool result" in c and "call_2" in c for c in captions)
    assert any("not trained on" in c for c in captions)
    # the tools offered, collapsible
    tools = next(e for e in at.expander if e.label.startswith("Tools offered"))
    assert any('"get_weather"' in c.value for c in tools.code)
