"""Mojibake repair for imported text (``tuneloop import --fix-text``, off by default).

Only encoding damage is undone, by ftfy's ``fix_encoding`` ("cafÃ©" -> "café", "itâ€™s" ->
"it’s"). Curly quotes, full-width letters, ligatures, line breaks and the Unicode normal form
are left alone: they are the author's choices, not damage, and a pair's text is what trains.

The repair is a pure function of the pair content, so one file always gives the same pairs.
The importer keys a repaired pair by the repaired content (so text that differs from a stored
pair only by mojibake *is* that pair and adds nothing), stores the original text as the pair's
first revision and the repair as the second, authored ``REPAIR_AUTHOR``: history shows both.
"""

from __future__ import annotations

from typing import Any

import ftfy

from store.ids import pair_content

REPAIR_AUTHOR = "ftfy"
REPAIR_REASON = f"mojibake repaired on import (ftfy {ftfy.__version__} fix_encoding)"


def repair_text(text: str) -> str:
    return ftfy.fix_encoding(text)


def repair_content(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` (as made by ``store.ids.pair_content``) with every text field repaired."""
    return pair_content(
        repair_text(content["instruction"]), repair_text(content["input"]), repair_text(content["response"]),
        repair_text(content["system"]),
        [{**m, "content": repair_text(m["content"])} for m in content["messages"]],
        content.get("tools"),
    )
