"""One typed schema per record kind, shared by every stage.

Ingest produces these records, ``store`` persists them, training and analysis consume them
and the app renders them. Bulk paths (importing a million pairs) move Arrow/Polars frames
with the same columns instead of constructing one object per row.

Invariants:
- A ``Pair`` is the logical item; its text lives in immutable ``PairRevision`` rows. The
  pair id is the content hash of its first revision, so identical content collides.
- ``Pair.status``/``head_revision_id``/``version`` are a projection of the append-only
  revision and review logs, kept in the same transaction as the log rows they summarise.
- Predictions, error labels and reviews are never updated; a human label sits beside the
  automatic one and wins when the two are read together.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    pending = "pending"
    accepted = "accepted"
    rejected = "rejected"
    needs_fix = "needs_fix"
    duplicate = "duplicate"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Split(StrEnum):
    train = "train"
    eval = "eval"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)


class Message(Record):
    role: str = Field(description="system, user, assistant or tool")
    content: str = Field(description="the text; '' for an assistant turn that only calls tools")
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="assistant turn: the calls it makes, OpenAI form "
        "[{id, type: function, function: {name, arguments (a JSON string)}}]")
    tool_call_id: str | None = Field(default=None, description="tool turn: the id of the call it answers")
    name: str | None = Field(default=None, description="tool turn: the function whose result it is")
    weight: float | None = Field(default=None, description="assistant turn: loss weight (0 = not trained on); "
                                 "None = 1")


class Document(Record):
    id: str = Field(description="d_ + sha256 of the file bytes")
    uri: str = Field(description="where it came from: a path relative to the ingest root, or an upload name")
    name: str
    filetype: str = Field(description="extension without the dot, e.g. pdf")
    size_bytes: int
    n_pages: int | None = None
    title: str = ""
    text: str = Field(default="", description="the document text that element offsets point into")
    previous_id: str | None = Field(default=None, description="the older version of the same uri, if any")
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class Element(Record):
    id: str
    document_id: str
    idx: int
    type: str
    text: str
    page: int | None = None
    parent_id: str | None = None
    char_start: int
    char_end: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunk(Record):
    id: str
    document_id: str
    idx: int
    title: str = ""
    text: str
    element_ids: list[str]
    page_start: int | None = None
    page_end: int | None = None
    char_start: int
    char_end: int


class Provenance(Record):
    """Where a pair came from: a document span or an imported file line, and what made it."""

    document_id: str | None = None
    page: int | None = None
    element_ids: list[str] = Field(default_factory=list)
    char_start: int | None = None
    char_end: int | None = None
    generator: str = Field(default="import", description="name of the generator or importer")
    generator_version: str = ""
    source_uri: str = ""
    source_line: int | None = None
    grounding: float | None = Field(
        default=None, description="share of a model-written answer's content words found in its source span "
        "(scoring.grounding); None when the response is the span itself or was imported")


class PairContent(Record):
    instruction: str
    input: str = ""
    response: str = ""
    system: str = ""
    messages: list[Message] = Field(default_factory=list, description="multi-turn conversation, if any")
    tools: list[dict[str, Any]] = Field(default_factory=list, description="function definitions offered to "
                                        "the model in a tool-calling conversation (OpenAI form)")


class NewPair(Record):
    """A pair as a producer (importer, generator) hands it to the store."""

    content: PairContent
    provenance: Provenance = Field(default_factory=Provenance)
    tags: list[str] = Field(default_factory=list)
    split: str | None = None
    status: Status = Status.pending
    author: str = "import"


class PairRevision(Record):
    id: str
    pair_id: str
    revision_no: int
    parent_id: str | None
    instruction: str
    input: str = ""
    response: str = ""
    system: str = ""
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    author: str
    reason: str = ""
    is_head: bool = True
    conflict: bool = False  # saved against a revision that was no longer the head (see store/pairs.py)
    created_at: datetime | None = None


class Pair(Record):
    """The current state of a pair (head revision content + status), with its provenance."""

    id: str
    head_revision_id: str
    version: int
    status: Status
    split: str | None = None
    duplicate_of: str | None = None
    instruction: str
    input: str = ""
    response: str = ""
    system: str = ""
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    provenance: Provenance
    author: str
    updated_by: str
    created_at: datetime
    updated_at: datetime


class PairSource(Record):
    """One source a pair was produced from. A pair made from the same text in two documents (or
    two imported files) has one pair id and a source for each; the first is also its provenance."""

    pair_id: str
    document_id: str | None = None
    document_name: str = Field(default="", description="the document's name, '' for imported data")
    document_title: str = Field(default="", description="the document's title, '' when it has none")
    page: int | None = Field(default=None, description="the first page of the span's elements (paged formats)")
    source_uri: str = ""
    source_line: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    element_ids: list[str] = Field(default_factory=list)
    generator: str
    created_at: datetime


class Review(Record):
    id: str
    pair_id: str
    revision_id: str
    status: Status
    previous_status: Status | None = None
    author: str
    comment: str = ""
    created_at: datetime | None = None


class Rating(Record):
    """A reviewer's 1-5 rating of one pair revision, beside the decision (it is not one)."""

    id: str
    pair_id: str
    revision_id: str = Field(description="the text rated: an edit makes a new revision that starts unrated")
    value: int | None = Field(default=None, ge=1, le=5, description="1-5; None withdraws the reviewer's rating")
    author: str
    created_at: datetime | None = None


