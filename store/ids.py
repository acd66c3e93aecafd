"""Content identity.

IDs of content records (documents, pairs) are SHA-256 digests of canonical JSON: keys
sorted, no insignificant whitespace, UTF-8, no ASCII escaping. The same content always
hashes to the same id, so re-importing a file is a no-op and exact duplicates collide.
Records whose identity is an event (a review, a run, a label) get random ids instead.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import orjson


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8 (not ASCII-escaped)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def content_id(obj: Any, prefix: str = "", length: int = 32) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj`` (truncated to ``length`` hex chars)."""
    return prefix + hashlib.sha256(canonical_json(obj)).hexdigest()[:length]


def bytes_id(data: bytes, prefix: str = "", length: int = 32) -> str:
    return prefix + hashlib.sha256(data).hexdigest()[:length]


def event_id(prefix: str) -> str:
    """Random id that sorts by creation time: ``prefix`` + ms timestamp (hex) + 8 random hex."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


# Optional per-message fields a conversation may carry (tool calling, OpenAI's per-turn weight). A
# message keeps only those it has, so a plain {role, content} turn hashes as it always did.
MESSAGE_EXTRAS = ("tool_calls", "tool_call_id", "name", "weight")


def message_dict(m: dict[str, Any]) -> dict[str, Any]:
    """One stored message: role, content, and whichever of ``MESSAGE_EXTRAS`` it has (not None)."""
    out: dict[str, Any] = {"role": m["role"], "content": m["content"]}
    for k in MESSAGE_EXTRAS:
        if m.get(k) is not None:
            out[k] = m[k]
    return out


def pair_content(
    instruction: str,
    input: str = "",
    response: str = "",
    system: str = "",
    messages: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The part of a pair that defines its identity (tags, status and provenance do not).

    ``tools``: the function definitions a tool-calling conversation offers (OpenAI form); the
    key is present only when there are some, so pairs without tools keep their ids."""
    out = {
        "instruction": instruction,
        "input": input or "",
        "response": response,
        "system": system or "",
        "messages": [message_dict(m) for m in (messages or [])],
    }
    if tools:
        out["tools"] = list(tools)
    return out


def pair_id(content: dict[str, Any]) -> str:
    return content_id(content, prefix="p_")
