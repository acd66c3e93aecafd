"""Migrations of the errors area (names m040-m049); see store/migrations.py. Append only."""

from __future__ import annotations

import duckdb  # noqa: F401

from store.migrations import migration  # noqa: F401
