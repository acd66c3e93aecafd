"""Validators: checks that a response is *correct in its own terms* (pure), registered as
quality signals beside the heuristics in ``analysis.signals``.

- ``tool_call``: a call in the response parses (JSON arguments via ``json``, ``name(arg=...)``
  via ``ast``), names a declared tool with declared argument names (tools declared in the
  prompt, the messages or a ``tools`` column), has nothing stray after it on its line, and a
  pair whose prompt declares tools answers with a call when most pairs with the same tools do.
- ``code_syntax``: fenced blocks parse in their language (Python ``ast``, JSON, SQL via
  ``sqlglot``); blocks that elide code (``...``, ``>>>`` sessions, notebook magics) are skipped.
- ``arithmetic``: every worked step ``a op b = c`` (``$``, ``,``, ``x``/``×``/``*``, ``÷``, brackets)
  evaluates to ``c`` within the rounding its digits show.
- ``answer_format``: within one kind, when at least ``FORMAT_SHARE`` of worked responses end with
  the same final-answer line (``#### n``, "The answer is", ``\\boxed{}``, ``Answer:``), the others
  are flagged.

The checks that need a parser run in Python on the rows of the kinds they apply to only; the
rest are Polars expressions. Reasons say what failed and where (block 2, line 3, step "8*3 = 240"),
never the pair's free text beyond the failing arithmetic step or call name.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.pair_kinds import CALL_START, TOOL_DECLARATION, declares_tools, prompt_text

FORMAT_SHARE = 0.8
MIN_ROWS_FOR_FORMAT = 10
NO_CALL_SHARE = 0.8
MIN_ROWS_FOR_NO_CALL = 5


def _frame(rows: list[tuple[float, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"score": [r[0] for r in rows], "flagged": [r[0] > 0 for r in rows], "reason": [r[1] for r in rows],
         "details": [r[2] for r in rows]},
        schema={"score": pl.Float64, "flagged": pl.Boolean, "reason": pl.String, "details": pl.String},
    )


# ------------------------------------------------------------------------------ tools


@dataclass(frozen=True)
class Tool:
    name: str
    params: frozenset[str] | None  # None: any argument names are fine (unknown or **kwargs)
    required: frozenset[str] = frozenset()


def _collect(obj: Any, out: dict[str, Tool]) -> None:
    if isinstance(obj, list):
        for o in obj:
            _collect(o, out)
    elif isinstance(obj, dict):
        if isinstance(obj.get("function"), dict):
            _collect(obj["function"], out)
        name = obj.get("name")
        if isinstance(name, str) and ("parameters" in obj or "description" in obj or "arguments" in obj):
            p = obj.get("parameters")
            props = p.get("properties") if isinstance(p, dict) and isinstance(p.get("properties"), dict) else p
            params = frozenset(props) if isinstance(props, dict) else None
            req = p.get("required") if isinstance(p, dict) else None
            out[name] = Tool(name, params, frozenset(req) if isinstance(req, list) else frozenset())


_SIGNATURE = re.compile(r"(?m)^\s*(?:[-*•]\s*|\d+[.)]\s*)?(?:def\s+)?`?([A-Za-z_]\w*)\(([^()\n]*)\)`?\s*(?:->[^:\n]*)?(?::|-|–|—|$)")


def declared_tools(text: str) -> dict[str, Tool]:
    """The tools a prompt (or a ``tools`` field) declares: JSON schemas and ``name(arg: type)`` lines."""
    out: dict[str, Tool] = {}
    dec = json.JSONDecoder()
    pos, tries = 0, 0
    while tries < 200:
        m = re.compile(r"[\[{]").search(text, pos)
        if not m:
            break
        tries += 1
        try:
            obj, end = dec.raw_decode(text, m.start())
        except ValueError:
            pos = m.start() + 1
            continue
        _collect(obj, out)
        pos = end
    if re.search(TOOL_DECLARATION, text):
        for m in _SIGNATURE.finditer(text):
            if m.group(1) in out:
                continue
            pieces = [p.strip() for p in m.group(2).split(",") if p.strip()]
            if any(p.startswith("**") for p in pieces):
                out[m.group(1)] = Tool(m.group(1), None)
                continue
            names = [re.match(r"\*?([A-Za-z_]\w*)", p) for p in pieces]
            params = frozenset(n.group(1) for n in names if n)
            required = frozenset(n.group(1) for n, p in zip(names, pieces, strict=True) if n and "=" not in p)
            out[m.group(1)] = Tool(m.group(1), params, required)
    return out


@dataclass(frozen=True)
class Call:
    name: str | None
    args: tuple[str, ...] | None
    error: str  # empty when the call parses
    stray: str  # non-space characters after the call on its line


_TAG = re.compile(r"</?(?:tool_call|functioncall|function_call)>")


def find_calls(response: str) -> list[Call]:
    """The first call in ``response`` (every call of a ``[f(a=1), g(b=2)]`` list); [] when there is none."""
    m = re.search(CALL_START.replace("^", "(?m)^", 1), response)
    if not m:
        return []
    body = _TAG.sub(" ", response[m.start():]).lstrip()
    if re.match(r"\[\s*[A-Za-z_]", body):
        return _python_calls(body, "]")
    if body.startswith(("{", "[")):
        return [_json_call(body)]
    return _python_calls(body, ")")


def _json_call(body: str) -> Call:
    try:
        obj, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as e:
        return Call(None, None, f"the JSON tool call does not parse ({e.msg} at character {e.pos})", "")
    obj = obj[0] if isinstance(obj, list) and obj else obj
    if not isinstance(obj, dict):
        return Call(None, None, "the JSON tool call is not an object", "")
    fn: dict[str, Any] = obj["function"] if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name") or obj.get("tool") or obj.get("tool_name")
    args = fn.get("arguments", fn.get("parameters", fn.get("args", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            return Call(str(name), None, f"the call's arguments are a string that is not JSON ({e.msg})", "")
    keys = tuple(args) if isinstance(args, dict) else None
    return Call(str(name) if name else None, keys, "", _stray(body[end:]))


def _python_calls(body: str, closer: str) -> list[Call]:
    """``name(arg=...)`` (closer ``)``) or a list of them (closer ``]``), parsed by ``ast`` at the
    first closing bracket where the text so far is a complete call."""
    for i in [i for i, c in enumerate(body[:4000]) if c == closer][:40]:
        try:
            tree = ast.parse(body[:i + 1], mode="eval").body
        except SyntaxError:
            continue
        elts = tree.elts if isinstance(tree, ast.List) else [tree]
        if elts and all(isinstance(e, ast.Call) for e in elts):
            stray = _stray(body[i + 1:])
            return [Call(ast.unparse(e.func), tuple(k.arg for k in e.keywords if k.arg), _code_argument_error(
                ast.unparse(e.func), e), stray) for e in elts if isinstance(e, ast.Call)]
    name = re.match(r"\[?\s*([\w.]+)", body)
    return [Call(name.group(1) if name else None, None,
                 "the call does not parse as Python (an unescaped quote or an unclosed bracket?)", "")]


# Tools that run Python, by name: "python", "ipython", "code_interpreter", "run_code", "execute_python"...
# A shell runner (BFCL's ``cmd_controller.execute(command='dir C:\\')``) is not one: its command is no
# Python, so "execute" alone never qualifies.
_RUNS_PYTHON = re.compile(r"(?i)python|code_interpreter|run_code|exec(ute)?_code|(^|\.)exec$")


def _code_argument_error(name: str, call: ast.Call) -> str:
    """A python-running tool's code argument must itself parse."""
    if not _RUNS_PYTHON.search(name):
        return ""
    args = [k.value for k in call.keywords if k.arg in {"code", "source", "script", "cmd", "command"}] + call.args[:1]
    code = args[0] if args else None
    if not (isinstance(code, ast.Constant) and isinstance(code.value, str)):
        return ""
    try:
        ast.parse(code.value)
    except SyntaxError as e:
        return f"the code passed to {name}() does not parse: {e.msg} at line {e.lineno}"
    return ""


