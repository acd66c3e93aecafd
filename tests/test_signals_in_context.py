"""Quality signals that know the data: pair kinds, look-alikes that must stay clean (URLs as tool
arguments, sums that look like phone numbers, terse answers, complete answers ending in code or
a number), the validators (tool calls, code blocks, arithmetic, answer format), switching
signals off per project, and precision on the benchmark's labelled set."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from analysis import pair_kinds, validators
from analysis import signals as sig
from analysis.curate import run_signals
from store import pairs as pairs_store
from store.filters import parse_where
from store.records import NewPair, PairContent
from tests.bench.curation_quality_signals import labelled_set, scores
from tuneloop.cli import app

TOOLS = ("You have access to the following tools:\n"
         "request(url: str, method: str = 'GET') - fetch a web page\npython(code: str) - run Python code")
SHELL_TOOLS = ('Functions: [{"name": "cmd_controller.execute", "parameters": {"type": "dict", "properties": '
               '{"command": {"type": "string"}, "unit": {"type": "string"}}, "required": ["command"]}}]')
JSON_TOOLS = 'Tools: [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", ' \
             '"properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}}]'
CHAT = ("Tides are caused mainly by the gravity of the Moon, which pulls the oceans on the near side of the Earth "
        "and leaves a second bulge on the far side, so most coasts see two high tides a day.")
MATH = "Tom has 8*3 = <<8*3=24>>24 pens.\nHe gives away 4, so 24-4 = <<24-4=20>>20 pens are left.\n#### 20"


def frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame({"revision_id": [f"r{i}" for i in range(len(rows))], "pair_id": [f"p{i}" for i in range(len(rows))],
                         "instruction": [r[0] for r in rows], "input": [r[1] for r in rows],
                         "response": [r[2] for r in rows]})


def flags(rows: list[tuple[str, str, str]], name: str) -> list[bool]:
    return sig.detect(frame(rows), name)["flagged"].to_list()


@pytest.mark.parametrize(("instruction", "input", "response", "kind"), [
    (TOOLS, "https://en.wikipedia.org/wiki/Tide", 'request(url="https://en.wikipedia.org/wiki/Tide")', "tool"),
    ("What is the weather in Paris?", "", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "tool"),
    ("Write a function.", "", "```python\ndef f():\n    return 1\n```", "code"),
    ("Tom has 8 packs of 3 pens. How many?", "", MATH, "math"),
    ("Tom has 8 packs of 3 pens. How many?", "", "24", "math"),
    ("Extract the names mentioned in the text.", "Ann met Bob.", "Ann, Bob", "extraction"),
    ("Why are there tides?", "", CHAT, "chat"),
])
def test_pair_kind_of_one_pair(instruction, input, response, kind):
    assert pair_kinds.kinds(frame([(instruction, input, response)])).to_list() == [kind]


def test_label_kind_needs_the_value_to_recur_in_the_dataset():
    rows = [("Classify: where is my card?", "", "card_arrival"), ("Classify: card not here", "", "card_arrival"),
            ("Classify: my pin is blocked", "", "pin_blocked"), ("Who wrote Hamlet?", "", "Shakespeare")]
    assert pair_kinds.kinds(frame(rows)).to_list() == ["label", "label", "chat", "chat"]


def test_url_passed_to_a_tool_is_not_a_placeholder_but_an_unused_url_is():
    rows = [(TOOLS, "https://www.bbc.co.uk/news/world-68301234", 'request(url="https://www.bbc.co.uk/news/world-68301234")'),
            ("Summarise this article.", "https://www.bbc.co.uk/news/world-68301234", "The talks ended without agreement."),
            ("Summarise this article.", "https://example.org/a", "Fetching https://example.org/a first: it says the shop is closed.")]
    assert flags(rows, "placeholder_input") == [False, True, False]


def test_phone_numbers_in_arithmetic_and_invalid_numbers_are_not_pii():
    rows = [("A house costs $20000 and a boat $30000.", "", "$20000+30000 = $<<20000+30000=50000>>50000\n#### 50000"),
            ("Sum them.", "", "Total: 2000-555-1320=<<2000-555-1320=125>>125\n#### 125"),
            ("Where is my parcel?", "", "Your order number is 123-456-7890; it ships today."),
            ("How do I reach you?", "", "Call our team on (415) 555-0132 or write to us."),
            ("How do I reach you?", "", "Ring +44 20 7946 0958 after nine.")]
    out = sig.detect(frame(rows), "pii")
    assert out["flagged"].to_list() == [False, False, False, True, True]
    assert "phone number x1" in out["reason"][3] and "555" not in out["reason"][3] and "7946" not in out["reason"][4]


def test_e_mail_at_a_reserved_example_domain_is_nobodys():
    """Seen on BFCL's real tool-use set: send_email(to='john.doe@example.com') is not personal data."""
    rows = [("Send an email to John Doe at john.doe@example.com.", "", "send_email(to='john.doe@example.com')"),
            ("Write to ops@mail.corp.test please.", "", "ok"),
            ("Mail andy@gorilla.ai about the forecast.", "", "send_email(to_address='andy@gorilla.ai')")]
    assert flags(rows, "pii") == [False, False, True]


