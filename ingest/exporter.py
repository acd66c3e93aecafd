"""Export a frozen slice to a training format, with provenance columns and the split.

alpaca / messages / prompt-completion are JSONL (TRL, LLaMA-Factory and axolotl read them);
parquet carries the alpaca columns plus provenance. Every format carries, beside the provenance
columns, the exported revision's rating: ``rating`` (the mean of its reviewers' latest 1-5
ratings) and ``n_ratings`` (how many reviewers rated it). The file is written to a temporary name
and renamed, so a failed export never leaves a half-written file behind.

One schema per format. Every export of a format has the same columns with the same types,
whatever its rows hold, so per-split files load together
(``datasets.load_dataset("json", data_files={"train": ..., "test": ...})`` types each column from
the first file and casts the others to it: a column that is all null or all ``[]`` in one split
would be typed null there and the load fails). ``uniform_records`` makes that so, generically,
for any format ``export_record`` writes:

* the format's columns are found by exporting two probe rows built from the slice frame's
  schema: one with every field filled (a system prompt, a multi-turn conversation, a tag, a value
  in every provenance column), one with none of them. A column the full probe has is in every
  record; one the empty probe lacks or leaves empty (``None``, ``""``, ``[]``) is *optional*;
* nothing is null: a missing or null value is written as its type's default: text ``""``,
  integer ``-1`` (unknown ``page``, ``char_start``, ``char_end``, ``source_line``: real values
  are never negative), float ``0.0`` (``rating`` 0.0 with ``n_ratings`` 0 is *unrated*: real
  means are 1-5), boolean ``false``; integers in a float column are written as floats;
* JSONL has no schema, so an optional list or object, which can be empty in a whole split, is
  written as text: a list of strings comma-joined (``tags``: ``"faq,billing"``, ``""`` when
  none; what ``tuneloop import`` reads back), anything else as its JSON text, ``"[]"`` when
  empty (``tools`` of the messages format: TRL's SFTTrainer ``json.loads`` a text ``tools``).
  Two exceptions: alpaca's ``messages`` is ``""`` for a single-turn pair (the JSON text of the
  whole conversation for a multi-turn one: import reads ``""`` as single-turn), and openai's
  ``tools`` stays a list (OpenAI's fine-tuning upload wants an array; an openai export's turns
  differ in keys with tool calls anyway: see the known limitation below).
  Lists every record fills (``messages``, ``prompt``, ``completion``, ``conversations``) stay
  lists of objects, so TRL reads ``messages`` / ``prompt`` / ``completion`` as conversational;
* parquet is written with one explicit schema: lists stay lists (``tags`` list<string>,
  ``messages`` list<struct<role, content, tool_calls, weight, tool_call_id, name>>, every turn
  with every field a stored turn can have, null where it has none, empty for a single-turn pair),
  ``tools`` as the tools' JSON text (a tool's parameters are free-form JSON schema), objects as
  JSON text. So tool-calling data split across files loads together from parquet.

Known limitation, JSONL formats whose turns are objects (openai, messages, prompt-completion, and
sharegpt for turn weights): a split whose turns have tool calls, tool results or turn weights and a
split whose turns have none differ in their turns' keys. ``datasets`` (5.2) types the turns from the
first file of ``data_files`` (its first split) and casts the other files to that: with the tool split
first the other loads (a struct with fewer keys casts to one with more; datasets types turns whose
keys differ within a file as Json); with the tool-free split first the load fails with
``TypeError: Couldn't cast array of type struct<role: string, content: string, tool_calls: list<...>,
tool_call_id: string, weight: double> to {'role': Value('string'), 'content': Value('string')}``.
Writing every key in every turn does not help: a key that is null (or ``[]``) throughout a file is
typed null, and ``Couldn't cast array of type list<struct<...>> to null`` (``double to null`` for a
weight); no value a tool-free split could hold types ``tool_calls`` or ``weight`` without inventing a
call or a weight (OpenAI's weight is an optional 0 or 1, not nullable), and tool calls as JSON text
would break the chat templates that read them. The same holds for openai's ``tools`` (``[]``, typed
list<null>, in a split without tools). So export such a slice whole (one file, with its ``split``
column), or as parquet, or load the split with tool calls first
(tests/interop/test_export_schema.py::test_tool_calls_in_one_split_only pins this).

Left to the reader: JSON type inference itself. A free-text column whose every value in one split
is an ISO date (``"2024-05-01"``) is read by pyarrow as a timestamp; parquet does not have that.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.datasets import export_record, write_jsonl
from store import ratings, slices
from store.db import Project

EXPORT_FORMATS = ("alpaca", "messages", "openai", "sharegpt", "prompt-completion", "parquet")

# Column kinds, from a value of the full probe.
_TEXT, _INT, _FLOAT, _BOOL, _STR_LIST, _LIST, _OBJECT = "text", "int", "float", "bool", "str_list", "list", "object"
_DEFAULTS: dict[str, Any] = {_TEXT: "", _INT: -1, _FLOAT: 0.0, _BOOL: False}
# (format, column) kept as the native list in JSONL; columns written "" (not "[]") when empty
_NATIVE_IN_JSONL = {("openai", "tools")}
_BLANK_WHEN_EMPTY = {"messages"}
_PROBE_TURNS = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
# parquet has a schema: its turns carry every field a stored turn can have (tool calls, tool results,
# turn weights), null where a turn has none; its ``tools`` column is the tools' JSON text
_PROBE_TOOL_TURNS = [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}], "weight": 1.5},
    {"role": "tool", "content": "r1", "tool_call_id": "c1", "name": "f"},
    {"role": "assistant", "content": "a1"}]
_PROBE_TOOLS = [{"type": "function", "function": {"name": "f", "description": "x", "parameters": {}}}]


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return _BOOL
    if isinstance(v, int):
        return _INT
    if isinstance(v, float):
        return _FLOAT
    if isinstance(v, list):
        return _STR_LIST if all(isinstance(x, str) for x in v) else _LIST
    if isinstance(v, dict):
        return _OBJECT
    return _TEXT


def _probe_value(dtype: pl.DataType) -> Any:
    if dtype == pl.Boolean:
        return True
    if dtype.is_integer():
        return 1
    if dtype.is_float():
        return 1.5
    if isinstance(dtype, pl.List):
        return ["x"]
    return "x"


class Columns:
    """A format's columns: kind per column (in the full probe's order) and which are optional."""

    def __init__(self, fmt: str, schema: pl.Schema) -> None:
        self.fmt = fmt
        full = {name: _probe_value(dtype) for name, dtype in schema.items()}
        full.update(system="x", messages=_PROBE_TURNS, tags=["x"])
        if fmt == "parquet":
            full.update(messages=_PROBE_TOOL_TURNS, tools=orjson.dumps(_PROBE_TOOLS).decode())
        empty: dict[str, Any] = {name: None for name in schema}
        empty.update(instruction="x", input="", response="x", system="", messages=None, tags=[])
        self.full = export_record(fmt, full)
        blank = export_record(fmt, empty)
        self.kinds = {k: _kind(v) for k, v in self.full.items()}
        self.optional = {k for k in self.full if blank.get(k) in (None, "", [], {})}

    def encoded_as_text(self, col: str) -> bool:
        """In JSONL: an optional list or object is written as text (see the module docstring)."""
        return (col in self.optional and self.kinds[col] in (_STR_LIST, _LIST, _OBJECT)
                and (self.fmt, col) not in _NATIVE_IN_JSONL)

    def arrow_schema(self) -> pa.Schema:
        def typ(k: str, v: Any) -> pa.DataType:
            kind = self.kinds[k] if k else _kind(v)
            if kind == _STR_LIST:
                return pa.list_(pa.string())
            if kind == _LIST:
                if isinstance(v[0], dict):  # the union of the elements' fields (a turn has only its own)
                    fields: dict[str, Any] = {}
                    for el in v:
                        for f, x in el.items():
                            fields.setdefault(f, x)
                    return pa.list_(pa.struct([(f, typ("", x)) for f, x in fields.items()]))
                return pa.list_(typ("", v[0]))
            if kind == _OBJECT and not k:  # nested (a tool call's function); a top-level object is JSON text
                return pa.struct([(f, typ("", x)) for f, x in v.items()])
            return {_INT: pa.int64(), _FLOAT: pa.float64(), _BOOL: pa.bool_()}.get(kind, pa.string())

        return pa.schema([(k, typ(k, v)) for k, v in self.full.items()])


def uniform_records(records: Iterable[dict[str, Any]], cols: Columns, *, lists_as_text: bool) -> Iterator[dict[str, Any]]:
    """Every record with exactly ``cols``' columns, no nulls, and one type per column."""
    for rec in records:
        out: dict[str, Any] = {}
        for k, kind in cols.kinds.items():
            v = rec.get(k)
            if kind in _DEFAULTS:
                if v is None:
                    v = _DEFAULTS[kind]
                elif kind == _FLOAT:
                    v = float(v)
                elif kind == _TEXT and not isinstance(v, str):
                    v = orjson.dumps(v).decode()
            elif kind == _OBJECT:
                v = orjson.dumps(v or {}).decode()
            elif lists_as_text and cols.encoded_as_text(k):
                v = list(v or [])
                if kind == _STR_LIST:
                    v = ",".join(v)
                else:
                    v = "" if not v and k in _BLANK_WHEN_EMPTY else orjson.dumps(v).decode()
            else:
                v = list(v or [])
            out[k] = v
        yield out


def export_slice(project: Project, slice_ref: str, fmt: str, out: str | os.PathLike[str], split: str | None = None) -> int:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    with project.connect() as con:
        s = slices.get(con, slice_ref)
        frame = slices.examples(con, s.id, split)
        scores = ratings.scores(con, frame["revision_id"].to_list())
    frame = frame.join(scores, on="revision_id", how="left", maintain_order="left").with_columns(
        pl.col("n_ratings").fill_null(0))
    cols = Columns(fmt, frame.schema)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    records = (export_record(fmt, row) for row in frame.iter_rows(named=True))
    if fmt == "parquet":
        rows = list(uniform_records(records, cols, lists_as_text=False))
        pq.write_table(pa.Table.from_pylist(rows, schema=cols.arrow_schema()), tmp)
        n = len(rows)
    else:
        with tmp.open("wb") as f:
            n = write_jsonl(uniform_records(records, cols, lists_as_text=True), f)
    os.replace(tmp, out_path)
    return n