def _stray(rest: str) -> str:
    line = rest.split("\n", 1)[0].strip()
    return line if line and not re.fullmatch(r"[;,]?", line) else ""


def _tool_rows(prompts: list[str], responses: list[str], declared: list[bool]) -> list[tuple[float, str, str | None]]:
    tools_of = {p: declared_tools(p) for p in set(prompts)}
    calls = [find_calls(r) for r in responses]
    # answers that should hold a call: most pairs declaring the same tools answer with one
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        if declared[i]:
            groups.setdefault(tuple(sorted(tools_of[p])), []).append(i)
    expect_call = [False] * len(prompts)
    share_of: dict[int, float] = {}
    for members in groups.values():
        share = sum(bool(calls[i]) for i in members) / len(members)
        if len(members) >= MIN_ROWS_FOR_NO_CALL and share >= NO_CALL_SHARE:
            for i in members:
                expect_call[i], share_of[i] = True, share
    out: list[tuple[float, str, str | None]] = []
    for i, row_calls in enumerate(calls):
        if not row_calls:
            out.append((0.8, f"no tool call, though {share_of[i]:.0%} of the pairs declaring these tools answer with one",
                        '{"problem": "no_call"}') if expect_call[i] else (0.0, "", None))
            continue
        problems = [p for call in row_calls for p in _call_problems(call, tools_of[prompts[i]])]
        if problems:
            out.append((1.0, "; ".join(dict.fromkeys(p[1] for p in problems)), json.dumps({"problems": [p[0] for p in problems]})))
        else:
            out.append((0.0, "", None))
    return out


