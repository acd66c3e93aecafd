"""tuneloop: the command-line shell over the library packages (store, ingest, analysis, training)."""

__version__ = "0.1.0"
