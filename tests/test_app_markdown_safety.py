"""Markdown injection (issue 12): text from data or users renders literally wherever Streamlit renders Markdown.

Three layers:

- the one escape helper (``app.components.esc``) on hostile strings, checked with a CommonMark
  parser (markdown-it-py) plus the rewrites Streamlit's renderer applies to plain text after
  parsing (GFM autolinks, ``:emoji:``/``:material/…:``/``:streamlit:``, ``$…$`` math detection),
  ported from its frontend bundle;
- a project whose every field (pair text, tags, sources, document, review authors and comments,
  revision reasons, signals, duplicate kinds, slice, runs, predictions, error categories and
  evidence, job titles, the user name) holds a hostile payload, walked page by page through
  ``AppTest``: every string Streamlit would render as Markdown (bodies, labels, help, metric
  values, radio/pill options, toasts) must pass the same check;
- the same project in a real browser: no request leaves the app's own host, and no link or image
  points at the payloads' host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from analysis.errors.taxonomy import DEFAULT_CATEGORIES
from app import components, jobs
from store import curation
from store import documents as docs_store
from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import Document, Message, NewPair, PairContent, Provenance, Status
from store.slices import Item
from tests.test_browser import ARGS, CHROMIUM, needs_a_browser, running_app
from training.runfolder import RunFolder

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
EVIL = "evil.test"


def payload(tag: str) -> str:
    """Every Markdown/Streamlit construct that could fetch, link or restyle, tagged with its field."""
    return (f"**PWN** ![i](http://{EVIL}/{tag}.png) [l](http://{EVIL}/{tag}) <img src=http://{EVIL}/{tag}-h.png> "
            f"<a href=http://{EVIL}/{tag}-a>a</a> https://{EVIL}/{tag}/bare www.{EVIL} me@{EVIL} "
            f"<http://{EVIL}/{tag}-auto> :violet[{tag}] :material/delete_forever: :skull: :streamlit: $x^2$ "
            f"a -> b ~~{tag}~~ `{tag}` \\* &lt;b&gt;\n\n# PWNHEAD {tag}\n- item\n")


USER = f"**PWN** ![u](http://{EVIL}/u.png) :skull: $u$"  # user names hold at most 64 characters
CATEGORY_ID = f"![c](http://{EVIL}/c.png)"

# ---------------------------------------------------------------- what Streamlit's renderer does

_MD = MarkdownIt("commonmark").enable(["strikethrough", "table"])
# Streamlit's frontend, ported: GFM autolink literals (mdast-util-gfm-autolink-literal), and the
# text-node rewrites for emoji, material icons and the Streamlit logo.
_AUTOLINK_URL = re.compile(r"(?i)(https?://|www(?=\.))([-.\w]+)")
_AUTOLINK_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")
_SHORTCODE = re.compile(r":(?:skull|streamlit|material[/_]delete_forever):")
# math is only loaded when the source has $…$ outside code and escapes (StreamlitMarkdown's ``bm``)
_MATH_SKIP = re.compile(r"(?:(?<=^)|(?<=\n)) {0,3}(`{3,}|~{3,})[\s\S]*?(?:\n[ \t]*\1|$)"
                        r"|(?<!`)(`+)[^`\n]+\2(?!`)|\\[\\$`]")
_MATH = re.compile(r"(?<!\$)\$\$+(?!\$)[\s\S]*?\$\$|(?<!\$)\$(?![\s$])[^$\n]*?[^\s$]\$(?!\d)")
_DIRECTIVE = re.compile(r"(?<!\\):(?:violet|red|small|blue-background)\[")  # names no page template uses
_ARROW = re.compile(r"(?:^|\s)(?:<->|->|<-|--|>=|<=|~=)(?:\s|$)")  # Streamlit's typographic replacements
_LITERAL_TOKENS = {"paragraph_open", "paragraph_close", "inline", "text", "softbreak", "hardbreak", "code_block"}


def _inline(tokens) -> Iterator:
    for t in tokens:
        yield t
        if t.children:
            yield from _inline(t.children)


def problems(source: str) -> list[str]:
    """What a payload managed to do in ``source`` once Streamlit renders it ([] when all literal)."""
    out = []
    tokens = list(_inline(_MD.parse(source)))
    kinds = {t.type for t in tokens}
    for bad in ("image", "link_open", "html_inline", "html_block", "heading_open", "bullet_list_open",
                "ordered_list_open", "blockquote_open", "table_open", "hr", "s_open"):
        if bad in kinds:
            out.append(bad)
    plain = "".join(t.content for t in tokens if t.type in ("text", "code_inline"))  # entities decoded
    for rx in (_AUTOLINK_URL, _AUTOLINK_EMAIL):
        for m in rx.finditer(plain):
            if "evil" in m.group(0).lower():
                out.append(f"autolink {m.group(0)!r}")
    if _SHORTCODE.search(plain):
        out.append(f"shortcode {_SHORTCODE.search(plain).group(0)!r}")  # type: ignore[union-attr]
    if _MATH.search(_MATH_SKIP.sub("_", source)):
        out.append("math")
    if _DIRECTIVE.search(source):
        out.append("directive")
    if _ARROW.search(plain):
        out.append("arrow")
    if plain.count("PWN") != plain.count("**PWN**") + plain.count("PWNHEAD"):
        out.append("emphasis")
    if "<b>" in plain:
        out.append("entity")
    return out


HOSTILE = [
    f"![c](http://{EVIL}/x.png)", f"[link](http://{EVIL})", f"<img src=http://{EVIL}/y.png>",
    f"<a href='http://{EVIL}/a'>a</a>", f"<http://{EVIL}/auto>", f"http://{EVIL}/bare", f"HTTPS://{EVIL.upper()}/b",
    f"www.{EVIL}", f"mail me@{EVIL}", ":red[x]", ":violet[x]", ":material/delete_forever:", ":skull:", ":streamlit:",
    "$x^2$", "$$x$$", "**bold**", "_em_", "# heading", "`code`", "``co`de``", "\\*", "\\\\", "~~s~~", "&lt;b&gt;",
    "a -> b <- c <-> d -- e >= f <= g ~= h", "- item\n1. one\n> quote", "a | b\n--|--\nc | d", "x\n===",
    ":small[x] :blue-background[y]", "line one\n\n    indented\n\n---",
]


def shown_text(source: str) -> str | None:
    """The text a reader sees, or None when ``source`` renders anything but plain paragraphs."""
    tokens = list(_inline(_MD.parse(source)))
    if {t.type for t in tokens} - _LITERAL_TOKENS or problems(source):
        return None
    return "".join(t.content for t in tokens if t.type in ("text", "code_block")).replace("\u2060", "")


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_renders_literally(text):
    raw = shown_text(text)
    assert raw is None or _squeeze(raw) != _squeeze(text), f"{text!r} is no test: it renders literally unescaped"
    for md in (components.esc(text), components.esc_block(text)):
        shown = shown_text(md)
        assert shown is not None, (md, problems(md))
        assert _squeeze(shown) == _squeeze(text), (shown, text)
    assert problems(payload("unit")) and problems(components.esc(payload("unit"))) == []


def test_escaped_block_keeps_its_lines():
    md = components.esc_block("first line\nsecond ![i](http://evil.test/i.png)")
    assert md.split("  \n")[0] == "first line" and problems(md) == []


# ---------------------------------------------------------------- a project where every field is hostile


def build_hostile_project(project: Project) -> dict:
    """Real records through the store's own functions, each field holding ``payload(field)``."""
    text = "Intro. " + payload("doc-text") + " The span itself. " + payload("doc-after")
    start = text.index("The span itself.")
    doc = Document(id="d_hostile", uri=payload("doc-uri"), name=payload("doc-name"), filetype="md",
                   size_bytes=len(text), title=payload("doc-title"), text=text)
    with project.transaction() as con:
        docs_store.insert(con, doc, [], author=USER)
        ids = pairs_store.add_pairs(con, [
            NewPair(content=PairContent(instruction=payload(f"instruction{i}"), input=payload(f"input{i}"),
                                        response=payload(f"response{i}"), system=payload(f"system{i}"),
                                        messages=[Message(role="user", content=payload(f"message{i}"))] if i == 2 else []),
                    provenance=Provenance(document_id=doc.id if i == 0 else None, char_start=start,
                                          char_end=start + 17, page=1, generator=payload("generator"),
                                          source_uri=payload(f"source{i}"), source_line=i + 1),
                    tags=[payload("tag")], author=USER)
            for i in range(3)])
    with project.connect() as con:
        for pid in ids:
            pairs_store.set_status(con, pid, Status.needs_fix, author=USER, comment=payload("comment"))
            pairs_store.set_status(con, pid, Status.pending, author=USER, comment=payload("comment2"))
            pairs_store.revise(con, pid, expected_version=3, author=USER, reason=payload("reason"),
                               response=payload(f"revised{pid}"))
        pairs = [pairs_store.get(con, pid) for pid in ids]
        curation.save_signals(con, pl.DataFrame({
            "revision_id": [p.head_revision_id for p in pairs], "pair_id": ids, "name": [payload("signal")] * 3,
            "version": ["1"] * 3, "score": [0.9] * 3, "flagged": [True] * 3, "reason": [payload("signal-reason")] * 3,
            "details": ["{}"] * 3}), [p.head_revision_id for p in pairs], [payload("signal")])
        curation.save_duplicate_clusters(con, pl.DataFrame({
            "cluster_id": ["dc_hostile"] * 3, "kind": [payload("kind")] * 3, "pair_id": ids,
            "revision_id": [p.head_revision_id for p in pairs], "kept_pair_id": [ids[0]] * 3,
            "is_kept": [True, False, False], "similarity": [1.0, 0.95, 0.9]}), [payload("kind")], {})
        sl = slices_store.freeze(con, payload("slice"), [Item(p.id, p.head_revision_id, "eval") for p in pairs],
                                 description=payload("slice-description"), author=USER, split_by="existing")
        errors_store.ensure_categories(con, DEFAULT_CATEGORIES)
        errors_store.add_category(con, CATEGORY_ID, payload("category"), description=payload("cat-desc"), author=USER)
        run_ids, psids = [], []
        for name, good in (("run-a", True), ("run-b", False)):  # B (newest, the pages' default) broke them
            run = runs_store.create(con, base_model=payload("base"), config={}, run_dir=str(project.runs_dir / name),
                                    slice_id=sl.id, slice_hash=sl.content_hash, name=payload(name), author=USER,
                                    status="succeeded")
            psid = runs_store.add_predictions(con, run_id=run.id, model=payload("model"), generation_config={}, rows=[
                {"pair_id": p.id, "revision_id": p.head_revision_id, "prompt": p.instruction,
                 "output": p.response if good else payload("output"), "reference": p.response,
                 "finish_reason": payload("finish")} for p in pairs], slice_id=sl.id, split="eval")
            run_ids.append(run.id)
            psids.append(psid)
        for psid in psids[1:]:
            preds = runs_store.predictions_frame(con, psid)
            errors_store.add_auto_labels(con, pl.DataFrame({
                "prediction_id": preds["prediction_id"], "category_id": [CATEGORY_ID] * preds.height,
                "detector": ["hostile@1"] * preds.height, "confidence": [0.9] * preds.height,
                "evidence": [payload("evidence")] * preds.height}))
        failed = runs_store.create(con, base_model=payload("base-failed"), config={},
                                   run_dir=str(project.runs_dir / "failed"), slice_id=sl.id, name=payload("run-failed"),
                                   author=USER)
    folder = RunFolder(failed.run_dir)  # what the training process writes; the Train page syncs it
    folder.path.mkdir(parents=True)
    folder.update_status(status="failed", error=payload("run-error"))
    return {"pair_ids": ids, "slice": sl, "runs": run_ids, "failed_run": failed.id}