def _call_problems(call: Call, tools: dict[str, Tool]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if call.error:
        problems.append(("syntax", call.error))
    if call.stray:
        problems.append(("stray", f"stray characters after the call: {json.dumps(call.stray[:12])}"))
    if tools and call.name and call.name not in tools:
        problems.append(("unknown_tool", f"calls {call.name!r}, which is not a declared tool ({', '.join(sorted(tools))})"))
    elif tools and call.name and call.args is not None:
        t = tools[call.name]
        unknown = [a for a in call.args if t.params is not None and a not in t.params]
        missing = sorted(t.required - set(call.args)) if t.params is not None else []
        if unknown:
            problems.append(("unknown_argument", f"{call.name}() has no parameter {', '.join(map(repr, unknown))} "
                             f"(declared: {', '.join(sorted(t.params or [])) or 'none'})"))
        if missing and not unknown:
            problems.append(("missing_argument", f"{call.name}() is missing required {', '.join(map(repr, missing))}"))
    return problems


def tool_call(df: pl.DataFrame, cfg: Any = None) -> pl.DataFrame:
    prompt = prompt_text()
    if "messages" in df.columns and df["messages"].null_count() < df.height:
        # every turn but the last answer, as text: a system turn is where chat data declares its tools
        turns = pl.col("messages").str.json_decode(pl.List(pl.Struct({"role": pl.String, "content": pl.String})))
        shown = turns.list.eval(pl.element().filter(pl.element().struct.field("role") != "assistant")
                                .struct.field("content").fill_null("")).list.join("\n")
        prompt = pl.concat_str([prompt, shown.fill_null("")], separator="\n")
    if "tools" in df.columns:
        prompt = pl.concat_str([prompt, pl.col("tools").cast(pl.String).fill_null("")], separator="\n")
    tmp = df.select(p=prompt, r=pl.col("response").fill_null(""), d=declares_tools(df),
                    k=pl.col("kind") if "kind" in df.columns else pl.lit("tool"))
    rows: list[tuple[float, str, str | None]] = [(0.0, "", None)] * df.height
    idx = [i for i, k in enumerate(tmp["k"].to_list()) if k == "tool"]
    if idx:
        sub = tmp[idx]
        for i, row in zip(idx, _tool_rows(sub["p"].to_list(), sub["r"].to_list(), sub["d"].to_list()), strict=True):
            rows[i] = row
    return _frame(rows)


# ------------------------------------------------------------------------------ code blocks

_FENCE = re.compile(r"```[ \t]*([\w+#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY = {"python", "py", "python3", "py3"}


def _syntax_error(lang: str, code: str) -> str:
    if "..." in code or "…" in code:
        return ""
    if lang in _PY:
        if ">>>" in code:
            return ""
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("!", "%")))
        try:
            ast.parse(code)
        except SyntaxError as e:
            return f"{e.msg} at line {e.lineno}"
        return ""
    if lang == "json" or (not lang and code.lstrip().startswith(("{", "["))):
        if "//" in code:
            return ""
        try:
            json.loads(code)
        except json.JSONDecodeError as e:
            return f"{e.msg} at line {e.lineno}"
        return ""
    if lang in {"sql", "postgresql", "mysql", "sqlite"}:
        import sqlglot
        from sqlglot.errors import ParseError, TokenError

        try:
            sqlglot.parse(code, read={"postgresql": "postgres", "mysql": "mysql", "sqlite": "sqlite"}.get(lang))
        except (ParseError, TokenError) as e:
            return str(e).splitlines()[0][:120]
        return ""
    return ""


