"""Shapes seen in real public files (project READMEs, a leaderboard .txt), parsed by the real
unstructured and made into pairs by the default ``auto`` generator.

- A README's fenced code holds lines unstructured calls ``Title`` when it reads the Markdown as
  plain text (libmagic misnames some READMEs; a .txt of Markdown is read that way too): they
  are code in the section's answer, never a question's topic.
- Markdown emphasis and link syntax in a heading ("**Raw API Key**", "[Credentials](url)") stay
  in the response (the exact span) but not in the question.
- A leaderboard's "agent (model): 871.5" lines are data rows, not one-line sections.
"""

from __future__ import annotations

import re

import pytest

from ingest.cleaning import data_row, demote_false_headings
from ingest.documents import IngestConfig, ingest
from ingest.elements import plain_topic
from store import documents as docs_store
from store.db import frame

README = """# Toolbox

| [**Website**](https://toolbox.example.org/index) |

Toolbox runs generated shell commands for you and can undo every change it makes afterwards.

## Install

Set up a clean environment first, then install the command line tool:

```sh
brew install mkcert
mkcert -install
mkcert localhost
```

List all the commands the tool supports and how to use each of them:

```bash
# Show Help
toolbox -h
# install deps
pip install toolbox
```

## **Raw API Key**

If a service does not support OAuth, add its raw key with the insert command and it is stored locally.

## [Credentials](http://x) and Tokens

There are two kinds of credentials the user can add to the execution engine of the toolbox.

### How do I rotate the **API key**?

Run the toolbox rotate command; the old key stops working one hour after the new one is issued.
"""

# The same Markdown in a .txt, read as plain text (other names: pairs alike in both would be one).
README_TXT = README.replace("Toolbox", "Workbench").replace("toolbox", "workbench")
MODELS = ["gpt-4-0613", "claude-3-opus", "llama-3.1-70B", "mistral-large", "gemini-1.5-pro", "open-mixtral-8x7b"]
AGENTS = ["search agent", "brave-search agent"]


def _leaderboard() -> str:
    out = []
    for c, category in enumerate(("Search Engines", "Simple Math")):
        out.append(f"ELO Ratings for {category} category:")
        score = 1436.143134070856 - 100 * c
        for agent in AGENTS:
            for m in MODELS:
                out.append(f"langchain {agent} ({m}): {score}")
                score -= 17.25
        out.append("")
    return "\n".join(out)


def _scores() -> str:
    return "\n".join(f"{m} (FC) {871.52 - 9.5 * i:.2f}" for i, m in enumerate(MODELS * 2)) + "\n"


def _fenced_lines(text: str) -> set[str]:
    lines, inside = set(), False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif inside and line.strip():
            lines.add(line.strip().lstrip("#").strip().casefold())
    return lines


@pytest.fixture
def ingested(project, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "README.md").write_text(README)
    (kb / "README.txt").write_text(README_TXT)
    (kb / "elo_ratings_by_category.txt").write_text(_leaderboard())
    (kb / "scores.txt").write_text(_scores())
    report = ingest(project, [kb], IngestConfig(workers=0))
    assert report.ok, [f.error for f in report.files]
    with project.connect() as con:
        pairs = frame(con, """SELECT d.name, r.instruction, r.response, p.generator, p.char_start, p.char_end, d.text
                              FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                              JOIN documents d ON d.id = p.document_id ORDER BY d.name, p.char_start""")
        elements = {name: docs_store.elements(con, docs_store.find(con, f"kb/{name}").id)
                    for name in ("README.md", "README.txt", "elo_ratings_by_category.txt", "scores.txt")}
    return list(pairs.iter_rows(named=True)), elements


def _topic(question: str) -> str:
    m = re.search(r"say about (.*)\?$", question)
    return m.group(1) if m else ""


def test_every_document_gives_pairs_with_exact_spans(ingested):
    pairs, _ = ingested
    assert {p["name"] for p in pairs} == {"README.md", "README.txt", "elo_ratings_by_category.txt", "scores.txt"}
    for p in pairs:
        assert p["text"][p["char_start"]:p["char_end"]] == p["response"], p["instruction"]


