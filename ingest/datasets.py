"""Dataset formats: readers that stream records and normalise them to pair content.

Supported: Alpaca (JSON array or JSONL with ``instruction``/``input``/``output``), ShareGPT
(``conversations`` of ``from``/``value``), chat ``messages`` JSONL, ``prompt``/``completion``
JSONL (text or conversational), self-instruct seed tasks (``instruction`` plus ``instances`` of
``input``/``output``: one pair per instance), CSV/TSV with a column mapping, and Parquet.

Readers yield ``(line, record)`` pairs; ``normalise`` turns a record into pair content or
raises ``RecordError`` naming the field and what was expected; ``normalise_all`` gives every pair
of a record (several for self-instruct), a malformed part as its own ``RecordError``. Nothing here touches the
store, so it is all testable on plain files.

Hostile input: text files are read in blocks (``ingest.streams``), so a line, CSV record or
array item over ``ImportLimits.max_line_mb`` is skipped with a ``RecordError`` and never held
whole; a byte-order mark (UTF-8, UTF-16, UTF-32) decides the encoding. Control characters
other than tab, newline and carriage return are not stored: the record is rejected naming the
field and the character (they are invisible in review, can drive a terminal, and C1 ones mean
a wrong code page). Messages quote at most a few hundred characters of user data (``clip``).
"""

from __future__ import annotations

import csv
import io
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingest.cleaning import CONTROL
from ingest.encodings import nul_pattern
from ingest.limits import ImportLimits, clip
from ingest.streams import JSONArrayError, TextSource, array_items, bom_encoding, first_byte, lines
from store.ids import pair_content

FORMATS = ("alpaca", "sharegpt", "messages", "openai", "prompt-completion", "self-instruct", "csv", "parquet")
JSON_FORMATS = ("alpaca", "sharegpt", "messages", "openai", "prompt-completion", "self-instruct")
# Columns the exporters add; importers read split/tags from them and ignore the rest.
PROVENANCE_KEYS = {
    "pair_id", "revision_id", "split", "tags", "document_id", "page", "char_start", "char_end", "generator",
    "generator_version", "source_uri", "source_line", "status", "weight", "id", "metadata", "element_ids",
    "rating", "n_ratings",
}
# ``developer`` (OpenAI's newer name for the system turn) is stored as system; ``observation``
# (LLaMA-Factory) and ``function`` (OpenAI's older name) are tool results; LLaMA-Factory's
# ``function_call`` is an assistant turn that calls tools (see ``_message``).
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                "model": "assistant", "chatgpt": "assistant", "system": "system", "developer": "system",
                "tool": "tool", "observation": "tool", "function": "tool", "function_call": "assistant"}


class FileFormatError(ValueError):
    """The whole file cannot be read (encoding, format, missing columns): one line to show."""


