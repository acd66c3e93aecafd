"""Benchmark: precision/recall/F1 of every quality signal and validator on a labelled set,
the detectors before pair kinds (old) against now (new), in the same run.

    python -m tests.bench.curation_quality_signals [--n 40] [--seed 0] [--old-ref 34c7179] [--gsm8k train.jsonl]

The set (``labelled_set``) mixes tool-use pairs (a shared tool-description header, ``request(url=...)``
calls with real-looking URLs), GSM8K-like worked math, terse label answers and chat answers.
Every signal has planted defects (the truth) and clean look-alikes: URLs that are tool
arguments, sums whose digits look like phone numbers, terse answers, complete answers that end
in code or a number, English math full of "per". "Old" is ``analysis/signals.py`` at
``--old-ref`` loaded from git (no pair kinds, no validators: those rows read n/a).
``--gsm8k`` also runs the new signals on real GSM8K rows and prints every flag for inspection.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import polars as pl

from analysis import pair_kinds
from analysis import signals as sig

TOOL_HEADER = (
    "You are a helpful assistant. You have access to the following tools:\n"
    "request(url: str, method: str = 'GET') - fetch a web page and return its text\n"
    "python(code: str) - run Python code and return what it prints\n"
    "Answer with exactly one tool call."
)
SITES = ["https://en.wikipedia.org/wiki/{}", "https://www.bbc.co.uk/news/{}-68301234", "https://github.com/{}/issues/4821",
         "https://api.open-meteo.com/v1/forecast?latitude=52.52&longitude=13.41&city={}",
         "https://docs.python.org/3/library/{}.html", "https://www.nytimes.com/2024/03/15/{}.html",
         "https://example-shop.com/orders/415-555-0132?ref={}"]
TOPICS = ["Photosynthesis", "Volcano", "Berlin", "asyncio", "Tides", "Jazz", "Glacier", "Marathon", "Honeybee", "Comet"]
NAMES = ["Tom", "Maria", "Ali", "Jenna", "Kofi", "Lena", "Raj", "Sofia"]
LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked"]
CHAT_Q = ["Explain how {} works.", "Give me a short overview of {}.", "Why is {} important?", "Describe {} for a beginner."]
SENT = ["{} is a topic that many people find interesting because it connects several ideas.",
        "In short, the main process involves a series of steps that happen in a predictable order.",
        "Scientists have studied it for a long time and the basic principles are well understood.",
        "A simple example makes the idea clearer for someone who is new to the subject.",
        "It also matters in daily life, since it affects what we eat, where we live and how we travel.",
        "Most textbooks describe it in a few pages and add a diagram to show the main parts."]


def _chat(rng: random.Random, topic: str) -> str:
    return " ".join(s.format(topic) for s in rng.sample(SENT, 4))


def _math(rng: random.Random, wrong: bool = False, final: bool = True, phone_like: bool = False) -> tuple[str, str]:
    name, a, b, c = rng.choice(NAMES), rng.randint(3, 19), rng.randint(4, 30), rng.randint(2, 9)
    if phone_like:  # big sums whose digits the old phone regex read as a number (+20000, 415-555-0132)
        a, b = rng.randint(10000, 99000), rng.randint(10000, 99000)
        q = f"{name} sold a house for ${a} and a boat for ${b} per year. How much did {name} get per year in total?"
        r = f"{name} got ${a}+{b} = $<<{a}+{b}={a + b}>>{a + b} per year.\n#### {a + b}"
        return q, r
    q = f"{name} buys {a} boxes with {b} pencils per box and gives away {c} pencils per day for 2 days. How many are left?"
    total = a * b
    shown = total * 10 if wrong else total
    left = shown - 2 * c
    r = (f"{name} has {a}*{b} = {shown} pencils.\nIn 2 days {name} gives away {c}*2 = <<{c}*2={2 * c}>>{2 * c} pencils.\n"
         f"So {shown}-{2 * c} = <<{shown}-{2 * c}={left}>>{left} pencils are left per box count.")
    return q, r + (f"\n#### {left}" if final else "")


def labelled_set(n: int = 40, seed: int = 0) -> pl.DataFrame:
    """Rows of instruction/input/response with ``truth`` (the signals that should flag) and ``case``."""
    rng = random.Random(seed)
    rows: list[dict] = []

    def add(case: str, instruction: str, inp: str, response: str, truth: tuple[str, ...] = ()) -> None:
        rows.append({"case": case, "instruction": instruction, "input": inp, "response": response, "truth": list(truth)})

    for i in range(n * 4):  # tool use: the URL is the call's argument
        url = rng.choice(SITES).format(rng.choice(TOPICS))
        add("tool_clean", TOOL_HEADER, url, f'request(url="{url}")')
        if i % 4 == 0:
            add("tool_clean_python", TOOL_HEADER, "What is 17 * 23?", 'python(code="print(17 * 23)")')
    for i in range(n // 4):
        url = rng.choice(SITES).format(rng.choice(TOPICS))
        add("tool_unescaped_quote", TOOL_HEADER, url, f'request(url="{url}?q="{TOPICS[i % 10]}"")', ("tool_call",))
        add("tool_unknown_name", TOOL_HEADER, url, f'fetch_page(url="{url}")', ("tool_call",))
        add("tool_unknown_arg", TOOL_HEADER, url, f'request(link="{url}")', ("tool_call",))
        add("tool_stray", TOOL_HEADER, url, f'request(url="{url}"))"', ("tool_call",))
        add("tool_no_call", TOOL_HEADER, url, "Sure, I will look that page up for you now.", ("tool_call",))
        add("tool_python_broken", TOOL_HEADER, "What is 17 * 23?", 'python(code="print(17 * 23")', ("tool_call",))
    for i in range(n * 2):  # math
        q, r = _math(rng, phone_like=i % 3 == 0)
        add("math_clean", q, "", r)
        if i % 4 == 0:
            add("math_terse", q, "", str(rng.randint(10, 400)))
    for _ in range(n // 4):
        q, r = _math(rng, wrong=True)
        add("math_wrong_step", q, "", r, ("arithmetic",))
        q, r = _math(rng, final=False)
        add("math_no_final_line", q, "", r, ("answer_format",))
    for i in range(n * 2):  # labels: terse and correct
        add("label_clean", f"Classify the intent of this message: 'my card request number {i}'", "", LABELS[i % 5])
    for i in range(n * 2):  # chat
        t = TOPICS[i % 10]
        add("chat_clean", CHAT_Q[i % 4].format(t), "", _chat(rng, t))
        if i % 5 == 0:
            add("chat_ends_in_code", f"How do I print {t} in Python?", "",
                f"Use the print function with the word in quotes:\n\n```python\nprint('{t}')\n```")
            add("chat_ends_in_number", f"How many letters does {t} have?", "",
                f"Counting every character of the word {t} one by one, the total number of letters in it is {len(t)}")
            add("chat_url_in_prompt", f"Is this link safe to open: https://example.org/{t}?", "", _chat(rng, t))
    for i in range(n // 4):
        t = TOPICS[i % 10]
        add("chat_truncated", CHAT_Q[0].format(t), "", _chat(rng, t) + " The next step is to compare it with the", ("truncated",))
        add("chat_french", CHAT_Q[0].format(t), "", "Le sujet est très intéressant et nous pensons que il est important pour "
            "la vie de tous les jours dans le monde.", ("language",))
        add("chat_phone", "How can I reach support?", "", f"Call our team on (415) 555-01{30 + i} or write to us.", ("pii",))
        add("chat_order_number", "Where is my parcel?", "", f"Your order number is 123-456-78{10 + i}; it ships today.")
        add("chat_ticket", "Which ticket is mine?", "", f"Your ticket is 100-200-30{10 + i} for seat 4.")
        add("chat_email", "How can I reach support?", "", f"Write to anna.{i}@fastmail.fm and we will answer.", ("pii",))
        add("chat_url_only_input", "Summarise this article.", "", "", ())  # placeholder below, empty response separate
        rows.pop()
        add("chat_url_only_input", "Summarise this article.", f"https://www.bbc.co.uk/news/world-{68300000 + i}",
            "The article says that the talks ended without agreement.", ("placeholder_input",))
        add("chat_too_long", CHAT_Q[1].format(t), "", _chat(rng, t) + " " + " ".join(
            f"Point {k}: the {rng.choice(TOPICS)} of {t} moves the {rng.choice(NAMES)} index by {k * 3} percent "
            f"in year {1900 + k}." for k in range(60)), ("length",))
        add("chat_too_short", CHAT_Q[3].format(t), "", f"{t}.", ("length",))
        add("chat_repetition", CHAT_Q[2].format(t), "", "It is great. " * 30, ("repetition",))
        add("chat_mojibake", CHAT_Q[3].format(t), "", "Itâ€™s simple. " + _chat(rng, t), ("mojibake",))
        add("chat_empty", CHAT_Q[0].format(t), "", "N/A", ("empty_response",))
        add("chat_code_broken", f"Write a Python function that returns {t}.", "",
            f"Here it is:\n\n```python\ndef get(:\n    return '{t}'\n```", ("code_syntax",))
        add("chat_json_broken", f"Give {t} as JSON.", "", f'```json\n{{"topic": "{t}",}}\n```', ("code_syntax",))
        add("chat_json_ok", f"Give {t} as JSON.", "", f'```json\n{{"topic": "{t}"}}\n```')
        add("chat_merged", CHAT_Q[0].format(t), "", f"{_chat(rng, t)}\n\n### Instruction:\nName a colour.", ("merged_instructions",))
        add("chat_echo", f"Tell me everything about the {t} please", "", f"Tell me everything about the {t} please.",
            ("echoes_instruction",))
    df = pl.DataFrame(rows)
    return df.with_columns(revision_id=pl.format("r{}", pl.int_range(pl.len())), pair_id=pl.format("p{}", pl.int_range(pl.len())))


def scores(df: pl.DataFrame, found: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Per signal: planted, flagged, precision, recall, F1 (precision null when nothing is flagged)."""
    truth = df.select("revision_id", "truth").explode("truth").drop_nulls().rename({"truth": "name"}).with_columns(t=True)
    flags = found.filter("flagged").select("revision_id", "name").with_columns(f=True)
    both = truth.join(flags, on=["revision_id", "name"], how="full", coalesce=True).with_columns(
        pl.col("t", "f").fill_null(False))
    out = both.group_by("name").agg(planted=pl.col("t").sum(), flagged=pl.col("f").sum(), tp=(pl.col("t") & pl.col("f")).sum())
    out = pl.DataFrame({"name": names}).join(out, on="name", how="left").with_columns(pl.col("planted", "flagged", "tp").fill_null(0))
    p = pl.when(pl.col("flagged") > 0).then(pl.col("tp") / pl.col("flagged"))
    r = pl.when(pl.col("planted") > 0).then(pl.col("tp") / pl.col("planted"))
    return out.with_columns(precision=p, recall=r).with_columns(
        f1=pl.when((pl.col("precision") + pl.col("recall")) > 0)
        .then(2 * pl.col("precision") * pl.col("recall") / (pl.col("precision") + pl.col("recall"))).otherwise(0.0))


