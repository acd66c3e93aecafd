"""Background build of the text-search index: ``python -m app.search_index_job``.

Started by the Explore page when many revisions are not indexed yet (after a large import),
so the first search never waits for it inside a rerun; searches scan the text meanwhile.
"""

from __future__ import annotations

import os
import sys

from store import pair_pages
from store.db import open_project


def main() -> int:
    project = open_project(os.environ["TUNELOOP_PROJECT"])
    with project.connect() as con:
        added = pair_pages.ensure_search_index(con)
    print(f"indexed {added:,} revisions for text search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
