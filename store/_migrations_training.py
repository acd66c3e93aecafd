"""Migrations of the training area (names m030-m039); see store/migrations.py. Append only."""

from __future__ import annotations

import duckdb  # noqa: F401

from store.migrations import migration  # noqa: F401