class Guideline(Record):
    """One saved version of the project's annotation guideline; the latest version is the guideline."""

    version: int = Field(description="1, 2, ... in the order saved")
    text: str = Field(description="Markdown as the admin wrote it; the app renders a safe subset")
    author: str
    created_at: datetime | None = None


class DuplicateCluster(Record):
    id: str
    kind: str = Field(description="exact_prompt, exact_full, near_lexical or near_semantic")
    params: dict[str, Any] = Field(default_factory=dict)
    kept_pair_id: str
    members: list[tuple[str, float]] = Field(default_factory=list, description="(pair id, similarity to kept)")


class QualitySignal(Record):
    revision_id: str
    pair_id: str
    name: str
    version: str
    score: float
    flagged: bool
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


class SliceFilter(Record):
    """Structured slice definition; every field narrows the set (AND)."""

    status: list[Status] | None = None
    tags_any: list[str] | None = None
    text: str | None = None
    document_ids: list[str] | None = None
    generators: list[str] | None = None
    splits: list[str] | None = None
    signals_flagged: list[str] | None = Field(default=None, description="keep pairs flagged by any of these signals")
    signals_clean: list[str] | None = Field(default=None, description="drop pairs flagged by any of these signals")
    cluster_ids: list[int] | None = None
    pair_ids: list[str] | None = None
    exclude_duplicates: bool = True
    limit: int | None = None


class Slice(Record):
    id: str
    name: str
    version: int
    content_hash: str
    filter: dict[str, Any]
    seed: int
    eval_fraction: float
    split_by: str = Field(description="pair, document or cluster: the unit kept on one side of the split")
    parent_id: str | None = None
    n_items: int
    n_train: int
    n_eval: int
    description: str = ""
    author: str = ""
    created_at: datetime | None = None


class SliceItem(Record):
    slice_id: str
    position: int
    pair_id: str
    revision_id: str
    split: Split
    weight: float = 1.0


class Run(Record):
    id: str
    name: str = ""
    kind: str = Field(default="train", description="train (SFT), dpo or orpo (preference training on corrections), "
                      "or baseline (predictions of an untrained base model)")
    base_model: str
    slice_id: str | None = None
    slice_hash: str | None = None
    parent_run_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = RunStatus.queued
    run_dir: str = ""
    adapter_path: str | None = None
    error: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    author: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Prediction(Record):
    id: str
    prediction_set_id: str
    run_id: str
    pair_id: str
    revision_id: str
    prompt: str
    output: str
    reference: str = ""
    n_prompt_tokens: int = 0
    n_output_tokens: int = 0
    finish_reason: str = Field(default="stop", description="stop or length")
    latency_ms: float = 0.0


class ErrorCategory(Record):
    id: str
    name: str
    description: str = ""
    merged_into: str | None = None
    active: bool = True


class ErrorLabel(Record):
    id: str
    prediction_id: str
    category_id: str
    source: str = Field(description="auto or human")
    detector: str = Field(default="", description="detector name@version, or the reviewer's name")
    decision: str = Field(default="proposed", description="proposed, confirmed or rejected")
    confidence: float = 1.0
    evidence: str = ""
    author: str = ""
    created_at: datetime | None = None


class PreferencePair(Record):
    id: str
    pair_id: str
    prediction_id: str | None
    prompt: str
    chosen: str
    rejected: str
    category_id: str | None = None
    author: str = ""


class BenchmarkResult(Record):
    """One metric of one standard benchmark scored by lm-evaluation-harness on a run's model."""
    id: str
    run_id: str
    benchmark: str = Field(description="mmlu, arc_challenge, hellaswag or truthfulqa_mc2")
    task: str = Field(description="the harness task or group the benchmark was scored as")
    metric: str = Field(description="the harness metric: acc, acc_norm")
    value: float
    stderr: float | None = Field(default=None, description="the harness's standard error of the mean")
    n: int = Field(description="questions scored")
    limit: int | None = Field(default=None, description="--limit asked; None: the whole set")
    num_fewshot: int = 0
    harness_version: str = ""
    seconds: float = Field(default=0.0, description="harness wall time of the whole benchmark")
    created_at: datetime | None = None


class AbVote(Record):
    """One person's blind A/B vote on two runs' answers to one prompt, in canonical terms:
    ``run_a`` < ``run_b``, ``left`` says whose answer was shown as "Answer 1"."""
    id: str
    seq: int = Field(description="order of the votes; the latest per (author, item) counts")
    run_a: str
    run_b: str
    pair_id: str
    prediction_a: str = Field(description="run_a's prediction (answer)")
    prediction_b: str = Field(description="run_b's prediction (answer)")
    left: str = Field(description="a or b: whose answer was shown first, as Answer 1")
    choice: str = Field(description="a, b, tie or both_bad")
    reason: str = ""
    preference_pair_id: str | None = Field(default=None, description="the preference pair a winner wrote")
    author: str
    created_at: datetime | None = None
