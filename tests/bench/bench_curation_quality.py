"""Curation on data shaped like real instruction sets (issue 14): duplicates and quality signals.

Runs, in one process, the two labelled benchmarks the project generates itself:

- ``curation_quality_dedupe``: a tool-use-like set whose prompts share a ~40-word tool description,
  with planted one-word changes, reorderings and paraphrases of 5-60-word prompts and same-prompt
  conflicts; P/R/F1 per method (old defaults vs boilerplate-aware greedy clusters), recall on
  one-word changes of short prompts, the largest cluster, and speed against datasketch.
- ``curation_quality_signals``: planted defects for every signal and validator and clean
  look-alikes for each (URLs as tool arguments, arithmetic, terse answers); per-signal P/R, old vs new.

    python -m tests.bench.bench_curation_quality [N]      (N: rows of the duplicate set, default 5000)
"""

from __future__ import annotations

import sys

from tests.bench import curation_quality_dedupe, curation_quality_signals


def main(argv: list[str]) -> int:
    print("## Duplicates", flush=True)
    curation_quality_dedupe.main(argv[:1])
    print("\n## Quality signals and validators", flush=True)
    return curation_quality_signals.main([])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
