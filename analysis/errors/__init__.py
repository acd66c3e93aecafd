"""Error analysis: from a run's predictions to error categories, metrics, corrections and comparisons.

Everything in this package is pure: functions over ``store`` records and Polars frames, no
database, no model, no files (``report`` returns text). The CLI and the app fetch frames
through ``store.errors``/``store.runs`` and hand them in.
"""
