"""What reviewers expect (issue 13): a project guideline on Review, a 1-5 rating exported with the data,
and a counter that counts decisions (an edit is not one).

Real parts throughout: a DuckDB project in tmp_path, the app through Streamlit's AppTest, the CLI
through typer's runner, and markdown-it-py (the CommonMark parser Streamlit's renderer agrees with)
to check what a rendered guideline can and cannot do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import polars as pl
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from app.components import safe_markdown
from ingest.exporter import EXPORT_FORMATS, export_slice
from store import guidelines as guidelines_store
from store import pairs as pairs_store
from store import ratings as ratings_store
from store import slices as slices_store
from store import users as users_store
from store.db import Project
from store.records import NewPair, PairContent, SliceFilter, Status
from tests.test_app_pages import app
from tests.test_auth import open_app as signed_out_app
from tests.test_auth import sign_in
from tuneloop.cli import app as cli_app

EVIL = "evil.test"
runner = CliRunner()


@pytest.fixture
def proj(project, monkeypatch) -> Project:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    return project


def add_pairs(p: Project, n: int = 4) -> list[str]:
    with p.transaction() as con:
        return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"Question {i}?",
                                                                        response=f"Answer {i}."), author="import")
                                           for i in range(n)])


def open_app(page: str, *, as_user: str | None = None) -> AppTest:
    """``page`` as the local admin (no accounts), or signed in as ``as_user`` (password NAME-password)."""
    if as_user is None:
        return app(page)
    at = sign_in(signed_out_app(), as_user, f"{as_user}-password")
    at.switch_page(f"views/{page}.py")
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def cli(*args: str, input: str | None = None):
    return runner.invoke(cli_app, list(args), input=input)


# ---------------------------------------------------------------- what a rendered guideline can do

_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# Streamlit's renderer on top of CommonMark: GFM autolink literals and icon shortcodes in the text (after
# escapes are resolved; a word joiner breaks them), directives and math in the source (an escape stops them).
_AUTOLINK = re.compile(r"(?i)(https?://|www\.|[\w.+-]+@)[-\w.]*evil")
_SHORTCODE = re.compile(r":(?:material/\w+|skull|streamlit):")
_DIRECTIVE = re.compile(r"(?<!\\):[a-z]+(?:-background)?\[")  # :red[…], :blue-background[…]
_MATH = re.compile(r"\$[^$\s][^$]*\$")
_CODE_OR_ESCAPE = re.compile(r"(?s)^(`{3,}).*?^\1|(`+).+?\2|\\.", re.M)


def _tokens(md: str) -> Iterator:
    for t in _MD.parse(md):
        yield t
        yield from t.children or []


def fetches_or_links(md: str) -> list[str]:
    """What ``md`` would make Streamlit render beyond styled text: links, images, HTML, autolinks,
    Streamlit directives, icon shortcodes, math ([] when none)."""
    tokens = list(_tokens(md))
    out = [t.type for t in tokens if t.type in ("link_open", "image", "html_inline", "html_block")]
    text = "".join(t.content for t in tokens if t.type == "text")  # escapes resolved, as the renderer sees it
    out += [f"autolink {m.group(0)}" for m in _AUTOLINK.finditer(text)]
    out += [f"shortcode {m.group(0)}" for m in _SHORTCODE.finditer(text)]
    source = _CODE_OR_ESCAPE.sub("_", md)
    out += [f"directive {m.group(0)}" for m in _DIRECTIVE.finditer(source)]
    out += [f"math {m.group(0)}" for m in _MATH.finditer(source)]
    return out


HOSTILE = [
    f"![x](http://{EVIL}/a.png)",
    f"<img src=http://{EVIL}/b.png>",
    f"[l](http://{EVIL})",
    ":red[x]",
    ":blue-background[y] :material/delete_forever: :skull:",
    "<div onclick=alert(1)>raw <b>html</b></div>",
    f"text <a href='http://{EVIL}/a'>a</a> and <script>x()</script>",
    f"<http://{EVIL}/auto> http://{EVIL}/bare www.{EVIL} me@{EVIL}",
    f"[![nested](http://{EVIL}/i.png)](http://{EVIL}/l)",
    f"**[bold link](http://{EVIL}/b)** and _![em img](http://{EVIL}/e.png)_",
    f"[ref][r]\n\n[r]: http://{EVIL}/ref",
    f"# Heading with <img src=http://{EVIL}/h.png> and [l](http://{EVIL}/h)",
    f"- item ![i](http://{EVIL}/li.png)\n- [l](http://{EVIL}/li)\n  1. :red[nested]",
    f"| a | b |\n|---|---|\n| [l](http://{EVIL}/t) | ![i](http://{EVIL}/t.png) |",
    f"> quote [l](http://{EVIL}/q)\n> <img src=http://{EVIL}/q.png>",
    "$x^2$ and $$y$$",
    "&lt;b&gt; entities stay text, :red[x]",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_guideline_renders_no_link_image_or_html(text):
    assert fetches_or_links(text), f"{text!r} is no test: it renders harmlessly as written"
    md = safe_markdown(text)
    assert fetches_or_links(md) == [], md
    assert "<img" not in _MD.render(md) and "<a " not in _MD.render(md) and "<div" not in _MD.render(md)


def test_hostile_guideline_keeps_what_the_reader_needs():
    md = safe_markdown(f"See [the wiki](http://{EVIL}/wiki) and ![a diagram](http://{EVIL}/d.png), "
                       ":red[not red] <b>not bold</b>")
    html = _MD.render(md)
    # the link's words and its address as code (copyable, not clickable), the image's alt text, the rest literal
    assert "the wiki" in html and f"<code>http://{EVIL}/wiki</code>" in html
    assert "a diagram" in html and "d.png" not in html
    assert ":red[not red]" in html.replace("\u2060", "") and "&lt;b&gt;not bold&lt;/b&gt;" in html


def test_guideline_structure_survives():
    text = ("# Labelling rules\n\nSome **bold**, _emphasis_, ~~old~~ and `code`.\n\n"
            "## Accept when\n\n- the answer is **correct**\n- it cites the source\n  - nested item\n\n"
            "1. first\n2. second\n\n> a note\n\n```python\nprint('``` inside')\n```\n\n"
            "| label | meaning |\n|:--|--:|\n| `ok` | *fine* |\n")
    md = safe_markdown(text)
    kinds = {t.type for t in _tokens(md)}
    for kind in ("heading_open", "strong_open", "em_open", "s_open", "code_inline", "bullet_list_open",
                 "ordered_list_open", "blockquote_open", "fence", "table_open"):
        assert kind in kinds, (kind, md)
    assert md.startswith("### Labelling rules")  # headings sit below the page's own title
    html = _MD.render(md)
    assert "<li>nested item</li>" in html and "print('``` inside')" in html and "<strong>correct</strong>" in html
    assert fetches_or_links(md) == []


# ---------------------------------------------------------------- the guideline: store, CLI, Review


def test_guideline_versions_latest_wins(proj):
    with proj.connect() as con:
        assert guidelines_store.latest(con) is None
        g1 = guidelines_store.save(con, "# v1", author="root")
        assert guidelines_store.save(con, "# v1", author="other") == g1  # the same text adds nothing
        g2 = guidelines_store.save(con, "# v2", author="rita")
        assert guidelines_store.latest(con) == g2 and g2.version == 2 and g2.author == "rita"
        assert [g.version for g in guidelines_store.history(con)] == [2, 1]
        with pytest.raises(ValueError):
            guidelines_store.save(con, "x" * (guidelines_store.MAX_CHARS + 1), author="root")


def test_guideline_set_and_show_with_the_cli(proj, tmp_path):
    assert "no guideline yet" in cli("guideline", "show").output
    f = tmp_path / "g.md"
    f.write_text("# Rules\n\n- be **kind**\n", encoding="utf-8")
    res = cli("guideline", "set", "--file", str(f), "--author", "root")
    assert res.exit_code == 0 and "version 1" in res.output, res.output
    assert cli("guideline", "show").stdout == "# Rules\n\n- be **kind**\n"
    assert "unchanged" in cli("guideline", "set", "--file", str(f)).output
    assert cli("guideline", "set", "--file", "-", input="second").exit_code == 0
    with proj.connect() as con:
        assert [(g.version, g.text) for g in guidelines_store.history(con)] == [(2, "second"),
                                                                            (1, "# Rules\n\n- be **kind**\n")]
    assert json.loads(cli("guideline", "history", "--json").stdout)[0]["version"] == 2
    assert cli("guideline", "set", "--file", str(tmp_path / "missing.md")).exit_code == 2


def guideline_expander(at: AppTest):
    return next((e for e in at.expander if e.label == "Guidelines"), None)


def test_guideline_shown_on_review_open_once_then_collapsed(proj):
    add_pairs(proj)
    hostile = "# Rules\n\n- accept **correct** answers\n\n" + " ".join(HOSTILE)
    with proj.connect() as con:
        guidelines_store.save(con, hostile, author="root")
    at = open_app("review")
    exp = guideline_expander(at)
    assert exp is not None and exp.proto.expanded  # first view in this session: open
    shown = [m.value for m in exp.markdown]
    assert shown == [safe_markdown(hostile)] and shown[0].startswith("### Rules")
    assert fetches_or_links(shown[0]) == []
    ok(at.button(key="rv_skip").click().run())
    assert not guideline_expander(at).proto.expanded  # seen: collapsed from then on
    with proj.connect() as con:
        guidelines_store.save(con, "# Rules v2", author="root")
    at.run()
    assert guideline_expander(at).proto.expanded  # a new version opens again, once


def test_admin_edits_the_guideline_on_review(proj):
    add_pairs(proj)
    at = open_app("review")  # the local admin (no accounts yet)
    assert guideline_expander(at) is None  # nothing written yet
    area = next(t for t in at.text_area if t.label == "Guideline (Markdown)")
    area.set_value("## Accept\n\n- *only* facts from the source")
    ok(at.button(key="rv_guideline_save").click().run())
    with proj.connect() as con:
        g = guidelines_store.latest(con)
    assert g is not None and g.version == 1 and g.author == "tester" and g.text.startswith("## Accept")
    assert guideline_expander(at).markdown[0].value == safe_markdown(g.text)


def test_annotator_reads_but_cannot_edit_the_guideline(proj):
    add_pairs(proj)
    with proj.connect() as con:
        users_store.create_user(con, "root", "admin", "root-password")
        users_store.create_user(con, "ann", "annotator", "ann-password")
        guidelines_store.save(con, "**Be precise.**", author="root")
    at = open_app("review", as_user="ann")
    assert guideline_expander(at).markdown[0].value == "**Be precise\\.**"
    assert "Edit guideline" not in [e.label for e in at.expander]
    assert not [t for t in at.text_area if t.label == "Guideline (Markdown)"]


# ---------------------------------------------------------------- ratings


def test_rating_latest_per_reviewer_wins_and_is_no_decision(proj):
    pid, other = add_pairs(proj, 2)
    with proj.connect() as con:
        head = pairs_store.get(con, pid)
        ratings_store.rate(con, pid, 4, author="ann")
        ratings_store.rate(con, pid, 2, author="ann")  # ann changes her mind: 2 counts
        ratings_store.rate(con, pid, 5, author="ben")
        assert {r.author: r.value for r in ratings_store.current(con, head.head_revision_id)} == {"ann": 2, "ben": 5}
        scores = ratings_store.scores(con, [head.head_revision_id, pairs_store.get(con, other).head_revision_id])
        assert scores.rows() == [(head.head_revision_id, 3.5, 2)]
        ratings_store.rate(con, pid, None, author="ben")  # withdrawn
        assert ratings_store.scores(con, [head.head_revision_id]).rows() == [(head.head_revision_id, 2.0, 1)]
        for bad in (0, 6, 3.5, True):
            with pytest.raises(ValueError):
                ratings_store.rate(con, pid, bad, author="ann")  # type: ignore[arg-type]
        with pytest.raises(KeyError):
            ratings_store.rate(con, pid, 3, author="ann", revision_id="r_not_this_pairs")
        after = pairs_store.get(con, pid)
        assert (after.status, after.version) == (head.status, head.version)  # no decision, no version step
        assert pairs_store.reviews(con, pid) == []
        assert all(p.decisions == 0 for p in users_store.progress(con))
        # an edit is a new text: it starts unrated, the old revision keeps its score
        pairs_store.revise(con, pid, base_revision_id=head.head_revision_id, author="ann", response="New.")
        new_rid = pairs_store.get(con, pid).head_revision_id
        assert ratings_store.current(con, new_rid) == []
        assert len(ratings_store.current(con, head.head_revision_id)) == 1


def test_rating_with_the_cli(proj):
    pid = add_pairs(proj, 1)[0]
    res = cli("pairs", "rate", pid[:10], "4", "--author", "ann")
    assert res.exit_code == 0 and "rated 4 by ann" in res.output and "mean 4.00 from 1" in res.output, res.output
    assert "mean 3.00 from 2" in cli("pairs", "rate", pid, "2", "--author", "ben").output
    assert cli("pairs", "rate", pid, "6").exit_code != 0
    assert cli("pairs", "rate", pid).exit_code == 2  # neither a value nor --clear
    assert "withdrawn" in cli("pairs", "rate", pid, "--clear", "--author", "ben").output
    with proj.connect() as con:
        rid = pairs_store.get(con, pid).head_revision_id
        assert [(r.author, r.value) for r in ratings_store.current(con, rid)] == [("ann", 4)]


def test_rating_on_review_saved_per_reviewer_and_shown(proj):
    ids = add_pairs(proj, 3)
    with proj.connect() as con:
        first = pairs_store.get(con, ids[0])
        ratings_store.rate(con, first.id, 2, author="someone")
    at = open_app("review")
    assert len(at.feedback) == 1 and at.feedback[0].value is None
    assert any("2.00 on average from 1 reviewer" in c.value for c in at.caption)
    ok(at.feedback[0].set_value(3).run())  # the fourth star
    assert any("3.00 on average from 2 reviewers" in c.value for c in at.caption)
    with proj.connect() as con:
        got = {r.author: r.value for r in ratings_store.current(con, first.head_revision_id)}
        assert got == {"someone": 2, "tester": 4}
        assert pairs_store.get(con, first.id).status == "pending"  # a rating decides nothing
    ok(at.feedback[0].set_value(4).run())
    with proj.connect() as con:
        assert {r.author: r.value for r in ratings_store.current(con, first.head_revision_id)}["tester"] == 5
    ok(at.button(key="rv_skip").click().run())
    assert at.feedback[0].value is None  # the next pair: unrated
    ok(at.button(key="rv_back").click().run())
    assert at.feedback[0].value == 4  # back on the first: your rating shows


def test_blind_reviewer_sees_no_one_elses_rating(proj):
    ids = add_pairs(proj, 1)
    with proj.connect() as con:
        users_store.create_user(con, "root", "admin", "root-password")
        for name in ("ann", "ben"):
            users_store.create_user(con, name, "annotator", f"{name}-password")
        users_store.assign(con, ids, ["ann", "ben"], overlap=2)
        ratings_store.rate(con, ids[0], 1, author="ann")
    ben = open_app("review", as_user="ben")
    assert not [c.value for c in ben.caption if "on average" in c.value]  # blind until ben decides
    ok(ben.feedback[0].set_value(4).run())
    assert not [c.value for c in ben.caption if "on average" in c.value]  # rating is no decision: still blind
    root = open_app("review", as_user="root")
    assert any("3.00 on average from 2 reviewers" in c.value for c in root.caption)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_carries_the_rating(proj, tmp_path, fmt):
    ids = add_pairs(proj, 3)
    with proj.connect() as con:
        rated = pairs_store.get(con, ids[0]).head_revision_id
        ratings_store.rate(con, ids[0], 5, author="ann")
        ratings_store.rate(con, ids[0], 3, author="ann")  # her latest counts
        ratings_store.rate(con, ids[0], 4, author="ben")
        ratings_store.rate(con, ids[1], 1, author="ann")
        ratings_store.rate(con, ids[1], None, author="ann")  # withdrawn: unrated again
        slices_store.create(con, "all", SliceFilter(), eval_fraction=0.0, split_by="pair")
    out = tmp_path / f"out.{'parquet' if fmt == 'parquet' else 'jsonl'}"
    assert export_slice(proj, "all", fmt, out) == 3
    rows = (pl.read_parquet(out).to_dicts() if fmt == "parquet"
            else [json.loads(line) for line in out.read_text().splitlines()])
    by_rev = {r["revision_id"]: (r["rating"], r["n_ratings"]) for r in rows}
    assert by_rev[rated] == (3.5, 2)
    # unrated: rating 0.0 with n_ratings 0 (never null: one schema per export format, issue 17)
    assert sorted(v for k, v in by_rev.items() if k != rated) == [(0.0, 0), (0.0, 0)]


# ---------------------------------------------------------------- an edit is not a decision; the counter counts


@pytest.fixture
def annotated(proj) -> dict:
    ids = add_pairs(proj, 4)
    with proj.connect() as con:
        users_store.create_user(con, "root", "admin", "root-password")
        users_store.create_user(con, "ann", "annotator", "ann-password")
        users_store.create_user(con, "rita", "reviewer", "rita-password")
        users_store.assign(con, ids, ["ann"])
    return {"ids": ids, "project": proj}


def test_an_edit_is_not_a_decision(annotated):
    p: Project = annotated["project"]
    p0, p1, *_ = ids = annotated["ids"]
    with p.connect() as con:
        pairs_store.revise(con, p0, base_revision_id=pairs_store.get(con, p0).head_revision_id, author="ann",
                           response="Edited.")
        me = users_store.progress(con, "ann")[0]
        assert (me.decisions, me.done_assigned, me.assigned) == (0, 0, 4)
        assert sorted(users_store.assigned_pair_ids(con, "ann")) == sorted(ids)  # the edited pair stays open
        pairs_store.set_status(con, p0, Status.accepted, author="ann")
        me = users_store.progress(con, "ann")[0]
        assert (me.decisions, me.accepted, me.done_assigned) == (1, 1, 1)
        assert p0 not in users_store.assigned_pair_ids(con, "ann")
        # rita edits a pair ann accepted, and a pending one: no decision of hers, no "accepted" by her
        for pid in (p0, p1):
            pairs_store.revise(con, pid, base_revision_id=pairs_store.get(con, pid).head_revision_id, author="rita",
                               response="Rita's text.")
        rita = users_store.progress(con, "rita")[0]
        assert (rita.decisions, rita.accepted) == (0, 0)
        assert users_store.paired_decisions(con, "ann", "rita") == []


def caption_with(at: AppTest, words: str) -> str:
    return next(c.value for c in at.caption if words in c.value)


def shown_pair(at: AppTest) -> str:
    return next(m for m in (re.search(r"`(p_\w+)`", m.value) for m in at.markdown) if m).group(1)


def test_review_counter_counts_decisions_not_edits_or_skips(annotated):
    p: Project = annotated["project"]
    at = open_app("review", as_user="ann")
    assert "0 decided this session" in caption_with(at, "this session")
    first = shown_pair(at)
    at.button(key="rv_edit").click().run()
    next(t for t in at.text_area if t.label == "Response").set_value("Edited by ann.")
    ok(at.button(key="rv_save").click().run())
    assert shown_pair(at) == first  # still in her queue, still shown
    assert "0 decided this session" in caption_with(at, "this session")
    ok(at.button(key="rv_accept").click().run())
    assert "1 decided this session" in caption_with(at, "this session")
    assert "1 decided by you in all (1 of the 4 assigned to you)" in caption_with(at, "this session")
    ok(at.button(key="rv_skip").click().run())
    assert "1 decided this session" in caption_with(at, "this session")
    ok(at.button(key="rv_reject").click().run())
    assert "2 decided this session" in caption_with(at, "this session")
    ok(at.button(key="rv_back").click().run())  # back in the assigned queue: the rejected pair again
    ok(at.button(key="rv_fix").click().run())  # deciding it again is still one pair decided
    assert "2 decided this session" in caption_with(at, "this session")
    with p.connect() as con:
        me = users_store.progress(con, "ann")[0]
    assert (me.decisions, me.accepted, me.needs_fix, me.done_assigned) == (2, 1, 1, 2)
    users = ok(open_app("users", as_user="ann"))
    row = users.dataframe[0].value
    assert list(row["reviewer"]) == ["ann"] and list(row["decisions"]) == [2]
