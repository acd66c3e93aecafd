"""Imported by the parser forkserver: warm unstructured and the spaCy model once.

This module does work at import time on purpose: it exists only to be preloaded by
``ingest.workers``'s forkserver, so every worker forked from it starts warm.
"""

from ingest import offline

offline.warm()