class RecordError(ValueError):
    """One record is malformed; the rest of the file still imports."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{clip(field, 60)}': {clip(message)}")
        self.field, self.detail = field, message


def columns(names: list[str], shown: int = 8) -> str:
    """The first few column names for a message, and how many there are."""
    head = ", ".join(clip(n, 40) for n in names[:shown])
    return head if len(names) <= shown else f"{head}, ... ({len(names):,} columns)"


# Control characters (``ingest.cleaning.CONTROL``) are invisible in the review pages, can drive a
# terminal (ESC), and C1 ones mostly mean a file decoded with the wrong code page, so a record
# holding one is rejected, naming the field and the character.
_CONTROL = CONTROL


def _check_controls(content: dict[str, Any]) -> None:
    fields = [(k, content[k]) for k in ("instruction", "input", "response", "system")]
    fields += [(f"messages[{i}].content", m["content"]) for i, m in enumerate(content["messages"])]
    for name, text in fields:
        m = _CONTROL.search(text)
        if m:
            code = ord(m.group())
            hint = (" (C1 control characters usually mean the file is Windows-1252: pass --encoding cp1252)"
                    if code >= 0x80 else "")
            raise RecordError(name, f"contains the control character U+{code:04X} at character {m.start() + 1}; "
                                    f"remove it (only tab, newline and carriage return are kept){hint}")


@dataclass(frozen=True)
class Normalised:
    content: dict[str, Any]
    tags: list[str]
    split: str | None
    # Which part of the record the pair came from when a record holds several (self-instruct:
    # the record's id and name, and ``instances[i]``); stored as the pair's element ids.
    part: tuple[str, ...] = ()


# ----------------------------------------------------------------- reading


def _open(path: Path, encoding: str) -> TextSource:
    """The file as bytes for the line and array readers: a byte-order mark wins over
    ``encoding``; UTF-16/32 without a mark (``ingest.encodings.nul_pattern``) is read as such when
    the encoding was left at UTF-8."""
    with path.open("rb") as f:
        head = f.read(4096)
    if bom_encoding(head)[0] is None and encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig"):
        encoding = nul_pattern(head) or encoding
    return TextSource(path, encoding)


def _decode(raw: bytes, path: Path, line: int, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"{path}:{line}: not valid {encoding} (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            f"the file looks like Latin-1/Windows-1252. Re-save it as UTF-8, or pass --encoding latin-1"
        ) from None


# Records detect_format looks at before it gives up on a file with no JSON object.
DETECT_RECORDS = 1000


def detect_format(path: Path, encoding: str = "utf-8", limits: ImportLimits | None = None) -> str:
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
    problem = ""
    for n, (line, rec) in enumerate(iter_json_records(path, encoding, limits), start=1):
        if not isinstance(rec, dict):
            problem = problem or f"record {line}: " + (str(rec) if isinstance(rec, RecordError)
                                                       else f"is {type(rec).__name__}, not an object")
            if n >= DETECT_RECORDS:
                break
            continue
        if "conversations" in rec:
            return "sharegpt"
        if "messages" in rec:
            return "messages"
        if "instruction" in rec and "instances" in rec and "output" not in rec:
            return "self-instruct"
        if "instruction" in rec:
            return "alpaca"
        if "prompt" in rec and "completion" in rec:
            return "prompt-completion"
        raise FileFormatError(
            f"{path}: first record has keys {[clip(k, 40) for k in sorted(rec)[:8]]}; expected instruction/output "
            f"(alpaca), instruction/instances (self-instruct), conversations (sharegpt), messages, or "
            f"prompt/completion. Pass --format to choose"
        )
    if problem:
        raise FileFormatError(f"{path}: no JSON object found to tell the format from ({problem})")
    raise FileFormatError(f"{path}: the file is empty (no records)")


def _parse_json(raw: bytes | None, path: Path, n: int, encoding: str, limits: ImportLimits, what: str) -> Any:
    """One JSONL line or array item, or the ``RecordError`` that says why it cannot be read."""
    if raw is None:
        return RecordError(f"({what})", limits.line_too_long(what))
    try:
        return orjson.loads(_decode(raw, path, n, encoding))
    except orjson.JSONDecodeError as exc:
        msg = str(exc).split(":")[0]
        if "depth" in msg or "recursion" in msg:
            return RecordError(f"({what})", "nested more than 1,024 levels deep; expected one flat JSON object")
        return RecordError(f"({what})", f"invalid JSON ({msg}); expected one JSON object per {what}")


def iter_json_records(path: Path, encoding: str = "utf-8", limits: ImportLimits | None = None) -> Iterator[tuple[int, Any]]:
    """Records of a JSON array file or a JSONL file, numbered from 1: the line of a JSONL
    record, the index of an array item. Read in blocks (``ingest.streams``), so no file size,
    line length or nesting depth can exhaust memory or the stack.

    Malformed records (invalid JSON, over the line limit, nested too deep) are yielded as
    ``(n, RecordError)`` so the caller can report them and go on.
    """
    limits = limits or ImportLimits()
    with _open(path, encoding) as src:
        first = first_byte(path, encoding)
        if not first:
            raise FileFormatError(f"{path}: the file is empty")
        if first == b"[":
            try:
                for n, raw in array_items(src, limits.max_line_bytes):
                    yield n, _parse_json(raw, path, n, src.encoding, limits, "item")
            except JSONArrayError as exc:
                raise FileFormatError(f"{path}: not one valid JSON array: {exc}") from None
            return
        for n, raw in lines(src, limits.max_line_bytes):
            if raw is None or raw.strip():
                yield n, _parse_json(raw, path, n, src.encoding, limits, "line")


class _CsvLines:
    """The file's lines as text for ``csv.reader``, with a byte budget per record.

    A line or a record over the budget is replaced by empty lines (so the reader's line count
    and quoting state stay right while nothing large is held) and flagged in ``too_long``;
    ``start_record`` resets the budget before each record. A lone carriage return ends a line
    too (old Mac files), as in a file opened with ``newline=""``."""

    _LONE_CR = re.compile("(?<=\r)(?!\n)")

    def __init__(self, src: TextSource, path: Path, cap: int):
        self._lines = lines(src, cap)
        self._pending: deque[str] = deque()
        self.path, self.encoding, self.cap = path, src.encoding, cap
        self.line = self.size = self.first_line = 0
        self.too_long = False

    def start_record(self) -> None:
        self.size, self.too_long, self.first_line = 0, False, self.line + 1

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        if self._pending:
            return self._pending.popleft()
        self.line, raw = next(self._lines)
        self.size += len(raw) if raw is not None else self.cap + 1
        if raw is None or self.size > self.cap:
            self.too_long = True
            return "\n"
        text = _decode(raw, self.path, self.line, self.encoding)
        if "\r" in text[:-2]:
            self._pending.extend(t for t in self._LONE_CR.split(text) if t)
            return self._pending.popleft()
        return text


def iter_csv_records(path: Path, encoding: str = "utf-8", mapping: dict[str, str] | None = None,
                     limits: ImportLimits | None = None) -> Iterator[tuple[int, Any]]:
    """Rows of a CSV/TSV file as records of the mapped columns, numbered by the line a row ends on.

    Read line by line within ``limits`` (a longer record is skipped with a ``RecordError``), so
    a huge field or an unclosed quote costs no more memory than the limit."""
    limits = limits or ImportLimits()
    cap = limits.max_line_bytes
    if csv.field_size_limit() < cap + 1:  # the module's 128 KB default would fail long fields first
        csv.field_size_limit(cap + 1)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with _open(path, encoding) as src:
        if not first_byte(path, encoding):
            raise FileFormatError(f"{path}: the file is empty")
        source = _CsvLines(src, path, cap)
        reader = csv.reader(source, delimiter=delimiter)
        try:
            fields = next(reader)
        except csv.Error as exc:
            raise FileFormatError(f"{path}:1: the header is not valid CSV ({exc})") from None
        if source.too_long:
            raise FileFormatError(f"{path}:1: the header line is longer than the {limits.max_line_mb:g} MB limit; "
                                  f"raise it with --max-line-mb if the header is real")
        mapping = mapping or {}
        wanted = {k: v for k, v in mapping.items()}
        missing = [clip(v, 40) for v in wanted.values() if v not in fields]
        if missing:
            raise FileFormatError(
                f"{path}: column(s) {', '.join(missing)} not found; the header has {columns(fields)}. "
                f"Fix --map (e.g. --map instruction={clip(fields[0], 40) if fields else 'COL'},response=...)"
            )
        if not wanted:
            if {"instruction", "output"} <= set(fields) or {"instruction", "response"} <= set(fields):
                wanted = {k: k for k in ("instruction", "input", "output", "response", "system") if k in fields}
            else:
                raise FileFormatError(
                    f"{path}: no column mapping; the header has {columns(fields)}. "
                    f"Pass --map instruction=COL,response=COL[,input=COL,system=COL]"
                )
        index = {name: i for i, name in enumerate(fields)}  # a repeated name: the last column, as csv.DictReader
        take = {k: index[v] for k, v in wanted.items()}
        if "output" in take and "response" not in take:
            take["response"] = take.pop("output")
        for extra in ("split", "tags"):
            if extra in index and extra not in take:
                take[extra] = index[extra]
        while True:
            source.start_record()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, RecordError("(line)", f"not valid CSV ({exc})")
                continue
            if source.too_long:
                yield source.first_line, RecordError("(line)", limits.line_too_long("record"))
                continue
            if row:  # a blank line is no record
                yield reader.line_num, {k: row[i] if i < len(row) else None for k, i in take.items()}


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
            raise FileFormatError(f"{path}: column(s) {', '.join(clip(m, 40) for m in missing)} not found; "
                                  f"columns are {columns(names)}")
    elif not ({"instruction", "output"} <= set(names) or {"instruction", "response"} <= set(names)
              or "messages" in names):
        # say it once for the file instead of "field 'instruction': missing" on every row
        first = next((n for n in names if n not in ("split", "tags")), "COL")
        raise FileFormatError(f"{path}: no column mapping; the columns are {columns(names)}. Pass --map "
                              f"instruction={clip(first, 40)},response=COL[,input=COL,system=COL] (or give the file "
                              f"instruction and output/response columns, or a messages column)")
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


def _content_text(v: Any, where: str, nullable: bool) -> str:
    """A message's content: a string, a list of ``{"type": "text", "text": ...}`` parts (joined
    with newlines), or null where the turn only calls tools (stored as '')."""
    if isinstance(v, str):
        return v
    if v is None and nullable:
        return ""
    if isinstance(v, list):
        texts = []
        for j, part in enumerate(v):
            if isinstance(part, str):
                texts.append(part)
                continue
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise RecordError(f"{where}[{j}].type", f"{clip(repr(kind), 40)}: only text parts can be stored "
                                  "(images, audio and files cannot); expected {\"type\": \"text\", \"text\": ...}")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RecordError(where, "missing or not a string (or a list of text parts)")


def _arguments(v: Any, where: str) -> str:
    """A call's arguments as the JSON string OpenAI stores (an object is serialised)."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return orjson.dumps(v).decode()
    raise RecordError(where, "expected a JSON object or a string holding one")