def code_blocks(response: str) -> Iterator[tuple[int, str, str]]:
    """(block number from 1, language tag lower-cased, code) of each closed ``` fence."""
    for n, m in enumerate(_FENCE.finditer(response), 1):
        yield n, m.group(1).lower(), m.group(2)


def _code_row(response: str) -> tuple[float, str, str | None]:
    errors = []
    for n, lang, code in code_blocks(response):
        err = _syntax_error(lang, code)
        if err:
            errors.append((n, lang or "json", err))
    if not errors:
        return (0.0, "", None)
    return (1.0, "; ".join(f"```{lang} block {n} does not parse: {err}" for n, lang, err in errors),
            json.dumps({"blocks": [n for n, _, _ in errors]}))


def code_syntax(df: pl.DataFrame, cfg: Any = None) -> pl.DataFrame:
    has = df.select(pl.col("response").fill_null("").str.contains("```")).to_series().to_list()
    responses = df["response"].fill_null("").to_list()
    return _frame([_code_row(r) if h else (0.0, "", None) for r, h in zip(responses, has, strict=True)])


# ------------------------------------------------------------------------------ arithmetic

_NUM = r"\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?|\$?\d+(?:\.\d+)?|\$?\.\d+"
_OP = r"(?:[+\-*/×÷]|x(?=\s*\(*\s*\$?[\d.]))"
# no trailing spaces inside a segment, so the look-ahead after a step sees the character that follows it
_SEG = rf"\(*\s*+-?(?:{_NUM})(?:\s*+\))*(?:\s*+{_OP}\s*+\(*\s*+-?(?:{_NUM})(?:\s*+\))*)*"
# a step starts where no number, word, bracket or operator comes just before it
_STEP = re.compile(rf"(?<!and\s)(?<![\w.,$)(+\-*/×÷=^%<:–—])(?<![\dx.,$)(+\-*/×÷=^%:–—]\s)({_SEG})((?:\s*=\s*(?:{_SEG}))+)(?![\w%/^]|[.,]\d|\s\d{{3}}\b|\s*[+\-]\s*[\w(]|\s*[*×÷^]\s*\d)")
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub, ast.UAdd)


def _value(seg: str) -> float | None:
    expr = re.sub(r"(?<=[\d)\s])x(?=\s*\(*\s*[\d.])", "*", seg.replace("$", "").replace(",", ""))
    expr = expr.replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None
    if not all(isinstance(n, _ALLOWED) for n in ast.walk(tree)):
        return None
    try:
        return float(eval(compile(tree, "<step>", "eval"), {"__builtins__": {}}))  # only numbers and + - * /
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def _readings(seg: str) -> list[float]:
    """The values ``seg`` can mean: as written, and with tight fractions taken first ("60 / 3/4" is
    60 divided by three quarters)."""
    values = [_value(seg)]
    if re.search(r"\s", seg.strip()) and re.search(r"\d/\d", seg):
        values.append(_value(re.sub(r"(\d+(?:\.\d+)?/\d+(?:\.\d+)?)", r"(\1)", seg)))
    return [v for v in values if v is not None]


def _close(actual: float, claimed_text: str) -> bool:
    claimed = _value(claimed_text)
    if claimed is None:
        return True
    digits = claimed_text.replace(",", "").split(".")
    decimals = len(re.match(r"\d*", digits[1]).group(0)) if len(digits) > 1 else 0  # type: ignore[union-attr]
    # "10/3 = 3.33" and "100/3 = 33" round to the digits they show; "7/2 = 3" or "= 4" count whole items
    if decimals == 0 and math.floor(actual) <= claimed <= math.ceil(actual):
        return True
    return abs(actual - claimed) <= 0.5 * 10 ** -decimals + 1e-9


def arithmetic_errors(text: str) -> list[tuple[str, float]]:
    """(step as written, its real value) of each ``a op b = c`` whose ``c`` is wrong."""
    wrong = []
    for line in text.splitlines():
        if "=" in line:
            wrong += _line_errors(line)
    return wrong


