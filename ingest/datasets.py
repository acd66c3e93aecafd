"""Dataset formats: readers that stream records and normalise them to pair content.

Supported: Alpaca (JSON array or JSONL with ``instruction``/``input``/``output``), ShareGPT
(``conversations`` of ``from``/``value``), chat ``messages`` JSONL, ``prompt``/``completion``
JSONL (text or conversational), CSV/TSV with a column mapping, and Parquet.

Readers yield ``(line, record)`` pairs; ``normalise`` turns a record into pair content or
raises ``RecordError`` naming the field and what was expected. Nothing here touches the
store, so it is all testable on plain files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from store.ids import pair_content

FORMATS = ("alpaca", "sharegpt", "messages", "prompt-completion", "csv", "parquet")
# Columns the exporters add; importers read split/tags from them and ignore the rest.
PROVENANCE_KEYS = {
    "pair_id", "revision_id", "split", "tags", "document_id", "page", "char_start", "char_end", "generator",
    "generator_version", "source_uri", "source_line", "status", "weight", "id", "metadata", "element_ids",
}
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                "model": "assistant", "chatgpt": "assistant", "system": "system"}


class FileFormatError(ValueError):
    """The whole file cannot be read (encoding, format, missing columns): one line to show."""


class RecordError(ValueError):
    """One record is malformed; the rest of the file still imports."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")
        self.field = field


@dataclass(frozen=True)
class Normalised:
    content: dict[str, Any]
    tags: list[str]
    split: str | None


# ----------------------------------------------------------------- reading


def _check_encoding(path: Path, head: bytes, encoding: str) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileFormatError(
            f"{path}: the file is UTF-16; save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8 {path.name} > out`)"
        )
    if encoding.lower().replace("-", "") in ("utf8", "utf8sig") and len(head) >= 4 and head[1:4:2] == b"\x00\x00":
        raise FileFormatError(f"{path}: looks like UTF-16 without a byte-order mark; save it as UTF-8")


def _decode(raw: bytes, path: Path, line: int, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"{path}:{line}: not valid {encoding} (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            f"the file looks like Latin-1/Windows-1252. Re-save it as UTF-8, or pass --encoding latin-1"
        ) from None


def detect_format(path: Path, encoding: str = "utf-8") -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix not in (".json", ".jsonl", ".ndjson"):
        raise FileFormatError(
            f"{path}: cannot tell the format from the extension {suffix or '(none)'}; "
            f"pass --format ({'|'.join(FORMATS)})"
        )
    for _, rec in iter_json_records(path, encoding):
        if not isinstance(rec, dict):
            continue
        if "conversations" in rec:
            return "sharegpt"
        if "messages" in rec:
            return "messages"
        if "instruction" in rec:
            return "alpaca"
        if "prompt" in rec and "completion" in rec:
            return "prompt-completion"
        raise FileFormatError(
            f"{path}: first record has keys {sorted(rec)[:8]}; expected instruction/output (alpaca), "
            f"conversations (sharegpt), messages, or prompt/completion. Pass --format to choose"
        )
    raise FileFormatError(f"{path}: the file is empty (no records)")