def test_no_markdown_syntax_in_questions(ingested):
    pairs, _ = ingested
    for p in pairs:
        q = p["instruction"]
        assert not any(s in q for s in ("**", "`", "](", "<!--")), q
        assert not re.search(r"(^|\s)#{1,6}\s", q), q
    questions = {p["instruction"] for p in pairs if p["name"] == "README.txt"}
    assert "What does the Workbench say about Raw API Key?" in questions
    assert "What does the Workbench say about Credentials and Tokens?" in questions
    assert "How do I rotate the API key?" in questions
    raw = next(p for p in pairs if p["instruction"] == "What does the Workbench say about Raw API Key?")
    assert raw["text"][raw["char_start"] - 20:raw["char_start"]].endswith("Raw API Key**\n\n")


def test_code_lines_are_no_headings_and_stay_in_the_answer(ingested):
    pairs, elements = ingested
    code = _fenced_lines(README) | _fenced_lines(README_TXT)
    for p in pairs:
        assert _topic(p["instruction"]).casefold() not in code, p["instruction"]
    for name in ("README.md", "README.txt"):
        titles = {e.text.strip().lstrip("#").strip().casefold() for e in elements[name] if e.type == "Title"}
        assert not titles & code, name
        install = [p for p in pairs if p["name"] == name and _topic(p["instruction"]) == "Install"]
        assert install, name
        assert "mkcert localhost" in install[0]["response"]
        assert re.search(r"(toolbox|workbench) -h", install[0]["response"])


def test_score_lines_are_no_sections(ingested):
    pairs, elements = ingested
    for name in ("elo_ratings_by_category.txt", "scores.txt"):
        assert not [e.text for e in elements[name] if e.type == "Title" and data_row(e.text)]
        mine = [p for p in pairs if p["name"] == name]
        assert mine
        for p in mine:
            assert not re.search(r"\d[\d.]*\s*\??$", _topic(p["instruction"])), p["instruction"]
            assert "\n" in p["response"].strip() or p["generator"] != "sections", p["instruction"]
    assert {p["generator"] for p in pairs if p["name"] == "scores.txt"} <= {"paragraphs", "table", "qa"}
    topics = {_topic(p["instruction"]) for p in pairs if p["name"] == "elo_ratings_by_category.txt"}
    assert "ELO Ratings for Simple Math category" in topics


def test_plain_topic():
    assert plain_topic("Raw API Key**") == "Raw API Key"
    assert plain_topic("## [Credentials](http://x) and Tokens") == "Credentials and Tokens"
    assert plain_topic("](https://toolbox.example.org/index) |") == ""
    assert plain_topic("## Contents <!-- omit from toc -->") == "Contents"
    assert plain_topic("Use `toolbox` *now*:") == "Use toolbox now"
    assert plain_topic("C# basics") == "C# basics"


def test_demote_false_headings():
    def el(kind: str, text: str) -> dict:
        return {"type": kind, "text": text}

    got = demote_false_headings([
        el("Title", "Install"), el("UncategorizedText", "```sh"), el("Title", "# install deps"),
        el("UncategorizedText", "```"), el("Title", "agent (model): 871.5"), el("Title", "Step 2: 3"),
        el("Title", "Usage"), el("Title", "```bash"), el("Title", "never closed"),
    ])
    assert [e["type"] for e in got] == ["Title", "UncategorizedText", "CodeSnippet", "UncategorizedText",
                                        "UncategorizedText", "Title", "Title", "Title", "Title"]
    assert [e["text"] for e in got][2] == "# install deps"
    assert not data_row("Python 3.10") and not data_row("Meeting at 10:30") and data_row("12.5 13.1 9.8")
    # a hard-wrapped text (unstructured's norwich-city.txt): a sentence's last line is no heading;
    # a real heading after a finished sentence, or in capitals, stays one
    wrapped = demote_false_headings([
        el("NarrativeText", "joined Watford as a trainee, signing his first contract in July 1986, shortly after"),
        el("Title", "his 18th birthday.[9]"), el("NarrativeText", "Roberts was married in 2016,[82] and has twins"),
        el("Title", "daughters.[75]"), el("Title", "Personal life"), el("NarrativeText", "He retired in 2004.[9]"),
        el("Title", "international career"), el("Title", "later years"),
    ])
    assert [e["type"] for e in wrapped] == ["NarrativeText", "NarrativeText", "NarrativeText", "NarrativeText",
                                            "Title", "NarrativeText", "Title", "Title"]
