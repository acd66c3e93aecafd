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
    assert stored(fresh) == stored(project)


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
