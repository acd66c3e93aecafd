"""Imported by the parser forkserver: warm unstructured and the spaCy model once.

This module does work at import time on purpose: it exists only to be preloaded by
``ingest.workers``'s forkserver, so every worker forked from it starts warm. It warms the formats
the starting process named (``offline.FORMATS_ENV``: a batch's formats, seconds instead of every
format's ~10 s), else every format. torch stays out (``offline.keep_torch_out``): ``hi_res``
batches use fresh workers instead; so does matplotlib's pyplot (``offline.defer_plotting``).
"""

import ingest.workers  # noqa: F401 - what a forked worker runs (``_serve``): loaded here, not once per worker
from ingest import offline

offline.one_thread_each()
offline.keep_torch_out()
offline.defer_plotting()
_formats = offline.preloaded_formats()
if _formats is None:
    offline.warm()
else:
    for _ext in sorted(_formats):
        offline.warm(_ext)
