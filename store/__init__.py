"""The bottom layer: record types and the only code that speaks SQL.

Every other package (ingest, analysis, training, models, app, the CLI) reads and writes the
project through the typed functions in this package; none of them import duckdb.
"""

from store.db import Project, StoreBusyError, open_project

__all__ = ["Project", "StoreBusyError", "open_project"]
