"""Migrations of the app area (names m050-m059); see store/migrations.py. Append only."""

from __future__ import annotations

import duckdb  # noqa: F401

from store.migrations import migration  # noqa: F401