def _line_errors(text: str) -> list[tuple[str, float]]:
    wrong = []
    for m in _STEP.finditer(text):
        cents = bool(re.match(r"\s*(?:cents?\b|¢)", text[m.end():]))
        parts = [m.group(1), *re.split(r"\s*=\s*", m.group(2).strip().lstrip("=").strip())]
        for left, right in zip(parts, parts[1:], strict=False):
            if not re.search(_OP, left.strip().lstrip("-")) or re.search(_OP, right.strip().lstrip("-")):
                continue  # only "expression = number" is checked; "5 + 4 = 9 + 1" is a running total
            readings = _readings(left)
            if cents and right is parts[-1]:
                readings += [v * 100 for v in readings]  # "$1 / 2 = 50 cents"
            if readings and not any(_close(v, right.strip()) for v in readings):
                wrong.append((f"{left.strip()} = {right.strip()}", readings[0]))
    return wrong


def _arith_row(text: str) -> tuple[float, str, str | None]:
    wrong = arithmetic_errors(text)
    if not wrong:
        return (0.0, "", None)
    shown = "; ".join(f'"{s}" (is {v:g})' for s, v in wrong[:3])
    return (float(len(wrong)), f"{len(wrong)} arithmetic step(s) do not add up: {shown}",
            json.dumps({"steps": [s for s, _ in wrong]}))


def arithmetic(df: pl.DataFrame, cfg: Any = None) -> pl.DataFrame:
    kinds = df["kind"].to_list() if "kind" in df.columns else ["math"] * df.height
    responses = df["response"].fill_null("").to_list()
    return _frame([_arith_row(r) if k == "math" and "=" in r else (0.0, "", None)
                   for r, k in zip(responses, kinds, strict=True)])


# ------------------------------------------------------------------------------ answer format

FINAL_FORMATS = {
    "#### n": r"^#{3,4}\s*\S",
    "The answer is": r"(?i)\b(?:the )?(?:final )?answer is\b",
    "\\boxed{}": r"\\boxed\{",
    "Answer:": r"(?i)^\**(?:final )?answer\**\s*:",
}


def answer_format(df: pl.DataFrame, cfg: Any = None) -> pl.DataFrame:
    r = pl.col("response").fill_null("").str.strip_chars()
    last = r.str.split("\n").list.last().str.strip_chars()
    worked = r.str.contains("\n") | (r.str.count_matches(r"\S+") > 12)
    kind = pl.col("kind") if "kind" in df.columns else pl.lit("chat")
    tmp = df.select(kind=kind, worked=worked, **{f"f{i}": last.str.contains(rx) for i, rx in enumerate(FINAL_FORMATS.values())})
    fmt_cols = [f"f{i}" for i in range(len(FINAL_FORMATS))]
    n_worked = pl.col("worked").sum().over("kind")
    shares = [(pl.col(c) & pl.col("worked")).sum().over("kind") / n_worked for c in fmt_cols]
    tmp = tmp.with_columns(n=n_worked, **{f"s{i}": s for i, s in enumerate(shares)})
    best = pl.max_horizontal([pl.col(f"s{i}") for i in range(len(fmt_cols))])
    names = list(FINAL_FORMATS)
    best_name = pl.coalesce([pl.when(pl.col(f"s{i}") == best).then(pl.lit(names[i])) for i in range(len(names))])
    has_best = pl.coalesce([pl.when(pl.col(f"s{i}") == best).then(pl.col(f"f{i}")) for i in range(len(names))])
    flagged = (pl.col("worked") & (pl.col("n") >= MIN_ROWS_FOR_FORMAT) & (best >= FORMAT_SHARE) & ~has_best
               & pl.col("kind").is_in(["math", "chat", "extraction"]))
    return tmp.select(
        score=pl.when(flagged).then(best).otherwise(0.0).cast(pl.Float64),
        flagged=flagged.fill_null(False),
        reason=pl.when(flagged).then(pl.format("last line is not a '{}' final-answer line, unlike {}% of the {} {} responses",
                                               best_name, (best * 100).round(0).cast(pl.Int64), pl.col("n"), pl.col("kind")))
        .otherwise(pl.lit("")),
        details=pl.when(flagged).then(pl.format('{{"expected": "{}"}}', best_name.str.replace_all(r"\\", r"\\\\"))),
    )