def test_phone_ok_needs_a_phone_word_in_math_and_tool_pairs():
    assert sig.phone_ok("(415) 555-0132", "Call ", "", "chat")
    assert not sig.phone_ok("(415) 555-0132", "the total was ", "", "math")
    assert sig.phone_ok("(415) 555-0132", "the shop's phone is ", "", "math")
    assert not sig.phone_ok("415-555-0132", "8 * ", " =", "chat")


def test_length_outliers_are_within_a_kind_and_terse_answers_are_complete():
    chat = [("Explain tides.", "", CHAT)] * 30
    terse_math = [("Tom has 8 packs of 3 pens. How many?", "", str(n)) for n in range(20, 30)]
    labels = [("Classify this message.", "", lab) for lab in ["card_arrival", "pin_blocked"] * 5]
    broken = [("Explain why the sky is blue.", "", "Yes."), ("Explain gravity.", "", " ".join([CHAT] * 12))]
    got = flags(chat + terse_math + labels + broken, "length")
    assert got == [False] * 50 + [True, True]


@pytest.mark.parametrize(("response", "flagged"), [
    (MATH, False),
    ("First 3 + 4 = 7, and then we multiply 7 by 2 to get 14 as the total so the answer is 14", False),
    ("```python\nfor x in items:\n    print(x,\n          end='')\n```", False),
    ("The main reasons are cost, time and the fact that most of the teams are working with the", True),
])
def test_truncated_knows_math_and_code_endings(response, flagged):
    assert flags([("Answer it.", "", response)], "truncated") == [flagged]


def test_language_ignores_english_math_full_of_units():
    math = ("He sells 40 cups per day at $3 per cup, so 40*3 = <<40*3=120>>120 per day and 120*7 = <<120*7=840>>840 "
            "per week, which is 840*4 = <<840*4=3360>>3360 per month.\n#### 3360")
    french = "Le sujet est très intéressant et nous pensons que il est important pour la vie de tous les jours."
    assert flags([("How much per month?", "", math), ("Explain.", "", french)], "language") == [False, True]


@pytest.mark.parametrize(("prompt", "response", "problem"), [
    (TOOLS, 'request(url="https://a.example/?q="x"")', "syntax"),
    (TOOLS, 'fetch(url="https://a.example/")', "unknown_tool"),
    (TOOLS, 'request(link="https://a.example/")', "unknown_argument"),
    (TOOLS, 'request(url="https://a.example/"))"', "stray"),
    (TOOLS, 'python(code="print(17 * 23")', "syntax"),
    (JSON_TOOLS, '{"name": "get_weather", "arguments": {"unit": "C"}}', "missing_argument"),
    (JSON_TOOLS, '{"name": "get_weather", "arguments": {"city": "Paris",}}', "syntax"),
    (TOOLS, 'request(url="https://a.example/")', None),
    (TOOLS, 'python(code="print(17 * 23)")', None),
    # a shell runner's command is not Python (BFCL's cmd_controller.execute, seen on the real set)
    (SHELL_TOOLS, "cmd_controller.execute(command='dir C:\\\\', unit='N/A')", None),
    (SHELL_TOOLS, "cmd_controller.execute(command='tasklist /FI \"IMAGENAME eq Code.exe\"')", None),
    (JSON_TOOLS, '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', None),
    (JSON_TOOLS, "[get_weather(city='Paris'), get_weather(city='Rome', unit='C')]", None),
    (JSON_TOOLS, "[get_weather(city='Paris'), get_time(city='Rome')]", "unknown_tool"),
    (JSON_TOOLS, "[get_weather(city='Paris')]]", "stray"),
])
def test_tool_call_validator(prompt, response, problem):
    out = sig.detect(frame([(prompt, "", response)]), "tool_call")
    assert out["flagged"][0] is (problem is not None), out.to_dicts()
    if problem:
        assert problem in json.loads(out["details"][0])["problems"]