def finished_job(project: Project, kind: str, title: str) -> jobs.Job:
    """A job that ran (a real, harmless command: ``python -m this``) under a hostile title, as the pages
    list them."""
    job = jobs.start(project, kind, [], title=title, author=USER, module="this")
    deadline = time.monotonic() + 60
    while job.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status == "succeeded", job.log()
    return job


# ---------------------------------------------------------------- what AppTest shows

_LITERAL_TYPES = {"code", "text", "divider", "arrow_data_frame", "json", "exception", "arrow_vega_lite_chart",
                  "vega_lite_chart"}
_MARKDOWN_FIELDS = {"body", "label", "help", "text", "content", "options", "title", "caption"}
_PLAIN_OPTION_TYPES = {"selectbox", "multiselect"}  # their options are plain text in the browser


def _strings(msg, plain_options: bool) -> Iterator[tuple[str, str]]:
    for fd, value in msg.ListFields():
        if fd.message_type is not None:
            for v in ([value] if hasattr(value, "ListFields") else value):
                yield from _strings(v, plain_options)
        elif fd.name in _MARKDOWN_FIELDS and not (plain_options and fd.name == "options"):
            for v in ([value] if isinstance(value, str) else value):
                if isinstance(v, str) and v:
                    yield fd.name, v


def rendered_markdown(at: AppTest, root=None) -> list[tuple[str, str, str]]:
    """(element type, field, source) of every string the page hands Streamlit's Markdown renderer."""
    out: list[tuple[str, str, str]] = []
    for node in root if root is not None else at._tree:
        proto = getattr(node, "proto", None)
        ntype = getattr(node, "type", "")
        if proto is None or ntype in _LITERAL_TYPES or not hasattr(proto, "ListFields"):
            continue
        out.extend((ntype, f, s) for f, s in _strings(proto, ntype in _PLAIN_OPTION_TYPES))
    return out


