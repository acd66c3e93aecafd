"""What to do next in the loop, from where the project stands (``store.stats.loop_facts``).

One rule for every front end: the Overview page shows the steps as buttons to their page, and
``tuneloop stats`` prints the first one with its command. Pure: facts in, steps out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    title: str  # what to do, in a few words
    why: str  # the state that calls for it
    page: str  # the app page that does it (app/views/<page>.py)
    command: str  # the same from a terminal


def next_steps(facts: dict[str, Any], limit: int = 3) -> list[Step]:
    """The most useful next steps, most urgent first (at most ``limit``)."""
    steps: list[Step] = []
    if facts["pairs"] == 0:
        return [Step("Import a dataset or ingest documents", "the project has no pairs yet", "ingest",
                     "tuneloop import data.jsonl  /  tuneloop ingest ./docs")]
    if facts["live_run"]:
        steps.append(Step(f"Follow run {facts['live_run']}", "it is training now", "train",
                          f"tuneloop runs show {facts['live_run']}"))
    if facts["unpredicted_run"]:
        steps.append(Step(f"Predict with run {facts['unpredicted_run']}", "it finished without predictions",
                          "train", f"tuneloop predict --run {facts['unpredicted_run']}"))
    for run in facts["predicted_runs"][:1]:  # the newest run with predictions
        if run["open_errors"]:
            steps.append(Step(f"Review {run['open_errors']:,} errors of run {run['name']}",
                              "the detectors proposed categories nobody has looked at", "errors",
                              f"tuneloop errors list --run {run['name']}"))
        if run["corrections"] and not run["retrained"]:
            steps.append(Step(f"Retrain from run {run['name']}", f"{run['corrections']:,} corrections wait to be "
                              "trained on", "errors", f"tuneloop retrain --from-run {run['name']}"))
        if run["retrained"]:
            steps.append(Step(f"Compare run {run['name']} with its retrain", "see per category what got fixed and "
                              "what broke", "compare", f"tuneloop compare {run['name']} RETRAINED_RUN"))
    if not facts["deduped"]:
        steps.append(Step("Find duplicates", "duplicates have not been looked for", "duplicates", "tuneloop dedupe"))
    if facts["pending"]:
        steps.append(Step(f"Review {facts['pending']:,} pending pairs", "they are neither accepted nor rejected",
                          "review", "tuneloop pairs list --where status=pending"))
    if facts["accepted"] and not facts["newest_slice"]:
        steps.append(Step(f"Make a slice of the {facts['accepted']:,} accepted pairs", "training needs a frozen slice",
                          "explore", "tuneloop slice create NAME --where status=accepted"))
    if facts["newest_slice"] and not facts["predicted_runs"] and not facts["live_run"] \
            and not facts["unpredicted_run"]:
        steps.append(Step(f"Train on slice {facts['newest_slice']}", "no run has been trained yet", "train",
                          f"tuneloop train --slice {facts['newest_slice']} --wait"))
    return steps[:limit]