def old_signals(ref: str) -> ModuleType | None:
    """``analysis/signals.py`` as it was at ``ref`` (git), or None when git cannot show it."""
    root = Path(__file__).resolve().parents[2]
    try:
        text = subprocess.run(["git", "show", f"{ref}:analysis/signals.py"], cwd=root, capture_output=True, text=True,
                              check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    path = Path(tempfile.mkdtemp()) / "old_signals.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_signals", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_signals"] = mod
    spec.loader.exec_module(mod)
    return mod


def phone_ablation(df: pl.DataFrame) -> list[tuple[str, int, int, int]]:
    """(variant, rows flagged, of them true phones, true phone rows) for the phone part of ``pii``:
    the regex alone, + arithmetic/math-context rules, + ``phonenumbers`` validation."""
    base = pair_kinds.with_kinds(sig.with_turns(df))
    texts = base.select(pl.concat_str(["instruction", "input", "response"], separator="\n")).to_series().to_list()
    truth = [c == "chat_phone" for c in df["case"].to_list()]
    out = []
    for variant in ("regex", "regex + context", "regex + context + phonenumbers"):
        hits = []
        for text, kind in zip(texts, base["kind"].to_list(), strict=True):
            found = False
            for m in re.finditer(sig._PHONE, text):
                before, after = text[max(0, m.start() - 40):m.start()], text[m.end():m.end() + 2]
                if variant == "regex" or sig.phone_ok(m.group(0), before, after, kind, validate="phonenumbers" in variant):
                    found = True
            hits.append(found)
        out.append((variant, sum(hits), sum(h and t for h, t in zip(hits, truth, strict=True)), sum(truth)))
    return out


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:5.2f}"