def assert_all_literal(at: AppTest, where: str) -> int:
    """Every Markdown string of the page is safe; returns how many in the main area carried a payload."""
    assert not at.exception, [e.value for e in at.exception]
    seen = rendered_markdown(at)
    bad = [(t, f, s[:160], problems(s)) for t, f, s in seen if problems(s)]
    assert not bad, f"{where}: Markdown from data was rendered:\n" + "\n".join(map(repr, bad))
    return sum(1 for _, _, s in rendered_markdown(at, at.main) if "PWN" in s)


@pytest.fixture
def hostile(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    monkeypatch.setenv("TUNELOOP_USER", USER)  # no accounts: the local admin, named by the environment
    info = build_hostile_project(project)
    info["ingest_job"] = finished_job(project, "ingest", payload("ingest-job-title"))
    info["project"] = project
    return info


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if name != "overview":
        at.switch_page(f"views/{name}.py")
        at.run()
    return at


PAGES = ["overview", "ingest", "review", "duplicates", "explore", "slices", "train", "errors", "compare", "ab", "users"]
SHOWS_DATA_AS_MARKDOWN = {"ingest", "review", "duplicates", "slices", "train", "errors", "compare"}


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_hostile_data_literally(hostile, name):
    state: dict = {}
    if name == "duplicates":  # the live status of a job started from the page (its title is the button label)
        state["du_run_job"] = hostile["ingest_job"].id
    if name == "train":
        state["tr_run"] = hostile["failed_run"]
    at = page(name, **state)
    carried = assert_all_literal(at, name)
    if name in SHOWS_DATA_AS_MARKDOWN:
        assert carried, f"{name}: no hostile string reached the page, so the walk proved nothing"
    sidebar = [s for _, _, s in rendered_markdown(at) if "Signed in as" in s]
    assert sidebar and "\\*\\*PWN\\*\\*" in sidebar[0]


def test_review_history_toast_and_second_pair_are_literal(hostile):
    at = page("review")
    shown = [s for _, _, s in rendered_markdown(at)]
    assert any("comment" in s and "PWN" in s for s in shown), "the History panel shows the decisions' comments"
    at.text_input(key="rv_comment").set_value(payload("my-comment"))
    at.button(key="rv_accept").click().run()
    assert_all_literal(at, "review after accept")
    assert at.toast and "accepted" in at.toast[0].value and "PWN" in at.toast[0].value
    at.button(key="rv_skip").click().run()
    assert_all_literal(at, "review, next pair")
    at.button(key="rv_edit").click().run()
    assert_all_literal(at, "review, editing")


def test_blind_ab_votes_and_results_are_literal(hostile):
    """Blind A/B: hostile prompts and answers while voting, hostile run names and categories in the results."""
    from workflows import ab as ab_workflow

    a, b = hostile["runs"]
    at = page("ab")
    at.selectbox(key="ab_run_a").set_value(a)
    at.selectbox(key="ab_run_b").set_value(b)
    at.run()
    at.button(key="ab_start").click().run()
    assert_all_literal(at, "blind A/B, voting")
    at.text_input(key=next(t.key for t in at.text_input if t.label == "Reason")).set_value(payload("ab-reason"))
    at.button(key="ab_1").click().run()
    assert_all_literal(at, "blind A/B, after a vote")
    assert ab_workflow.progress(hostile["project"], a, b, USER)[0] == 1
    at.toggle(key="ab_show_results").set_value(True).run()
    assert assert_all_literal(at, "blind A/B, results"), "the results show no hostile run name"


def test_error_labels_and_corrections_are_literal(hostile):
    at = page("errors")
    assert_all_literal(at, "errors")
    at.button(key=f"er_ok_{CATEGORY_ID}").click().run()
    assert_all_literal(at, "errors after confirming")
    assert at.toast and "PWN" in at.toast[0].value
    at.selectbox(key=f"er_change_{at.session_state['er_pred']}_{CATEGORY_ID}").set_value("incorrect").run()
    assert_all_literal(at, "errors after changing the category")
    next(t for t in at.text_area if t.label.startswith("The right answer")).set_value(payload("fix"))
    next(t for t in at.text_input if t.label == "Reason").set_value(payload("fix-reason"))
    next(b for b in at.button if b.label == "Save correction").click().run()
    assert_all_literal(at, "errors after a correction")


def test_slice_names_in_messages_are_literal(hostile):
    at = page("explore")
    for _ in range(2):  # saved, then the same again: each message names the slice
        at.text_input(key="ex_slice_name").set_value(payload("new-slice"))
        at.text_input(key="ex_slice_desc").set_value(payload("new-slice-desc"))
        at.selectbox(key="ex_slice_split").set_value("pair")
        at.button(key="ex_slice_save").click().run()
        assert_all_literal(at, "explore after saving a slice")
    assert at.success or at.error


def test_a_new_account_name_is_literal(hostile):
    at = page("users")
    at.text_input(key="us_name").set_value(USER[:60])
    at.selectbox(key="us_role").set_value("admin")
    at.text_input(key="us_pw").set_value("correct horse")
    at.button(key="us_add_btn").click().run()
    assert_all_literal(at, "users after adding an account")
    assert at.success and "PWN" in at.success[0].value


def test_opening_a_hostile_folder_is_literal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNELOOP_PROJECT", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="op_folder").set_value(str(tmp_path / "![f](http:" / "evil.test" / "f.png) :skull: $f$"))
    at.button(key="op_open").click().run()
    assert_all_literal(at, "open project")
    assert at.error


# ---------------------------------------------------------------- the real browser

@pytest.fixture
def hostile_server(project, tmp_path):
    needs_a_browser()
    info = build_hostile_project(project)
    with running_app(project, tmp_path, user=USER) as url:
        yield {"url": url, **info}


@pytest.mark.browser
def test_hostile_project_in_a_real_browser_fetches_nothing_and_links_nowhere(hostile_server):
    from playwright.sync_api import expect, sync_playwright

    url = hostile_server["url"]
    own = url.split("//", 1)[1]
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        page.on("request", lambda r: requests.append(r.url))

        def check(where: str) -> None:
            page.wait_for_timeout(1500)  # let late renders (toasts, fragments, charts) land
            links = page.eval_on_selector_all(f'a[href*="{EVIL}"]', "els => els.map(e => e.outerHTML)")
            images = page.eval_on_selector_all(f'img[src*="{EVIL}"]', "els => els.map(e => e.outerHTML)")
            assert not links and not images, (where, links, images)
            assert page.locator(".katex").count() == 0, where
            assert page.locator('[data-testid="stIconMaterial"]', has_text="delete_forever").count() == 0, where
            assert "\U0001f480" not in page.content(), where  # :skull:
            outside = [u for u in requests if not u.startswith(("data:", "blob:")) and own not in u.split("/")[2]]
            assert not outside, (where, outside)

        for name, heading in (("", "Overview"), ("/slices", "Slices"), ("/train", "Train"), ("/errors", "Errors"),
                              ("/compare", "Compare")):
            page.goto(url + name)
            expect(page.get_by_role("heading", name=heading)).to_be_visible()
            check(heading)

        page.goto(url + "/review")
        expect(page.get_by_role("heading", name="Review")).to_be_visible()
        page.get_by_text("History:").click()  # the decisions' authors and comments
        expect(page.get_by_text("comment2").first).to_be_visible()
        check("Review")
        page.get_by_role("button", name="Accept").click()
        expect(page.get_by_text("accepted:").first).to_be_visible()  # the toast quotes the instruction
        check("Review toast")
        browser.close()
    assert any(own in u for u in requests)