def test_declared_tools_from_signatures_and_json_schemas():
    tools = validators.declared_tools(TOOLS + "\n" + JSON_TOOLS)
    assert tools["request"].params == {"url", "method"} and tools["request"].required == {"url"}
    assert tools["get_weather"].params == {"city", "unit"} and tools["get_weather"].required == {"city"}


def test_an_answer_without_the_call_its_tools_call_for_is_flagged():
    rows = [(TOOLS, f"https://a.example/{i}", f'request(url="https://a.example/{i}")') for i in range(9)]
    rows.append((TOOLS, "https://a.example/9", "Sure, I will look that up for you."))
    out = sig.detect(frame(rows), "tool_call")
    assert out["flagged"].to_list() == [False] * 9 + [True] and "no tool call" in out["reason"][9]
    # one pair alone declaring tools sets no expectation
    assert not sig.detect(frame(rows[-1:]), "tool_call")["flagged"][0]


def test_tools_declared_in_a_system_turn_are_checked():
    msgs = [{"role": "system", "content": TOOLS}, {"role": "user", "content": "Open https://a.example/x"}]
    rows = []
    for call in ['request(uri="https://a.example/x")', 'request(url="https://a.example/x")']:
        rows.append(json.dumps([*msgs, {"role": "assistant", "content": call}]))
    df = frame([("", "", ""), ("", "", "")]).with_columns(messages=pl.Series(rows))
    out = sig.detect(df, "tool_call")
    assert out["flagged"].to_list() == [True, False] and "no parameter 'uri'" in out["reason"][0]


@pytest.mark.parametrize(("response", "flagged"), [
    ("```sql\nSELECT name FROM users WHERE id = 3\n```", False),
    ("```sql\nSELECT name FROM users WHERE (id = 3\n```", True),
    ("```python\nimport os\n!pip install x\nprint(os.name)\n```", False),
    ("```python\nprint 'hi'\n```", True),
    ("```json\n{\"a\": [1, 2]}\n```", False),
    ("```json\n{\"a\": [1, 2}\n```", True),
    ("```python\ndef f(x):\n    ...\n```", False),
])
def test_code_blocks_parse_in_their_language(response, flagged):
    out = sig.detect(frame([("Write it.", "", response)]), "code_syntax")
    assert out["flagged"][0] is flagged, out.to_dicts()
    if flagged:
        assert "block 1 does not parse" in out["reason"][0]


@pytest.mark.parametrize(("text", "wrong"), [
    ("He has 8*3 = 240 pens.", ["8*3 = 240"]),
    ("He has 8*3 = <<8*3=24>>24 pens.", []),
    ("It costs $5 x 3 = $15 and 1,200 / 4 = 300 and 7 × 6 = 42.", []),
    ("It costs $5 x 3 = $16.", ["$5 x 3 = $16"]),
    ("(10 - 2) * 3 = 24 and 10/3 = 3.33 and 7/2 = 3 boxes", []),
    ("So 5 + 4 = 9 + 1 = 10 in all", []),
    ("If 2x + 3 = 11 then x = 4", []),
    ("The trip took 60 / 3/4 = 80 minutes", []),
    ("He uses 600 x 30 = 18 000 watts and $1 / 2 = 50 cents", []),
    ("He played 14*20=140 minutes", ["14*20 = 140"]),
])
def test_arithmetic_steps(text, wrong):
    assert [s for s, _ in validators.arithmetic_errors(text)] == wrong