def gsm8k(path: str, limit: int) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()[:limit]]
    df = pl.DataFrame({"revision_id": [str(i) for i in range(len(rows))], "pair_id": [str(i) for i in range(len(rows))],
                       "instruction": [r["question"] for r in rows], "input": [""] * len(rows),
                       "response": [r["answer"] for r in rows]})
    found = sig.run(df).filter("flagged")
    print(f"\nGSM8K {path}: {len(rows)} rows; flagged per signal:",
          dict(found.group_by("name").len().sort("name").iter_rows()))
    for r in found.sort("name").iter_rows(named=True):
        print(f"  row {r['revision_id']:>5} {r['name']}: {r['reason'][:140]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-ref", default="34c7179", help="git revision whose analysis/signals.py is 'old'")
    ap.add_argument("--gsm8k", help="a GSM8K train.jsonl to run the new signals on")
    ap.add_argument("--gsm8k-limit", type=int, default=7473)
    args = ap.parse_args(argv)
    df = labelled_set(args.n, args.seed)
    names = list(sig.DETECTORS)
    new = scores(df, sig.run(df.drop("truth", "case")), names)
    old_mod = old_signals(args.old_ref)
    old = (scores(df, old_mod.run(df.drop("truth", "case")), names) if old_mod
           else new.with_columns(precision=None, recall=None, f1=None, flagged=0))
    print(f"labelled set: {df.height} pairs, {df['truth'].list.len().sum()} planted defects "
          f"(old = analysis/signals.py at {args.old_ref}{'' if old_mod else ', not available'})")
    print(f"{'signal':20} {'planted':>7} | {'old P':>5} {'old R':>5} {'old F1':>6} {'flags':>5} | "
          f"{'new P':>5} {'new R':>5} {'new F1':>6} {'flags':>5}")
    for o, n in zip(old.iter_rows(named=True), new.iter_rows(named=True), strict=True):
        was = o["name"] in (old_mod.DETECTORS if old_mod else {})
        print(f"{n['name']:20} {n['planted']:>7} | {_fmt(o['precision']) if was else '  n/a'} "
              f"{_fmt(o['recall']) if was else '  n/a'} {_fmt(o['f1']) if was else '   n/a'} {o['flagged'] if was else '-':>5} | "
              f"{_fmt(n['precision'])} {_fmt(n['recall'])} {_fmt(n['f1'])} {n['flagged']:>5}")
    low = new.filter(pl.col("precision").is_not_null() & (pl.col("precision") < 0.8))["name"].to_list()
    print("precision >= 0.8 for every signal that flags" if not low else f"precision < 0.8: {', '.join(low)}")
    print("\nphone numbers (part of pii): rows flagged / true phones among them / planted phones")
    for variant, flagged, tp, planted in phone_ablation(df):
        print(f"  {variant:32} {flagged:>4} {tp:>4} {planted:>4}  precision {tp / flagged if flagged else 0:.2f}")
    if args.gsm8k:
        gsm8k(args.gsm8k, args.gsm8k_limit)
    return 1 if low else 0


if __name__ == "__main__":
    raise SystemExit(main())
