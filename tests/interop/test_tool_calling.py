"""Issue 17 (1, 2): tool-calling conversations and per-turn weights survive import, training and export.

Sample lines are shaped like OpenAI's chat fine-tuning format with tools (assistant ``tool_calls``
with content null, ``tool`` turns with ``tool_call_id``, ``weight`` per message, text parts, the
``developer`` role) and LLaMA-Factory's ShareGPT tool data (``data/glaive_toolcall_en_demo.json``:
``function_call``/``observation`` turns, ``tools`` as a JSON string).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from ingest.datasets import RecordError, detect_format, export_record, normalise
from ingest.exporter import EXPORT_FORMATS, export_slice
from ingest.importer import import_file
from store import pairs, slices
from store.db import Project
from store.records import SliceFilter

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                     "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}

OPENAI_TOOLS = {
    "messages": [
        {"role": "developer", "content": "You are a weather bot. Use tools when needed."},
        {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris"},
                                     {"type": "text", "text": "and in Lyon?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Lyon\", \"unit\": \"c\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18, \"sky\": \"cloudy\"}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp\": 22, \"sky\": \"sunny\"}"},
        {"role": "assistant", "content": "Paris: 18°C and cloudy. Lyon: 22°C and sunny.", "weight": 1},
    ],
    "tools": [WEATHER_TOOL],
    "parallel_tool_calls": True,
}
OPENAI_WEIGHTS = {
    "messages": [
        {"role": "system", "content": "Marv is a sarcastic chatbot."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.", "weight": 0},
        {"role": "user", "content": "Who wrote 'Romeo and Juliet'?"},
        {"role": "assistant", "content": "William Shakespeare. Ever heard of him?", "weight": 1},
    ]
}
SHAREGPT_TOOLS = {
    "conversations": [
        {"from": "human", "value": "Convert 100 USD to EUR, please."},
        {"from": "function_call",
         "value": "{\"name\": \"convert_currency\", \"arguments\": {\"amount\": 100, \"from\": \"USD\", \"to\": \"EUR\"}}"},
        {"from": "observation", "value": "{\"converted_amount\": 92.5, \"currency\": \"EUR\"}"},
        {"from": "gpt", "value": "100 USD is about 92.50 EUR."},
    ],
    "system": "You are a helpful assistant with access to functions.",
    "tools": json.dumps([{"name": "convert_currency", "description": "Convert an amount between currencies",
                          "parameters": {"type": "object", "properties": {
                              "amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
                              "required": ["amount", "from", "to"]}}]),
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def stored(project: Project) -> dict[str, tuple]:
    """pair id -> the stored conversation (system, messages, tools) as plain data."""
    with project.connect() as con:
        return {r["pair_id"]: (r["system"], orjson.loads(r["messages"] or "[]"), orjson.loads(r["tools"] or "[]"))
                for r in pairs.frame(con).iter_rows(named=True)}


# ------------------------------------------------------------------ import


def test_openai_tool_calls_stored_as_they_are():
    c = normalise("openai", OPENAI_TOOLS).content
    assert c["system"] == "You are a weather bot. Use tools when needed."  # developer -> system
    assert [m["role"] for m in c["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    assert c["messages"][0]["content"] == "What's the weather in Paris\nand in Lyon?"
    call = c["messages"][1]
    assert call["content"] == "" and [t["id"] for t in call["tool_calls"]] == ["call_1", "call_2"]
    assert call["tool_calls"][0]["function"] == {"name": "get_weather",
                                                 "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}
    assert c["messages"][2] == {"role": "tool", "content": "{\"temp\": 18, \"sky\": \"cloudy\"}",
                                "tool_call_id": "call_1"}
    assert c["messages"][-1]["weight"] == 1.0
    assert c["tools"] == [WEATHER_TOOL]
    assert c["instruction"].startswith("What's the weather") and c["response"].startswith("Paris: 18")


def test_weights_kept_and_single_turn_with_weight_not_flattened():
    c = normalise("messages", OPENAI_WEIGHTS).content
    assert [m.get("weight") for m in c["messages"]] == [None, 0.0, None, 1.0]
    one = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0}]}
    assert normalise("openai", one).content["messages"][1]["weight"] == 0.0


def test_sharegpt_function_call_and_observation():
    c = normalise("sharegpt", SHAREGPT_TOOLS).content
    assert c["system"].startswith("You are a helpful assistant")
    assert [m["role"] for m in c["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert c["messages"][1]["tool_calls"] == [{"type": "function", "function": {
        "name": "convert_currency", "arguments": "{\"amount\":100,\"from\":\"USD\",\"to\":\"EUR\"}"}}]
    assert c["messages"][2]["content"] == "{\"converted_amount\": 92.5, \"currency\": \"EUR\"}"
    assert c["tools"][0]["type"] == "function" and c["tools"][0]["function"]["name"] == "convert_currency"


@pytest.mark.parametrize("rec,field", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                   {"role": "assistant", "content": "a cat"}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"},
                   {"role": "assistant", "content": "a"}]}, "messages[1]"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {}}]},
                   {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     "messages[1].tool_calls[0].function.name"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": "heavy"}]},
     "messages[1].weight"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": "{oops"},
     "tools"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]},
     "messages[1].content"),
])
def test_bad_tool_records_name_the_field(rec, field):
    with pytest.raises(RecordError) as err:
        normalise("openai", rec)
    assert err.value.field == field


def test_import_openai_file_bad_line_named_batch_goes_on(project, tmp_path):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "orphan"},
                        {"role": "assistant", "content": "a"}]}
    f = write_jsonl(tmp_path / "tools.jsonl", [OPENAI_TOOLS, bad, OPENAI_WEIGHTS])
    assert detect_format(f) == "messages"
    r = import_file(project, f, "openai")
    assert (r.rows, r.new, r.skipped) == (3, 2, 1)
    assert "2" in str(r.errors[0]) and "messages[1]" in str(r.errors[0])
    got = list(stored(project).values())
    assert any(tools == [WEATHER_TOOL] for _, _, tools in got)


# ------------------------------------------------------------------ export


def _export(project: Project, fmt: str, out: Path) -> list[dict]:
    with project.connect() as con:
        slices.create(con, "all", SliceFilter(), eval_fraction=0.0, split_by="pair", seed=1)
    export_slice(project, "all", fmt, out)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "messages"])
def test_round_trip_keeps_the_conversation(project, tmp_path, fmt):
    assert fmt in EXPORT_FORMATS
    rows = [OPENAI_WEIGHTS, SHAREGPT_TOOLS] if fmt == "sharegpt" else [OPENAI_TOOLS, OPENAI_WEIGHTS, SHAREGPT_TOOLS]
    for i, row in enumerate(rows):
        import_file(project, write_jsonl(tmp_path / f"in{i}.jsonl", [row]), "sharegpt" if "conversations" in row
                    else "openai")
    recs = _export(project, fmt, tmp_path / "out.jsonl")
    assert len(recs) == len(rows)
    fresh = Project(tmp_path / "fresh").init()
    r = import_file(fresh, tmp_path / "out.jsonl", fmt)
    assert r.fatal is None and r.skipped == 0, r.errors
    if fmt != "openai":
        assert stored(fresh) == stored(project)
    else:  # the same, but the ShareGPT conversation's call and result now carry the ids the export made
        assert sorted(map(repr, stored(fresh).values())) == sorted(repr(with_made_ids(c))
                                                                   for c in stored(project).values())


def with_made_ids(conv: tuple) -> tuple:
    """A stored (system, messages, tools) with the call ids an openai export gives it."""
    from ingest.datasets import with_call_ids

    system, msgs, tools = conv
    full = ([{"role": "system", "content": system}] if system else []) + msgs
    return system, with_call_ids(full)[len(full) - len(msgs):], tools


def test_openai_export_shape():
    row = {"instruction": "", "input": "", "response": "", "system": "sys", "tags": [],
           "messages": orjson.dumps(normalise("openai", OPENAI_TOOLS).content["messages"]).decode(),
           "tools": orjson.dumps([WEATHER_TOOL]).decode()}
    rec = export_record("openai", row)
    assert rec["messages"][0] == {"role": "system", "content": "sys"}
    assert rec["messages"][2]["content"] is None and rec["messages"][2]["tool_calls"][1]["id"] == "call_2"
    assert rec["messages"][3]["tool_call_id"] == "call_1"
    assert rec["messages"][-1]["weight"] == 1.0
    assert rec["tools"] == [WEATHER_TOOL]
    heavy = orjson.loads(row["messages"])
    heavy[-1]["weight"] = 2.5  # a corrected turn weighted up: OpenAI accepts 0 or 1 only
    rec_heavy = export_record("openai", {**row, "messages": orjson.dumps(heavy).decode()})
    assert rec_heavy["messages"][-1]["weight"] == 1
    assert export_record("messages", {**row, "messages": orjson.dumps(heavy).decode()})["messages"][-1]["weight"] == 2.5
    sg = export_record("sharegpt", row)
    assert [t["from"] for t in sg["conversations"]] == ["system", "human", "function_call", "observation",
                                                        "observation", "gpt"]
    assert json.loads(sg["conversations"][2]["value"])[0] == {"name": "get_weather",
                                                              "arguments": {"city": "Paris", "unit": "c"}}
    assert json.loads(sg["tools"])[0]["name"] == "get_weather"


# ------------------------------------------------------------------ training

# A Qwen2.5-style chat template with tool support (tools in the system turn, calls as <tool_call>
# JSON with object arguments, consecutive tool results in one user turn).
QWEN_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}"
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _tokenizer(template: str | None = None):
    from transformers import AutoTokenizer

    from models.lm import tokenizer_dir

    t = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    if template:
        t.chat_template = template
    return t


@pytest.fixture(scope="module")
def smol():
    return _tokenizer()


@pytest.fixture(scope="module")
def qwen_style():
    return _tokenizer(QWEN_TOOLS_TEMPLATE)


def _row(rec: dict, fmt: str = "openai") -> dict:
    c = normalise(fmt, rec).content
    return {**c, "messages": orjson.dumps(c["messages"]).decode(),
            "tools": orjson.dumps(c["tools"]).decode() if c.get("tools") else None}


def _targets_text(tok, t) -> str:
    return tok.decode([i for i, m in zip(t.input_ids, t.loss_mask, strict=True) if m])


@pytest.mark.parametrize("template", ["bundled", "qwen-style"])
def test_tool_calls_are_targets_tool_results_are_not(template, smol, qwen_style):
    from training.formatting import conversation, response_spans, row_tools, supports_tools, tokenize_rows

    tok = smol if template == "bundled" else qwen_style
    assert supports_tools(tok) == (template == "qwen-style")
    row = _row(OPENAI_TOOLS)
    (t,), st = tokenize_rows(tok, [row], max_length=2048)
    assert st.dropped == 0
    text, spans = response_spans(tok, conversation(row), row_tools(row))
    assert len(spans) == 2  # the tool-calling turn and the answer
    # the tools are rendered (in the system turn either way), and the calls with object arguments
    assert "<tools>" in text and '"name": "get_weather"' in text
    assert '"arguments": {"city": "Paris", "unit": "c"}' in text
    targets = _targets_text(tok, t)
    assert targets.count("<tool_call>") == 2 and '"city": "Lyon"' in targets
    assert "Paris: 18°C and cloudy" in targets
    assert "<tool_response>" not in targets and '"temp"' not in targets and "<tools>" not in targets
    assert "weather in Paris" not in targets
    assert "<tool_response>" in text and '"temp": 18' in text


def test_sharegpt_tool_call_trains_on_the_call(smol):
    from training.formatting import tokenize_rows

    (t,), _ = tokenize_rows(smol, [_row(SHAREGPT_TOOLS, "sharegpt")], max_length=2048)
    targets = _targets_text(smol, t)
    assert '"name": "convert_currency"' in targets and "92.50 EUR" in targets
    assert "converted_amount" not in targets


def test_per_turn_weights_mask_and_scale(smol):
    from training.data import collate
    from training.formatting import tokenize_rows

    rec = json.loads(json.dumps(OPENAI_WEIGHTS))
    rec["messages"][-1]["weight"] = 2.5
    (t,), _ = tokenize_rows(smol, [{**_row(rec), "weight": 2.0}], max_length=2048)
    targets = _targets_text(smol, t)
    assert "Shakespeare" in targets and "Paris" not in targets  # the weight-0 turn has no targets
    assert t.token_weights is not None
    assert {w for w, m in zip(t.token_weights, t.loss_mask, strict=True) if m} == {2.5}
    for packed in (True, False):
        mb = collate([t], pad_id=0, packed=packed)
        got = mb.weights.reshape(-1).tolist()
        assert mb.n_loss_tokens == t.n_loss_tokens - 1 or mb.n_loss_tokens == t.n_loss_tokens
        assert {w for w in got if w} == {5.0}  # example weight x turn weight
        assert mb.loss_weight == pytest.approx(5.0 * mb.n_loss_tokens)
    # without weights: no per-token weights, as before
    (plain,), _ = tokenize_rows(smol, [_row(OPENAI_TOOLS)], max_length=2048)
    assert plain.token_weights is None


def test_parquet_keeps_tool_calls_results_weights_and_tools_in_one_schema(project, tmp_path):
    """Parquet has a schema: turns carry every field a stored turn can have (null where a turn has
    none), so a split with tool calls and one without load together in datasets."""
    import datasets
    import pyarrow.parquet as pq

    import_file(project, write_jsonl(tmp_path / "tools.jsonl", [OPENAI_TOOLS, OPENAI_WEIGHTS]), "openai")
    plain = Project(tmp_path / "plain").init()
    import_file(plain, write_jsonl(tmp_path / "plain.jsonl", [{"instruction": "hi", "input": "", "output": "yo"}]),
                "alpaca")
    for proj, name in ((project, "tools.parquet"), (plain, "plain.parquet")):
        with proj.connect() as con:
            slices.create(con, "all", SliceFilter(), eval_fraction=0.0, split_by="pair", seed=1)
        export_slice(proj, "all", "parquet", tmp_path / name)
    rows = pq.read_table(tmp_path / "tools.parquet").to_pylist()
    turns = [m for r in rows for m in r["messages"]]
    call = next(m for m in turns if m["tool_calls"])
    assert [c["function"]["name"] for c in call["tool_calls"]] == ["get_weather", "get_weather"]
    assert {m["tool_call_id"] for m in turns if m["role"] == "tool"} == {"call_1", "call_2"}
    assert any(m["weight"] == 0 for m in turns)
    assert [json.loads(r["tools"]) for r in rows if r["tools"]] == [[WEATHER_TOOL]]
    for first, second in (("tools", "plain"), ("plain", "tools")):
        ds = datasets.load_dataset("parquet", data_files={"train": str(tmp_path / f"{first}.parquet"),
                                                          "test": str(tmp_path / f"{second}.parquet")})
        assert ds["train"].features == ds["test"].features


# ------------------------------------------------ call ids (LLaMA-Factory glaive data has none)

# Shaped like LLaMA-Factory's data/glaive_toolcall_en_demo.json (a JSON array; ``tools`` a JSON
# string of bare function objects; ``function_call`` values {name, arguments} as JSON text, a list
# for parallel calls; a conversation that calls nothing), with a second round and a parallel call.
_GLAIVE_TOOLS = json.dumps([
    {"name": "generate_password", "description": "Generate a random password",
     "parameters": {"type": "object", "properties": {"length": {"type": "integer"}}, "required": ["length"]}},
    {"name": "get_stock_price", "description": "Get the current stock price",
     "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}}])
GLAIVE = [
    {"conversations": [
        {"from": "human", "value": "I need a new password. Can you generate one for me?"},
        {"from": "gpt", "value": "Of course. How long would you like your password to be?"},
        {"from": "human", "value": "I would like it to be 12 characters long."},
        {"from": "function_call", "value": "{\"name\": \"generate_password\", \"arguments\": {\"length\": 12}}"},
        {"from": "observation", "value": "{\"password\": \"aB3#fG6&kL9@\"}"},
        {"from": "gpt", "value": "Here is your new password: aB3#fG6&kL9@."},
        {"from": "human", "value": "And the price of Apple and Microsoft stock?"},
        {"from": "function_call", "value": "[{\"name\": \"get_stock_price\", \"arguments\": {\"symbol\": \"AAPL\"}}, "
                                           "{\"name\": \"get_stock_price\", \"arguments\": {\"symbol\": \"MSFT\"}}]"},
        {"from": "observation", "value": "{\"stock_price\": 145.09}"},
        {"from": "observation", "value": "{\"stock_price\": 216.54}"},
        {"from": "gpt", "value": "Apple is at $145.09 and Microsoft at $216.54."}],
     "tools": _GLAIVE_TOOLS},
    {"conversations": [
        {"from": "human", "value": "Can you order a pizza for me?"},
        {"from": "gpt", "value": "I'm sorry, I can't order a pizza: I can only generate passwords and look up "
                                 "stock prices."}],
     "tools": _GLAIVE_TOOLS},
]


def openai_tool_problems(rec: dict) -> list[str]:
    """What OpenAI's chat fine-tuning format would reject in a record's tool calling: a call without
    an id, ``type`` other than "function", a name, or ``arguments`` as a JSON string; a tool turn
    without the ``tool_call_id`` of a call of the assistant turn before it; a call left unanswered."""
    out, open_ids = [], set()
    for i, m in enumerate(rec["messages"]):
        if m["role"] == "assistant" and m.get("tool_calls"):
            if open_ids:
                out.append(f"messages[{i}]: calls {sorted(open_ids)} before unanswered")
            open_ids = set()
            for k, c in enumerate(m["tool_calls"]):
                at = f"messages[{i}].tool_calls[{k}]"
                if not isinstance(c.get("id"), str) or not c["id"]:
                    out.append(f"{at}.id missing")
                elif c["id"] in open_ids:
                    out.append(f"{at}.id {c['id']!r} repeated")
                else:
                    open_ids.add(c["id"])
                if c.get("type") != "function":
                    out.append(f"{at}.type {c.get('type')!r}")
                fn = c.get("function", {})
                if not isinstance(fn.get("name"), str) or not fn["name"]:
                    out.append(f"{at}.function.name missing")
                if not isinstance(fn.get("arguments"), str) or not isinstance(json.loads(fn["arguments"]), dict):
                    out.append(f"{at}.function.arguments not a JSON object as a string")
        elif m["role"] == "tool":
            if m.get("tool_call_id") not in open_ids:
                out.append(f"messages[{i}].tool_call_id {m.get('tool_call_id')!r} answers no open call")
            open_ids.discard(m.get("tool_call_id"))
        elif open_ids:
            out.append(f"messages[{i}]: calls {sorted(open_ids)} unanswered")
            open_ids = set()
    return out


def test_glaive_sharegpt_exports_valid_openai_tool_calls_and_round_trips_the_ids(project, tmp_path):
    src = tmp_path / "glaive_toolcall_en_demo.json"
    src.write_text(json.dumps(GLAIVE, ensure_ascii=False, indent=2), encoding="utf-8")
    r = import_file(project, src, "sharegpt")
    assert r.fatal is None and (r.new, r.skipped) == (2, 0), r.errors
    before = stored(project)
    recs = _export(project, "openai", tmp_path / "out.jsonl")
    assert [openai_tool_problems(rec) for rec in recs] == [[], []]
    conv = next(rec["messages"] for rec in recs if len(rec["messages"]) > 2)
    calls = [(i, m["tool_calls"]) for i, m in enumerate(conv) if m.get("tool_calls")]
    assert [[c["id"] for c in cs] for _, cs in calls] == [["call_3_0"], ["call_7_0", "call_7_1"]]
    assert [m["tool_call_id"] for m in conv if m["role"] == "tool"] == ["call_3_0", "call_7_0", "call_7_1"]
    assert calls[1][1][1] == {"id": "call_7_1", "type": "function", "function": {
        "name": "get_stock_price", "arguments": "{\"symbol\":\"MSFT\"}"}}
    assert conv[3]["content"] is None and conv[9] == {"role": "tool", "content": "{\"stock_price\": 216.54}",
                                                      "tool_call_id": "call_7_1"}
    assert stored(project) == before  # made at export: the stored conversation stays as imported
    assert all("id" not in c for _, msgs, _ in before.values() for m in msgs for c in m.get("tool_calls", []))
    # OpenAI -> import -> OpenAI: the ids are now the data's own, stored and exported unchanged
    fresh = Project(tmp_path / "fresh").init()
    r = import_file(fresh, tmp_path / "out.jsonl", "openai")
    assert r.fatal is None and (r.new, r.skipped) == (2, 0), r.errors
    again = _export(fresh, "openai", tmp_path / "again.jsonl")
    assert sorted(json.dumps(x["messages"]) for x in again) == sorted(json.dumps(x["messages"]) for x in recs)


def _call(name: str, cid: str | None = None) -> dict:
    return {**({"id": cid} if cid else {}), "type": "function", "function": {"name": name, "arguments": "{}"}}


@pytest.mark.parametrize("calls,results,want_calls,want_results", [
    # one observation per call: paired in order
    ([_call("a"), _call("b")], [None, None], ["call_1_0", "call_1_1"], ["call_1_0", "call_1_1"]),
    # ids that exist are kept; a result without one answers the first call not yet answered
    ([_call("a", "x"), _call("b")], ["call_1_1", None], ["x", "call_1_1"], ["call_1_1", "x"]),
    # LLaMA-Factory's one observation for a parallel call: the first call's; the second stays unanswered
    ([_call("a"), _call("b")], [None], ["call_1_0", "call_1_1"], ["call_1_0"]),
    # more results than calls: the extra one is left without an id (no answer invented)
    ([_call("a")], [None, None], ["call_1_0"], ["call_1_0", None]),
])
def test_call_ids_made_and_paired_in_order(calls, results, want_calls, want_results):
    from ingest.datasets import with_call_ids

    msgs = ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": calls}]
            + [{"role": "tool", "content": f"r{j}", **({"tool_call_id": t} if t else {})} for j, t in enumerate(results)]
            + [{"role": "assistant", "content": "a"}])
    snapshot = json.dumps(msgs)
    out = with_call_ids(msgs)
    assert json.dumps(msgs) == snapshot  # pure
    assert [c["id"] for c in out[1]["tool_calls"]] == want_calls
    assert [m.get("tool_call_id") for m in out if m["role"] == "tool"] == want_results
    assert out[0] == msgs[0] and out[-1] == msgs[-1]
