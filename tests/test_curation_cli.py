"""The curation commands end to end through the real CLI on a real project folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from store import pairs as pairs_store
from store.records import NewPair, PairContent, Provenance, Status
from tuneloop.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def filled(project):
    rows = [
        ("How do I reset my password?", "Open settings and choose Reset.", "d_1"),
        ("how do I reset my password", "open settings and choose reset", "d_2"),  # exact variant
        ("Contact support", "Write to jane.doe@fastmail.fm", "d_3"),  # pii
        ("Explain gravity.", "", "d_4"),  # empty response
        ("Describe the main causes of the french revolution and its effect on european politics", "Many.", "d_5"),
        ("Describe the main causes of the french revolution and its effect on european history", "Several.", "d_6"),
    ]
    with project.connect() as con:
        for i, (q, a, d) in enumerate(rows):
            pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=q, response=a),
                                                provenance=Provenance(document_id=d),
                                                status=Status.accepted if i != 1 else Status.pending)])
    return project


def test_every_command_has_help_with_an_example():
    for cmd in (["dedupe"], ["signals"], ["embed"], ["cluster"], ["label-noise"], ["search"], ["splits", "check"],
                ["splits", "create"]):
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0 and "Example: tuneloop" in r.output, cmd


def test_dedupe_signals_stats_and_splits_via_cli(filled):
    p = str(filled.root)
    r = invoke("dedupe", "--exact", "--near", "--threshold", "0.6", "--json", "--project", p)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)  # stdout holds the JSON alone; progress lines go to stderr
    assert rep["exact_full"]["duplicates"] == 1 and rep["marked_now"] == 1
    assert "dedupe: 3/3 stages (100%)" in r.stderr
    assert rep["near_lexical"]["clusters"] == 1
    again = json.loads(invoke("dedupe", "--exact", "--near", "--threshold", "0.6", "--json", "--project", p).stdout)
    assert again["marked_now"] == 0

    r = invoke("signals", "--show", "pii", "--project", p)
    assert r.exit_code == 0 and "pii" in r.output and "jane" in r.output  # the pair text is shown, not the reason
    stats = json.loads(invoke("stats", "--json", "--project", p).output)
    assert stats["duplicates_marked"] == 1
    assert stats["duplicate_clusters_by_kind"]["exact_full"] == {"clusters": 1, "members": 2}
    assert stats["signals_flagged"]["pii"] == 1 and stats["signals_flagged"]["empty_response"] == 1
    assert stats["pairs_flagged"] >= 2

    r = invoke("splits", "create", "clean-v1", "--where", "status=accepted and clean=pii,empty_response",
               "--split", "0.5", "--seed", "0", "--project", p)
    assert r.exit_code == 0, r.output
    r = invoke("splits", "check", "--slice", "clean-v1", "--project", p)
    assert r.exit_code == 0 and "no cross-split leaks" in r.output
    # a slice split by pair can put the two near-duplicates on both sides: the check reports it
    leaks = 0
    for seed in range(6):
        invoke("slice", "create", f"pairwise{seed}", "--where", "status=accepted", "--split", "0.5", "--seed", str(seed),
               "--split-by", "pair", "--project", p)
        leaks += invoke("splits", "check", "--slice", f"pairwise{seed}", "--project", p).exit_code
    assert leaks >= 1


def test_bad_input_gives_one_clean_line(filled):
    r = invoke("signals", "--only", "nope", "--project", str(filled.root))
    assert r.exit_code == 2 and "unknown detector" in r.output
    r = invoke("dedupe", "--near", "--threshold", "1.5", "--project", str(filled.root))
    assert r.exit_code == 2 and "threshold" in r.output
