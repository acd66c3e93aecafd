"""Import batches: one append-only row per imported file.

A batch records what the file held (rows read, rows new, rows skipped) and its first line
errors, so a user can see afterwards why some rows did not arrive. The caller writes the
batch in the same transaction as the pairs it added (``store.pairs.insert_rows``), so a
batch row exists exactly when its pairs do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import orjson

from store.ids import event_id
from store.pairs import now


def record_batch(
    con: duckdb.DuckDBPyConnection,
    *,
    uri: str,
    fmt: str,
    n_rows: int,
    n_new: int,
    n_skipped: int,
    errors: Sequence[dict[str, Any]] = (),
    author: str,
) -> str:
    """Append one import batch (``errors``: line, field, message of each bad row); returns its id."""
    batch_id = event_id("i_")
    con.execute(
        "INSERT INTO import_batches VALUES (?, ?, ?, ?, ?, ?, ?::JSON, ?, ?)",
        [batch_id, uri, fmt, int(n_rows), int(n_new), int(n_skipped), orjson.dumps(list(errors)).decode(),
         author, now()],
    )
    return batch_id
