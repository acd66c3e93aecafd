"""Near duplicates that hold (issue 14): boilerplate discount, short texts, no chaining, keep rules,
conflicts, suggested thresholds. Small planted sets built here; real DuckDB projects in tmp_path."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis import dedupe as dd
from analysis.curate import DedupeConfig, dedupe, dedupe_defaults, last_near_report, save_dedupe_defaults
from store import curation as cur
from store import pairs as pairs_store
from store.records import NewPair, PairContent, Status
from tests import test_app_pages as pages
from tuneloop.cli import app as cli

T0 = dt.datetime(2026, 1, 1)
HEADER = ("You are an assistant that can call tools. Available tools: search_flights(origin, destination, date) "
          "finds flights; get_weather(city, date) returns the forecast; book_table(restaurant, people, time) "
          "reserves a table. Answer with one JSON tool call and nothing else.")
RNG = np.random.default_rng(7)
VOCAB = ["".join(RNG.choice(list("abcdefghijklmnopqrstuvwxyz"), int(RNG.integers(4, 9)))) for _ in range(400)]


def frame(prompts: list[str], responses: list[str] | None = None, status: list[str] | None = None) -> pl.DataFrame:
    n = len(prompts)
    return pl.DataFrame({
        "pair_id": [f"p_{i:03d}" for i in range(n)], "revision_id": [f"r_{i:03d}" for i in range(n)],
        "instruction": prompts, "input": [""] * n, "response": responses or ["ok"] * n,
        "status": status or ["pending"] * n, "created_at": [T0 + dt.timedelta(minutes=i) for i in range(n)],
    })


def requests(n: int, words: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[str(w) for w in rng.choice(VOCAB, words, replace=False)] for _ in range(n)]


def clusters_of(members: pl.DataFrame) -> set[frozenset[str]]:
    return {frozenset(g["pair_id"].to_list()) for _, g in members.group_by("cluster_id")}


def planted(words: int, inline: bool) -> tuple[pl.DataFrame, set[frozenset[str]]]:
    """30 unrelated requests behind the shared header, plus a one-word change of the first five."""
    base = requests(30, words, seed=words)
    dups = []
    for k in range(5):
        w = list(base[k])
        w[words // 2] = VOCAB[-1 - k]
        dups.append(w)
    sep = " " if inline else "\n"
    df = frame([HEADER + sep + " ".join(w) for w in base + dups])
    return df, {frozenset({f"p_{k:03d}", f"p_{30 + k:03d}"}) for k in range(5)}


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize("words", [5, 12, 20, 45])
def test_one_word_changes_are_found_behind_a_shared_header_and_nothing_else(words, inline):
    df, truth = planted(words, inline)
    members, templates = dd.near_lexical(df, field="prompt")
    assert clusters_of(members) == truth
    assert templates.height >= 1 and templates["share"][0] == 1.0
    assert "available tools" in templates["text"][0]


def test_the_old_rule_chains_the_header_rows_and_the_new_one_does_not():
    df, truth = planted(5, inline=False)
    old = dd.near_lexical_clusters(df, dd.MinHashParams(boilerplate_share=2.0, short_words=0, one_edit=False),
                                   field="prompt")
    assert old.height > 10  # the shared header makes unrelated rows "near duplicates"
    assert clusters_of(dd.near_lexical_clusters(df, field="prompt")) == truth


def test_short_prompts_that_differ_in_two_words_are_not_duplicates():
    base = requests(40, 6, seed=3)
    other = [list(w) for w in base[:10]]
    for k, w in enumerate(other):
        w[1], w[4] = f"novel{k}", f"other{k}"
    df = frame([" ".join(w) for w in base + other])
    assert dd.near_lexical_clusters(df, field="prompt").height == 0


def test_a_chain_of_one_word_edits_is_not_one_cluster():
    w = requests(1, 16, seed=5)[0]
    chain = []
    for k in range(8):  # each text replaces one more word of the first
        w = list(w)
        w[k * 2] = VOCAB[-100 - k]
        chain.append(" ".join(w))
    df = frame(chain)
    members = dd.near_lexical_clusters(df, field="prompt")
    sizes = members.group_by("cluster_id").len()["len"]
    assert members.height and sizes.max() == 2
    words = {r["pair_id"]: set(r["instruction"].split()) for r in df.iter_rows(named=True)}
    for r in members.filter(~pl.col("is_kept")).iter_rows(named=True):  # every member matches its kept one
        assert len(words[r["pair_id"]] ^ words[r["kept_pair_id"]]) <= 2


def test_cluster_size_is_capped():
    w = requests(1, 40, seed=9)[0]
    copies = [" ".join(w[:k] + [VOCAB[-200 - k]] + w[k + 1:]) for k in range(12)]
    members = dd.near_lexical_clusters(frame(copies), dd.MinHashParams(max_cluster=4, threshold=0.8), field="prompt")
    assert members.group_by("cluster_id").len()["len"].max() == 4


def test_field_chooses_the_compared_text():
    reqs = [" ".join(w) for w in requests(6, 25, seed=11)]
    answer = " ".join(requests(1, 25, seed=12)[0])
    df = frame(reqs, responses=[answer, answer] + [f"answer {v}" for v in VOCAB[:4]])
    assert clusters_of(dd.near_lexical_clusters(df, field="response")) == {frozenset({"p_000", "p_001"})}
    assert dd.near_lexical_clusters(df, field="prompt").height == 0
    with pytest.raises(ValueError, match="field"):
        dd.near_lexical_clusters(df, field="answer")


@pytest.mark.parametrize(("keep", "kept"), [
    ("accepted", "p_002"), ("first", "p_000"), ("longest", "p_001"), ("quality", "p_003"),
])
def test_keep_rule_picks_the_kept_member(keep, kept):
    df = frame(["Reset my password"] * 4, responses=["Open settings", "Open settings.  ", "open SETTINGS", "Open settings!"],
               status=["pending", "pending", "accepted", "pending"])
    df = df.with_columns(quality_penalty=pl.Series([2.0, 1.0, 3.0, 0.0]))
    m = dd.exact_clusters(df, "exact_full", keep)
    assert m.filter("is_kept")["pair_id"].to_list() == [kept]


def test_rejected_is_never_kept_and_ties_go_to_the_earliest():
    df = frame(["Same words here"] * 3, responses=["a", "a", "a"], status=["rejected", "pending", "pending"])
    for keep in dd.KEEP_RULES:
        assert dd.exact_clusters(df, "exact_full", keep).filter("is_kept")["pair_id"].to_list() == ["p_001"]


def test_explain_lists_shared_and_differing_words():
    e = dd.explain("Book a table at Luigi for two", "book a table at Mario for two!")
    assert e["only_kept"] == ["luigi"] and e["only_this"] == ["mario"]
    assert e["shared"] == ["book", "a", "table", "at", "for", "two"]


def test_histogram_suggests_a_threshold_in_the_valley():
    df, _ = planted(30, inline=False)
    hist, best = dd.similarity_histogram(df, field="prompt")
    assert hist["pairs"].sum() >= 5 and best is not None and 0.5 <= best < 0.95
    assert dd.similarity_histogram(frame(["one"]))[1] is None


# --------------------------------------------------------------------------- store, job, CLI, settings


def add(con, instruction: str, response: str, status: Status = Status.pending) -> str:
    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=instruction, response=response),
                                               status=status)])[0]


def test_same_prompt_with_another_answer_is_a_conflict_and_not_marked(project):
    with project.connect() as con:
        a = add(con, "What is the capital of Australia?", "Canberra.", Status.accepted)
        b = add(con, "what is the capital of australia", "Sydney.")
        c = add(con, "What is the capital of Australia?!", "canberra")
    report = dedupe(project, DedupeConfig(), author="t")
    assert report["conflict"] == {"clusters": 1, "members": 3}
    assert report["exact_full"]["duplicates"] == 1 and report["marked_now"] == 1
    with project.connect() as con:
        assert pairs_store.get(con, b).status == Status.pending  # a conflict is for a person
        assert (pairs_store.get(con, c).status, pairs_store.get(con, c).duplicate_of) == (Status.duplicate, a)
        assert {k for k, _ in cur.duplicate_kinds(con)} == {"exact_full", "conflict"}
    assert dedupe(project, DedupeConfig(), author="t")["marked_now"] == 0


def test_near_pass_reports_templates_and_keeps_by_quality(project):
    with project.connect() as con:
        ids = [add(con, HEADER + "\n" + " ".join(w), "ok") for w in requests(24, 10, seed=21)]
        w = requests(24, 10, seed=21)[0]
        w[3] = "zebra"
        twin = add(con, HEADER + "\n" + " ".join(w), "ok")
        cur.save_signals(con, pl.DataFrame({
            "revision_id": [pairs_store.get(con, ids[0]).head_revision_id], "pair_id": [ids[0]], "name": ["pii"],
            "version": ["1"], "score": [1.0], "flagged": [True], "reason": ["x"], "details": ["{}"]}),
            [pairs_store.get(con, ids[0]).head_revision_id], ["pii"])
    report = dedupe(project, DedupeConfig(exact=False, near=True, keep="quality"), author="t")
    assert report["near_lexical"]["clusters"] == 1 and report["near_lexical"]["largest"] == 2
    assert report["templates"] and report["templates"][0]["share"] == 1.0
    with project.connect() as con:
        m = cur.duplicate_members(con, ["near_lexical"])
    assert set(m["pair_id"]) == {ids[0], twin} and m["kept_pair_id"][0] == twin  # ids[0] has a quality flag
    assert last_near_report(project)["templates"][0]["text"].startswith("you are an assistant")


def test_settings_are_validated_merged_and_used_as_cli_defaults(project):
    assert dedupe_defaults(project) == {}
    save_dedupe_defaults(project, {"near_threshold": 0.7, "keep": "longest"}, author="t")
    assert save_dedupe_defaults(project, {"field": "prompt"}, author="t") == {
        "near_threshold": 0.7, "keep": "longest", "field": "prompt"}
    with pytest.raises(ValueError):
        save_dedupe_defaults(project, {"keep": "newest"}, author="t")
    with pytest.raises(ValueError):
        save_dedupe_defaults(project, {"colour": "red"}, author="t")
    with project.connect() as con:
        for w in requests(6, 8, seed=31):
            add(con, " ".join(w), "ok")
    out = CliRunner().invoke(cli, ["dedupe", "--near", "--json", "--project", str(project.root)],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output[out.output.index("{"):])
    assert rep["keep"] == "longest"
    with project.connect() as con:
        (cl,) = cur.clusters(con, "near_lexical", limit=5) or [None]
    assert cl is None  # nothing near-duplicate among unrelated rows


def test_cli_suggest_prints_a_histogram_and_saves_the_threshold(project):
    with project.connect() as con:
        base = requests(30, 30, seed=41)
        for w in base:
            add(con, " ".join(w), "ok")
        for k in range(6):
            w = list(base[k])
            w[5], w[20] = "alpha", "omega"
            add(con, " ".join(w), "ok")
    out = CliRunner().invoke(cli, ["dedupe", "--suggest", "--field", "prompt", "--project", str(project.root)],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "suggested --threshold" in out.output and "#" in out.output
    saved = dedupe_defaults(project)
    assert saved["field"] == "prompt" and 0.5 <= saved["near_threshold"] < 0.95


# --------------------------------------------------------------------------- the Duplicates page

def test_duplicates_page_shows_templates_conflicts_and_why_a_pair_matched(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    p = project
    with p.connect() as con:
        reqs = requests(30, 10, seed=51)
        ids = [add(con, HEADER + "\n" + " ".join(w), "ok") for w in reqs]
        w = list(reqs[0])
        w[4] = "zebra"
        twin = add(con, HEADER + "\n" + " ".join(w), "ok")
        add(con, "Is <b>this</b> the capital?", "Yes.")
        add(con, "is <b>this</b> the capital", "No.")
    report = dedupe(p, DedupeConfig(near=True), author="t")
    assert report["near_lexical"]["clusters"] == 1  # the twin; the conflict pair is listed once, as a conflict
    at = pages.app("duplicates")
    texts = [t.value for t in at.text]
    assert any(t.startswith("you are an assistant that can call tools") for t in texts)  # plain text, not Markdown
    assert any("only in this pair: zebra" in t and reqs[0][4] in t for t in texts)
    assert any("Jaccard to the kept pair" in c.value for c in at.caption)
    at.selectbox(key="du_kind").set_value("conflict").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("same prompt, different responses" in c.value for c in at.caption)
    assert not any("<b>" in m.value and "\\<" not in m.value for m in at.markdown)  # user text is escaped
    assert ids and twin