def test_arithmetic_runs_on_math_pairs_only():
    rows = [("Tom has 8 packs of 3.", "", "Tom has 8*3 = 240 pens.\n#### 240"),
            (TOOLS, "Is 8*3 = 240?", 'python(code="print(8*3 == 240)")')]  # a tool call, not a worked step
    assert sig.detect(frame(rows), "arithmetic")["flagged"].to_list() == [True, False]


def test_answer_format_is_relative_to_the_kind():
    rows = [("Tom has 8 packs of 3. How many?", "", MATH)] * 12
    rows.append(("Tom has 8 packs of 3. How many?", "", "Tom has 8*3 = <<8*3=24>>24 pens.\nSo he has 24 pens in total now."))
    rows.append(("Tom has 8 packs of 3. How many?", "", "24"))  # a terse answer is not a worked one
    out = sig.detect(frame(rows), "answer_format")
    assert out["flagged"].to_list() == [False] * 12 + [True, False]
    assert "'#### n'" in out["reason"][12]
    assert not sig.detect(frame(rows[:8] + rows[12:13]), "answer_format")["flagged"].any()  # too few to know


def test_benchmark_set_precision_and_recall_per_signal():
    df = labelled_set(n=12, seed=3)
    got = scores(df, sig.run(df.drop("truth", "case")), list(sig.DETECTORS))
    assert got.filter(pl.col("planted") == 0).height == 0, "every signal has planted defects"
    weak = got.filter((pl.col("precision").fill_null(0) < 0.8) | (pl.col("recall") < 0.8))
    assert weak.height == 0, weak.to_dicts()


def _add(con, instruction, response):
    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=instruction, response=response))])[0]


def test_a_switched_off_signal_does_not_run_and_its_flags_are_cleared(project):
    from store import settings

    with project.connect() as con:
        pii = _add(con, "Contact?", "Mail jane.doe@fastmail.fm")
        _add(con, "Explain gravity.", "")
    run_signals(project)
    with project.connect() as con:
        settings.put(con, "signals", sig.toggled({}, disable=["pii"]), author="t")
    counts = run_signals(project)
    row = counts.filter(pl.col("name") == "pii").to_dicts()[0]
    assert row["enabled"] is False and row["flagged"] == 0
    with project.connect() as con:
        assert set(pairs_store.frame(con, parse_where("flagged=pii"))["pair_id"]) == set()
        assert len(pairs_store.frame(con, parse_where("flagged=empty_response"))) == 1
        settings.put(con, "signals", sig.toggled(settings.get(con, "signals"), enable=["pii"]), author="t")
    run_signals(project)
    with project.connect() as con:
        assert set(pairs_store.frame(con, parse_where("flagged=pii"))["pair_id"]) == {pii}


def test_disabled_setting_ignores_unknown_names_and_bad_values():
    assert sig.disabled({"disabled": ["pii", "gone"]}) == ["pii"]
    assert sig.disabled("nonsense") == [] and sig.disabled({"disabled": "pii"}) == []
    with pytest.raises(ValueError, match="unknown detector"):
        sig.toggled({}, disable=["nope"])


def test_cli_disable_and_enable(project):
    runner = CliRunner()
    with project.connect() as con:
        _add(con, "Contact?", "Mail jane.doe@fastmail.fm")
    p = str(project.root)
    r = runner.invoke(app, ["signals", "--disable", "pii,length", "--project", p], catch_exceptions=False)
    assert r.exit_code == 0 and "switched off for this project: length, pii" in r.output
    listed = runner.invoke(app, ["signals", "--list", "--project", p], catch_exceptions=False).output
    assert "tool_call" in listed and "arithmetic" in listed
    r = runner.invoke(app, ["signals", "--enable", "pii", "--project", p], catch_exceptions=False)
    assert r.exit_code == 0 and "switched off for this project: length" in r.output
    r = runner.invoke(app, ["signals", "--disable", "nope", "--project", p], catch_exceptions=False)
    assert r.exit_code == 2 and "unknown detector" in r.output
