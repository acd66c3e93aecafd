"""Dataset import and export: every format round-trips; bad input is reported, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ingest.datasets import detect_format, parse_mapping
from ingest.exporter import EXPORT_FORMATS, export_slice
from ingest.importer import import_file
from store import pairs, slices
from store.db import Project
from store.records import SliceFilter
from store.stats import project_stats

ALPACA = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {"instruction": "Translate to German.", "input": "good morning", "output": "Guten Morgen", "tags": ["mt"]},
    {"instruction": "Sum the numbers.", "input": "2, 3", "output": "5", "system": "Be terse."},
]
MESSAGES = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "greet me"},
                  {"role": "assistant", "content": "Ahoy!"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "times 3?"}, {"role": "assistant", "content": "12"}]},
]
SHAREGPT = [
    {"conversations": [{"from": "human", "value": "Capital of Peru?"}, {"from": "gpt", "value": "Lima"}]},
    {"conversations": [{"from": "system", "value": "Short answers."}, {"from": "human", "value": "Largest ocean?"},
                       {"from": "gpt", "value": "Pacific"}, {"from": "human", "value": "Smallest?"},
                       {"from": "gpt", "value": "Arctic"}]},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def contents(project: Project) -> set[tuple]:
    with project.connect() as con:
        df = pairs.frame(con)
    return {(r["pair_id"], r["instruction"], r["input"], r["response"], r["system"], r["messages"])
            for r in df.iter_rows(named=True)}


@pytest.mark.parametrize(
    "fmt,rows",
    [("alpaca", ALPACA), ("messages", MESSAGES), ("sharegpt", SHAREGPT)],
)
def test_import_detects_format(project, tmp_path, fmt, rows):
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    assert detect_format(f) == fmt
    r = import_file(project, f)
    assert (r.format, r.rows, r.new, r.skipped, r.fatal) == (fmt, len(rows), len(rows), 0, None)


def test_alpaca_json_array_and_fields(project, tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps(ALPACA), encoding="utf-8")
    assert import_file(project, f).new == 3
    with project.connect() as con:
        got = {p.instruction: p for p in pairs.query(con, limit=10)}
    assert got["Translate to German."].input == "good morning"
    assert got["Translate to German."].tags == ["mt"]
    assert got["Sum the numbers."].system == "Be terse."
    assert got["Name a primary colour."].provenance.source_line == 1
    assert got["Name a primary colour."].provenance.generator == "import:alpaca"


def test_multi_turn_kept_as_messages(project, tmp_path):
    import_file(project, write_jsonl(tmp_path / "m.jsonl", MESSAGES))
    with project.connect() as con:
        got = {p.instruction: p for p in pairs.query(con, limit=10)}
    multi = got["2+2?"]
    assert multi.response == "12" and len(multi.messages) == 4
    single = got["greet me"]
    assert single.system == "You are a pirate." and single.messages == []


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
@pytest.mark.parametrize("source", ["alpaca", "messages", "sharegpt"])
def test_export_then_import_gives_same_pairs(project, template_project, tmp_path, fmt, source):
    rows = {"alpaca": ALPACA, "messages": MESSAGES, "sharegpt": SHAREGPT}[source]
    if fmt in ("messages", "openai", "sharegpt", "prompt-completion") and source == "alpaca":
        rows = [r for r in rows if not r["input"]]  # instruction+input join into one user turn
    import_file(project, write_jsonl(tmp_path / "in.jsonl", rows))
    with project.connect() as con:
        s = slices.create(con, "all", SliceFilter(), eval_fraction=0.34, split_by="pair", seed=1)
    out = tmp_path / f"out.{'parquet' if fmt == 'parquet' else 'jsonl'}"
    assert export_slice(project, "all", fmt, out) == len(rows)
    fresh = Project(tmp_path / "fresh")
    fresh.init()
    r = import_file(fresh, out, "parquet" if fmt == "parquet" else fmt)
    assert r.fatal is None and r.skipped == 0, r.errors
    assert contents(fresh) == contents(project)
    # the split travels with the export
    with fresh.connect() as con:
        df = pairs.frame(con)
    assert df.filter(pl.col("split") == "eval").height == s.n_eval


def test_export_carries_provenance(project, tmp_path):
    import_file(project, write_jsonl(tmp_path / "in.jsonl", ALPACA))
    with project.connect() as con:
        slices.create(con, "s", SliceFilter(), eval_fraction=0.0, split_by="pair")
    out = tmp_path / "o.jsonl"
    export_slice(project, "s", "messages", out)
    rec = json.loads(out.read_text().splitlines()[0])
    for key in ("pair_id", "revision_id", "split", "source_uri", "source_line", "generator", "tags", "weight"):
        assert key in rec
    assert rec["source_uri"].endswith("in.jsonl")


def test_malformed_lines_reported_rest_imported(project, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(
        '{"instruction": "ok 1", "output": "a"}\n'
        '{"instruction": 42, "output": "b"}\n'
        "this is not json\n"
        '{"instruction": "no output"}\n'
        '{"instruction": "ok 2", "output": "c", "split": "banana"}\n'
        '{"instruction": "ok 3", "output": "d"}\n',
        encoding="utf-8",
    )
    r = import_file(project, f)
    assert (r.rows, r.new, r.skipped) == (6, 2, 4)
    msgs = [e.message for e in r.errors]
    assert [e.line for e in r.errors] == [2, 3, 4, 5]
    assert "bad.jsonl:2: field 'instruction': is int" in msgs[0]
    assert "invalid JSON" in msgs[1]
    assert "field 'output': missing" in msgs[2]
    assert "field 'split'" in msgs[3]
    assert not r.ok
    with project.connect() as con:
        assert pairs.count(con) == 2
        batches = con.execute("SELECT n_rows, n_new, n_skipped FROM import_batches").fetchall()
    assert batches == [(6, 2, 4)]


def test_reimport_is_noop(project, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    first = import_file(project, f)
    with project.connect() as con:
        before = project_stats(con)
    again = import_file(project, f)
    with project.connect() as con:
        after = project_stats(con)
    assert (first.new, again.new, again.existing) == (3, 0, 3)
    assert before["pairs"] == after["pairs"] and before["revisions"] == after["revisions"]


@pytest.mark.parametrize(
    "name,data,expected",
    [
        ("empty.jsonl", b"", "the file is empty"),
        ("blank.jsonl", b"\n\n  \n", "the file is empty"),
        ("latin1.jsonl", '{"instruction": "caf\xe9", "output": "y"}\n'.encode("latin-1"), "Latin-1"),
        ("data.txt", b"hello", "pass --format"),
        ("odd.jsonl", b'{"question": "x", "answer": "y"}\n', "expected instruction/output"),
        ("header.csv", b"instruction,output\n", "no records"),
    ],
)
def test_unreadable_files_one_clear_line(project, tmp_path, name, data, expected):
    f = tmp_path / name
    f.write_bytes(data)
    r = import_file(project, f)
    assert r.fatal is not None and expected in r.fatal, r.fatal
    assert "\n" not in r.fatal
    with project.connect() as con:
        assert pairs.count(con) == 0


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_without_a_byte_order_mark_import(project, tmp_path, codec):
    """With a byte-order mark: tests/test_import_hostile.py; without one the NUL bytes tell."""
    f = tmp_path / "wide.jsonl"
    f.write_bytes('{"instruction": "caf\u00e9 hours?", "output": "8:00"}\n{"instruction": "b", "output": "c"}\n'
                  .encode(codec))
    r = import_file(project, f)
    assert r.fatal is None and r.new == 2, (r.fatal, r.errors)
    with project.connect() as con:
        assert {p.instruction for p in pairs.query(con)} == {"caf\u00e9 hours?", "b"}


def test_latin1_with_encoding_option(project, tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes('{"instruction": "caf\xe9?", "output": "oui"}\n'.encode("latin-1"))
    r = import_file(project, f, encoding="latin-1")
    assert r.new == 1
    with project.connect() as con:
        assert pairs.query(con)[0].instruction == "café?"


def test_failed_file_leaves_store_unchanged(project, tmp_path):
    """A fatal error after valid lines (bad encoding at line 3) imports nothing of that file."""
    import_file(project, write_jsonl(tmp_path / "good.jsonl", ALPACA[:1]))
    f = tmp_path / "late.jsonl"
    f.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
                  + '{"instruction": "\xe9", "output": "e"}\n'.encode("latin-1"))
    r = import_file(project, f)
    assert r.fatal and "late.jsonl:3" in r.fatal
    with project.connect() as con:
        assert pairs.count(con) == 1
        assert con.execute("SELECT count(*) FROM import_batches").fetchall()[0][0] == 1


def test_csv_mapping(project, tmp_path):
    f = tmp_path / "intents.csv"
    f.write_text('text,category\n"my card, it is lost",lost_card\nwhere is my card,card_arrival\n', encoding="utf-8")
    r = import_file(project, f, mapping=parse_mapping("instruction=text,response=category"))
    assert (r.new, r.skipped) == (2, 0)
    with project.connect() as con:
        got = {p.instruction: p.response for p in pairs.query(con)}
    assert got == {"my card, it is lost": "lost_card", "where is my card": "card_arrival"}
    bad = import_file(project, f, mapping=parse_mapping("instruction=question,response=category"))
    assert "column(s) question not found" in bad.fatal and "text, category" in bad.fatal


def test_parquet_with_mapping(project, tmp_path):
    f = tmp_path / "d.parquet"
    pl.DataFrame({"q": ["a?", "b?"], "a": ["A", "B"]}).write_parquet(f)
    assert import_file(project, f, mapping={"instruction": "q", "response": "a"}).new == 2
    bad = import_file(project, f, mapping={"instruction": "nope", "response": "a"})
    assert "nope" in bad.fatal
    # other column names and no --map: one message for the file naming its columns and --map, not
    # "field 'instruction': missing" on every row
    unmapped = import_file(project, f)
    assert unmapped.new == 0 and "no column mapping; the columns are q, a. Pass --map instruction=q," in unmapped.fatal


def test_bad_mapping_spec():
    with pytest.raises(ValueError, match="expected instruction, input, response"):
        parse_mapping("question=text")