def iter_json_records(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """Records of a JSON array file or a JSONL file, with 1-based line numbers.

    Malformed JSONL lines are yielded as ``(line, RecordError)`` so the caller can report them
    and go on.
    """
    with path.open("rb") as f:
        head = f.read(4096)
        _check_encoding(path, head, encoding)
        if not head.strip():
            raise FileFormatError(f"{path}: the file is empty")
        f.seek(0)
        first = head.lstrip()[:1]
        if first == b"[":
            text = _decode(f.read(), path, 1, encoding)
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            # Line numbers of array items are not tracked by json; report the 1-based item index.
            yield from enumerate(data, start=1)
            return
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            line = _decode(raw, path, lineno, encoding)
            try:
                yield lineno, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield lineno, RecordError("(line)", f"invalid JSON ({str(exc).split(':')[0]}); expected one JSON object per line")


def iter_csv_records(path: Path, encoding: str = "utf-8", mapping: dict[str, str] | None = None) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fb:
        head = fb.read(4096)
    _check_encoding(path, head, encoding)
    if not head.strip():
        raise FileFormatError(f"{path}: the file is empty")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding=encoding, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            fields = reader.fieldnames or []
        except UnicodeDecodeError:
            _decode(head, path, 1, encoding)
            raise
        mapping = mapping or {}
        wanted = {k: v for k, v in mapping.items()}
        missing = [v for v in wanted.values() if v not in fields]
        if missing:
            raise FileFormatError(
                f"{path}: column(s) {', '.join(missing)} not found; the header has {', '.join(fields)}. "
                f"Fix --map (e.g. --map instruction={fields[0] if fields else 'COL'},response=...)"
            )
        if not wanted:
            if {"instruction", "output"} <= set(fields) or {"instruction", "response"} <= set(fields):
                wanted = {k: k for k in ("instruction", "input", "output", "response", "system") if k in fields}
            else:
                raise FileFormatError(
                    f"{path}: no column mapping; the header has {', '.join(fields)}. "
                    f"Pass --map instruction=COL,response=COL[,input=COL,system=COL]"
                )
        try:
            for row in reader:
                rec = {k: row.get(v) for k, v in wanted.items()}
                if "output" in rec and "response" not in rec:
                    rec["response"] = rec.pop("output")
                for extra in ("split", "tags"):
                    if extra in fields and extra not in rec:
                        rec[extra] = row.get(extra)
                yield reader.line_num, rec
        except UnicodeDecodeError as exc:
            raise FileFormatError(
                f"{path}:{reader.line_num + 1}: not valid {encoding} (byte 0x{exc.object[exc.start]:02x}); the file looks "
                f"like Latin-1/Windows-1252. Re-save it as UTF-8, or pass --encoding latin-1"
            ) from None


def iter_parquet_records(path: Path, mapping: dict[str, str] | None = None, batch_size: int = 50_000) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise FileFormatError(f"{path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if mapping:
        missing = [v for v in mapping.values() if v not in names]
        if missing:
            raise FileFormatError(f"{path}: column(s) {', '.join(missing)} not found; columns are {', '.join(names)}")
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for rec in batch.to_pylist():
            row += 1
            if mapping:
                out = {k: rec.get(v) for k, v in mapping.items()}
                for extra in ("split", "tags"):
                    if extra in rec and extra not in out:
                        out[extra] = rec[extra]
                rec = out
            yield row, rec


# ----------------------------------------------------------------- normalising


def _text(rec: dict[str, Any], key: str, required: bool, expected: str) -> str:
    v = rec.get(key)
    if v is None:
        if required:
            raise RecordError(key, f"missing; expected {expected}")
        return ""
    if not isinstance(v, str):
        raise RecordError(key, f"is {type(v).__name__}; expected {expected}")
    return v


def _tags(rec: dict[str, Any]) -> list[str]:
    t = rec.get("tags")
    if t is None or t == "":
        return []
    if isinstance(t, str):
        return [x.strip() for x in t.split(",") if x.strip()]
    if isinstance(t, list) and all(isinstance(x, str) for x in t):
        return t
    raise RecordError("tags", "expected a list of strings or a comma-separated string")


def _split(rec: dict[str, Any]) -> str | None:
    s = rec.get("split")
    if s in (None, ""):
        return None
    if s not in ("train", "eval", "test", "validation"):
        raise RecordError("split", f"{s!r}; expected train or eval")
    return "eval" if s in ("test", "validation") else s


def from_messages(messages: Any, field: str = "messages") -> dict[str, Any]:
    """Pair content from a conversation; a plain system/user/assistant exchange is single-turn."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(field, "expected a non-empty list of {role, content} objects")
    msgs: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordError(f"{field}[{i}]", "expected an object with role and content")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if role not in ROLE_ALIASES:
            raise RecordError(f"{field}[{i}].role", f"{role!r}; expected system, user or assistant")
        if not isinstance(content, str):
            raise RecordError(f"{field}[{i}].content", "missing or not a string")
        msgs.append({"role": ROLE_ALIASES[role], "content": content})
    system = ""
    if msgs[0]["role"] == "system":
        system = msgs[0]["content"]
        msgs = msgs[1:]
    if len(msgs) < 2 or msgs[0]["role"] != "user" or msgs[-1]["role"] != "assistant":
        raise RecordError(field, "expected user first and assistant last (after an optional system message)")
    for a, b in zip(msgs, msgs[1:]):
        if a["role"] == b["role"]:
            raise RecordError(field, f"two {a['role']} messages in a row; expected user and assistant to alternate")
    if len(msgs) == 2:
        return pair_content(msgs[0]["content"], "", msgs[1]["content"], system, None)
    return pair_content(msgs[0]["content"], "", msgs[-1]["content"], system, msgs)


def normalise(fmt: str, rec: Any) -> Normalised:
    if isinstance(rec, RecordError):
        raise rec
    if not isinstance(rec, dict):
        raise RecordError("(record)", f"is {type(rec).__name__}; expected a JSON object")
    if fmt in ("alpaca", "csv", "parquet") and not rec.get("messages"):
        instr = _text(rec, "instruction", True, "a string (the task or question)")
        # Alpaca calls it output; mapped CSV/Parquet columns arrive as response.
        resp_key = "output" if "output" in rec or (fmt == "alpaca" and "response" not in rec) else "response"
        resp = _text(rec, resp_key, True, "a string (the answer)")
        if not instr.strip():
            raise RecordError("instruction", "is empty; expected the task or question")
        content = pair_content(instr, _text(rec, "input", False, "a string"), resp,
                               _text(rec, "system", False, "a string"))
    elif fmt == "sharegpt":
        content = from_messages(rec.get("conversations"), "conversations")
        sys = rec.get("system")
        if isinstance(sys, str) and sys and not content["system"]:
            content = {**content, "system": sys}
    elif fmt in ("messages", "parquet", "csv", "alpaca"):
        msgs = rec.get("messages")
        if isinstance(msgs, str):
            try:
                msgs = orjson.loads(msgs)
            except orjson.JSONDecodeError:
                raise RecordError("messages", "is a string but not JSON; expected a list of messages") from None
        content = from_messages(msgs)
    elif fmt == "prompt-completion":
        p, c = rec.get("prompt"), rec.get("completion")
        if isinstance(p, list) and isinstance(c, list):
            content = from_messages(p + c, "prompt+completion")
        else:
            if not isinstance(p, str) or not p.strip():
                raise RecordError("prompt", "missing or empty; expected a string or a list of messages")
            if not isinstance(c, str):
                raise RecordError("completion", "missing; expected a string or a list of messages")
            content = pair_content(p, "", c)
    else:
        raise FileFormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return Normalised(content=content, tags=_tags(rec), split=_split(rec))


def iter_records(path: Path, fmt: str, encoding: str = "utf-8", mapping: dict[str, str] | None = None) -> Iterator[tuple[int, Any]]:
    if fmt == "csv":
        return iter_csv_records(path, encoding, mapping)
    if fmt == "parquet":
        return iter_parquet_records(path, mapping)
    if fmt in ("alpaca", "sharegpt", "messages", "prompt-completion"):
        if mapping:
            return ({**rec, **{k: rec.get(v) for k, v in mapping.items()}} if isinstance(rec, dict) else rec
                    for rec in iter_json_records(path, encoding))  # type: ignore[misc]
        return iter_json_records(path, encoding)
    raise FileFormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def parse_mapping(spec: str | None) -> dict[str, str] | None:
    """``instruction=text,response=category`` -> {"instruction": "text", "response": "category"}."""
    if not spec:
        return None
    out: dict[str, str] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise FileFormatError(f"--map {spec!r}: expected field=column pairs, e.g. instruction=text,response=label")
        k, _, v = part.partition("=")
        k = k.strip()
        if k == "output":
            k = "response"
        if k not in ("instruction", "input", "response", "system", "messages", "tags", "split"):
            raise FileFormatError(f"--map field {k!r}: expected instruction, input, response, system, messages, tags or split")
        out[k] = v.strip()
    return out


# ----------------------------------------------------------------- writing


def to_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    if row.get("messages"):
        msgs = orjson.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]
        return ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + msgs
    user = row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")
    out = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return out + [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]


EXPORT_PROVENANCE = ["pair_id", "revision_id", "split", "weight", "tags", "document_id", "page", "char_start",
                     "char_end", "generator", "generator_version", "source_uri", "source_line"]


def export_record(fmt: str, row: dict[str, Any]) -> dict[str, Any]:
    prov = {k: row.get(k) for k in EXPORT_PROVENANCE}
    prov["tags"] = list(prov["tags"] or [])
    if fmt in ("alpaca", "parquet"):
        rec: dict[str, Any] = {"instruction": row["instruction"], "input": row["input"], "output": row["response"]}
        if row.get("system"):
            rec["system"] = row["system"]
        if row.get("messages"):
            rec["messages"] = to_messages(row)
    elif fmt == "messages":
        rec = {"messages": to_messages(row)}
    elif fmt == "prompt-completion":
        msgs = to_messages(row)
        rec = {"prompt": msgs[:-1], "completion": msgs[-1:]}
    else:
        raise FileFormatError(f"unknown export format {fmt!r}; use alpaca, messages, prompt-completion or parquet")
    return {**rec, **prov}


def write_jsonl(records: Any, out: io.BufferedWriter) -> int:
    n = 0
    for rec in records:
        out.write(orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        n += 1
    return n