def _tool_calls(v: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` ([{id, type, function: {name, arguments}}]) or LLaMA-Factory's
    ``function_call`` value ({name, arguments} or a list of them, as JSON text) in OpenAI form."""
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            raise RecordError(where, "is not JSON; expected {\"name\": ..., \"arguments\": {...}}") from None
    calls = v if isinstance(v, list) else [v]
    if not calls:
        raise RecordError(where, "is empty; expected at least one call")
    out = []
    for k, c in enumerate(calls):
        at = f"{where}[{k}]" if isinstance(v, list) else where
        if not isinstance(c, dict):
            raise RecordError(at, f"is {type(c).__name__}; expected an object with a function name and arguments")
        fn = c.get("function", c)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RecordError(f"{at}.function.name" if "function" in c else f"{at}.name", "missing; expected the "
                              "name of the function called")
        call: dict[str, Any] = {}
        if c.get("id") is not None:
            if not isinstance(c["id"], str):
                raise RecordError(f"{at}.id", "expected a string")
            call["id"] = c["id"]
        call["type"] = "function"
        call["function"] = {"name": fn["name"], "arguments": _arguments(fn.get("arguments", {}), f"{at}.arguments")}
        out.append(call)
    return out


def parse_tools(v: Any, field: str = "tools") -> list[dict[str, Any]] | None:
    """A record's tool (function) definitions in OpenAI form ({type: function, function: {name,
    description, parameters}}); LLaMA-Factory gives bare function objects as a JSON string."""
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            raise RecordError(field, "is a string but not JSON; expected a list of function definitions") from None
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list):
        raise RecordError(field, f"is {type(v).__name__}; expected a list of function definitions")
    out = []
    for i, t in enumerate(v):
        if not isinstance(t, dict):
            raise RecordError(f"{field}[{i}]", f"is {type(t).__name__}; expected a function definition object")
        fn = t.get("function") if t.get("type", "function") == "function" and "function" in t else t
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RecordError(f"{field}[{i}].name", "missing; expected {\"type\": \"function\", \"function\": "
                              "{\"name\": ..., \"parameters\": {...}}}")
        out.append({"type": "function", "function": fn} if fn is t else t)
    return out or None


def _message(m: Any, i: int, field: str) -> dict[str, Any]:
    where = f"{field}[{i}]"
    if not isinstance(m, dict):
        raise RecordError(where, "expected an object with role and content")
    role = m.get("role", m.get("from"))
    if role not in ROLE_ALIASES:
        raise RecordError(f"{where}.role", f"{clip(repr(role), 40)}; expected system, user, assistant or tool")
    key = "content" if "content" in m or "value" not in m else "value"
    out: dict[str, Any] = {"role": ROLE_ALIASES[role]}
    if role == "function_call":  # LLaMA-Factory: the value is the call, as JSON text
        out["content"] = ""
        out["tool_calls"] = _tool_calls(m.get(key), f"{where}.{key}")
    else:
        calls = m.get("tool_calls")
        if calls is not None and out["role"] != "assistant":
            raise RecordError(f"{where}.tool_calls", f"on a {out['role']} turn; only assistant turns call tools")
        if calls is None and isinstance(m.get("function_call"), dict) and out["role"] == "assistant":
            calls = [m["function_call"]]  # OpenAI's older single function_call
        if calls is not None:
            out["tool_calls"] = _tool_calls(calls, f"{where}.tool_calls")
        out["content"] = _content_text(m.get(key), f"{where}.{key}", nullable="tool_calls" in out)
    for k in ("tool_call_id", "name"):
        if m.get(k) is not None:
            if not isinstance(m[k], str):
                raise RecordError(f"{where}.{k}", f"is {type(m[k]).__name__}; expected a string")
            out[k] = m[k]
    w = m.get("weight")
    if w is not None:
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0:
            raise RecordError(f"{where}.weight", f"{clip(repr(w), 40)}; expected a number >= 0 (0: do not train "
                              "on this turn)")
        if out["role"] != "assistant":
            raise RecordError(f"{where}.weight", f"on a {out['role']} turn; only assistant turns are trained on")
        out["weight"] = float(w)
    return out


def _check_turns(msgs: list[dict[str, Any]], field: str) -> None:
    """User first, assistant last; users and assistants alternate, except that an assistant turn
    that calls tools is followed by the tool results and then another assistant turn."""
    if len(msgs) < 2 or msgs[0]["role"] != "user" or msgs[-1]["role"] != "assistant":
        raise RecordError(field, "expected user first and assistant last (after an optional system message)")
    for i, (a, b) in enumerate(zip(msgs, msgs[1:])):
        if b["role"] == "tool" and not (a["role"] == "tool" or a.get("tool_calls")):
            raise RecordError(f"{field}[{i + 1}]", "a tool result that follows no tool call; expected it after an "
                              "assistant turn with tool_calls")
        if a.get("tool_calls") and b["role"] != "tool":
            raise RecordError(f"{field}[{i + 1}]", f"a {b['role']} turn after tool calls; expected the tool results")
        if a["role"] == "tool" and b["role"] not in ("tool", "assistant"):
            raise RecordError(f"{field}[{i + 1}]", f"a {b['role']} turn after a tool result; expected the assistant "
                              "to answer")
        if a["role"] == b["role"] and a["role"] != "tool":
            raise RecordError(field, f"two {a['role']} messages in a row; expected user and assistant to alternate")


def from_messages(messages: Any, field: str = "messages", tools: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Pair content from a conversation; a plain system/user/assistant exchange is single-turn.

    Tool calling is stored as it is: assistant turns keep ``tool_calls`` (content '' when null),
    tool turns their ``tool_call_id``/``name``, a turn's ``weight`` is kept, and ``tools`` (the
    function definitions) go beside the messages."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(field, "expected a non-empty list of {role, content} objects")
    msgs = [_message(m, i, field) for i, m in enumerate(messages)]
    system = ""
    if msgs[0]["role"] == "system":
        system = msgs[0]["content"]
        msgs = msgs[1:]
    _check_turns(msgs, field)
    plain = all(set(m) == {"role", "content"} for m in msgs)
    if len(msgs) == 2 and plain and not tools:
        return pair_content(msgs[0]["content"], "", msgs[1]["content"], system, None)
    return pair_content(msgs[0]["content"], "", msgs[-1]["content"], system, msgs, tools)


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
        content = from_messages(rec.get("conversations"), "conversations", parse_tools(rec.get("tools")))
        sys = rec.get("system")
        if isinstance(sys, str) and sys and not content["system"]:
            content = {**content, "system": sys}
    elif fmt in ("messages", "openai", "parquet", "csv", "alpaca"):
        msgs = rec.get("messages")
        if isinstance(msgs, str):
            try:
                msgs = orjson.loads(msgs)
            except orjson.JSONDecodeError:
                raise RecordError("messages", "is a string but not JSON; expected a list of messages") from None
        content = from_messages(msgs, tools=parse_tools(rec.get("tools")))
    elif fmt == "prompt-completion":
        p, c = rec.get("prompt"), rec.get("completion")
        if isinstance(p, list) and isinstance(c, list):
            content = from_messages(p + c, "prompt+completion", parse_tools(rec.get("tools")))
        else:
            if not isinstance(p, str) or not p.strip():
                raise RecordError("prompt", "missing or empty; expected a string or a list of messages")
            if not isinstance(c, str):
                raise RecordError("completion", "missing; expected a string or a list of messages")
            content = pair_content(p, "", c)
    elif fmt == "self-instruct":
        raise ValueError("a self-instruct record holds several pairs: read it with normalise_all")
    else:
        raise FileFormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    _check_controls(content)
    return Normalised(content=content, tags=_tags(rec), split=_split(rec))


def _self_instruct(rec: dict[str, Any]) -> list[Normalised | RecordError]:
    """One pair per instance of a self-instruct seed task (yizhongw/self-instruct
    ``data/seed_tasks.jsonl``): the task's instruction, the instance's input and output."""
    instr = _text(rec, "instruction", True, "a string (the task)")
    if not instr.strip():
        raise RecordError("instruction", "is empty; expected the task")
    instances = rec.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RecordError("instances", "expected a non-empty list of {input, output} objects")
    flag = rec.get("is_classification")
    if flag is not None and not isinstance(flag, bool):
        raise RecordError("is_classification", f"is {type(flag).__name__}; expected true or false")
    tags = list(dict.fromkeys([*_tags(rec), *(["classification"] if flag else [])]))
    split = _split(rec)
    about = [f"{k}={clip(str(rec[k]), 200)}" for k in ("id", "name") if rec.get(k) not in (None, "")]
    out: list[Normalised | RecordError] = []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        try:
            if not isinstance(inst, dict):
                raise RecordError(where, f"is {type(inst).__name__}; expected an object with input and output")
            try:
                content = pair_content(instr, _text(inst, "input", False, "a string"),
                                       _text(inst, "output", True, "a string (the answer)"))
            except RecordError as exc:  # name the instance, not just its key
                raise RecordError(f"{where}.{exc.field}", exc.detail) from None
            _check_controls(content)
            out.append(Normalised(content=content, tags=tags, split=split, part=(*about, where)))
        except RecordError as exc:
            out.append(exc)
    return out


def normalise_all(fmt: str, rec: Any) -> list[Normalised | RecordError]:
    """Every pair ``rec`` holds, in order; a malformed record is one ``RecordError``, a malformed
    part of a record (a self-instruct instance) is its own ``RecordError`` beside the good parts."""
    try:
        if fmt == "self-instruct" and isinstance(rec, dict):
            return _self_instruct(rec)
        return [normalise(fmt, rec)]
    except RecordError as exc:
        return [exc]


def iter_records(path: Path, fmt: str, encoding: str = "utf-8", mapping: dict[str, str] | None = None,
                 limits: ImportLimits | None = None) -> Iterator[tuple[int, Any]]:
    if fmt == "csv":
        return iter_csv_records(path, encoding, mapping, limits)
    if fmt == "parquet":
        return iter_parquet_records(path, mapping)
    if fmt in JSON_FORMATS:
        records = iter_json_records(path, encoding, limits)
        if mapping:
            return ((n, {**rec, **{k: rec.get(v) for k, v in mapping.items()}} if isinstance(rec, dict) else rec)
                    for n, rec in records)
        return records
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


def to_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored conversation of an export row: system turn first, then the messages as stored
    (tool calls, tool results and turn weights included)."""
    if row.get("messages"):
        msgs = orjson.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]
        return ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + msgs
    user = row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")
    out = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return out + [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]


def stored_tools(raw: Any) -> list[dict[str, Any]]:
    """An export row's ``tools`` column (JSON text of a list, as stored). Anything else that is
    text is taken as one tool's name (the exporter probes every column with a plain string)."""
    if not raw:
        return []
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [{"type": "function", "function": {"name": raw}}]
    return list(raw) if isinstance(raw, list) else []


def with_call_ids(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``msgs`` with every tool call given an id and every tool result the id of the call it answers,
    as OpenAI's fine-tuning format requires (LLaMA-Factory's ``function_call``/``observation`` turns
    have none). A call without an id gets ``call_<turn index>_<k>`` (its turn's index in ``msgs``,
    its place in the turn); the tool turns that follow a calling turn answer its calls in order: one
    without a ``tool_call_id`` gets the first call not yet answered. Ids that exist are kept; a tool
    turn beyond the calls is left without one (never an answer invented for a call). Pure: ``msgs``
    is not changed."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # the ids of the last calling turn's calls not yet answered
    for i, m in enumerate(msgs):
        if m.get("tool_calls"):
            calls = [c if c.get("id") else {"id": f"call_{i}_{k}", **c} for k, c in enumerate(m["tool_calls"])]
            m = {**m, "tool_calls": calls}
            answered = set()
            for t in msgs[i + 1:]:
                if t.get("role") != "tool":
                    break
                answered.add(t.get("tool_call_id"))
            pending = [c["id"] for c in calls if c["id"] not in answered]
        elif m.get("role") == "tool":
            if not m.get("tool_call_id") and pending:
                m = {**m, "tool_call_id": pending.pop(0)}
        else:
            pending = []
        out.append(m)
    return out


def to_openai(row: dict[str, Any]) -> dict[str, Any]:
    """OpenAI chat fine-tuning form: ``messages`` (an assistant turn that only calls tools has
    content null; every tool call has an id and every tool turn the ``tool_call_id`` it answers,
    made by ``with_call_ids`` where the stored conversation has none; turns keep ``weight``) and
    ``tools``. Ids are made here, not at import: the stored conversation stays as imported.

    OpenAI accepts a turn ``weight`` of 0 or 1 only: a weight above 0 (a corrected turn weighted
    2.5 here) is written as 1, trained but not weighted up; the messages and sharegpt exports keep
    the number."""
    msgs = [{**m, "content": None} if m.get("tool_calls") and not m.get("content") else m for m in to_messages(row)]
    msgs = [{**m, "weight": 1 if m["weight"] > 0 else 0} if m.get("weight") is not None else m for m in msgs]
    return {"messages": with_call_ids(msgs), "tools": stored_tools(row.get("tools"))}


SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def _call_value(calls: list[dict[str, Any]]) -> str:
    """LLaMA-Factory's ``function_call`` value: {name, arguments} (a list for parallel calls) as JSON."""
    out = []
    for c in calls:
        fn = c.get("function", {})
        args: Any = fn.get("arguments", "")
        if isinstance(args, str):
            try:
                args = orjson.loads(args)
            except orjson.JSONDecodeError:
                args = fn.get("arguments", "")  # not JSON: kept as the string it is
        out.append({"name": fn.get("name", ""), "arguments": args})
    return orjson.dumps(out[0] if len(out) == 1 else out).decode()


def to_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory ShareGPT form: ``conversations`` of from/value (system turn first, tool calls
    as ``function_call``, tool results as ``observation``, a turn's ``weight`` kept beside it) and
    ``tools`` as JSON text ('' when none). ShareGPT has no place for the text of an assistant turn
    that also calls tools, nor for call ids: those are not written."""
    conv: list[dict[str, Any]] = []
    for m in to_messages(row):
        if m.get("tool_calls"):
            turn: dict[str, Any] = {"from": "function_call", "value": _call_value(m["tool_calls"])}
        else:
            turn = {"from": SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
        if m.get("weight") is not None:
            turn["weight"] = m["weight"]
        conv.append(turn)
    tools = [t.get("function", t) if t.get("type", "function") == "function" else t
             for t in stored_tools(row.get("tools"))]
    return {"conversations": conv, "tools": orjson.dumps(tools).decode() if tools else ""}


EXPORT_PROVENANCE = ["pair_id", "revision_id", "split", "weight", "tags", "document_id", "page", "char_start",
                     "char_end", "generator", "generator_version", "source_uri", "source_line",
                     "rating", "n_ratings"]  # mean of the reviewers' 1-5 ratings of this revision (null: none), how many


def export_record(fmt: str, row: dict[str, Any]) -> dict[str, Any]:
    prov = {k: row.get(k) for k in EXPORT_PROVENANCE}
    prov["tags"] = list(prov["tags"] or [])
    if fmt in ("alpaca", "parquet"):
        rec: dict[str, Any] = {"instruction": row["instruction"], "input": row["input"], "output": row["response"]}
        if row.get("system"):
            rec["system"] = row["system"]
        if row.get("messages"):
            rec["messages"] = to_messages(row)
        if fmt == "parquet" and stored_tools(row.get("tools")):  # JSON text: a tool's parameters are free-form
            rec["tools"] = orjson.dumps(stored_tools(row.get("tools"))).decode()
    elif fmt == "messages":
        rec = {"messages": to_messages(row)}
        if stored_tools(row.get("tools")):
            rec["tools"] = stored_tools(row.get("tools"))
    elif fmt == "openai":
        rec = to_openai(row)
    elif fmt == "sharegpt":
        rec = to_sharegpt(row)
    elif fmt == "prompt-completion":
        msgs = to_messages(row)
        rec = {"prompt": msgs[:-1], "completion": msgs[-1:]}
    else:
        raise FileFormatError(f"unknown export format {fmt!r}; use alpaca, messages, openai, sharegpt, "
                              f"prompt-completion or parquet")
    return {**rec, **prov}


def write_jsonl(records: Any, out: io.BufferedWriter) -> int:
    n = 0
    for rec in records:
        out.write(orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        n += 1
    return n
