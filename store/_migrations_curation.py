"""Migrations of the curation area (names m020-m029); see store/migrations.py. Append only."""

from __future__ import annotations

import duckdb  # noqa: F401

from store.migrations import migration  # noqa: F401
