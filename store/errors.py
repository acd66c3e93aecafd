"""Error categories, their history, error labels, preference pairs and corrections.

Invariants and reasons:
- ``error_labels`` is append-only. An automatic proposal is a row with ``source='auto'``,
  ``decision='proposed'``, the detector's ``name@version``, a confidence and the evidence.
  A reviewer's decision is another row (``source='human'``, ``confirmed`` or ``rejected``).
  The *current* label of a (prediction, category) is the newest human decision if there is
  one, else the strongest automatic proposal; both stay stored and ``label_history`` shows
  them side by side.
- ``error_categories`` is current state (name, active, merged_into); every change to it is
  also appended to ``taxonomy_events`` in the same transaction. Labels point at category ids
  and are resolved through ``merged_into`` when read, so counts follow merges; a split copies
  the parent's labels onto the children (keeping their source, detector and time) and
  deactivates the parent, whose own rows then count nowhere.
- A correction is one transaction: a new pair revision (the corrected response), a
  preference pair (prompt, chosen = correction, rejected = model output) with its error
  category, and a human ``confirmed`` label for that category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow as pa

from store.db import ConflictError, atomic, frame, one, scalar
from store.ids import event_id
from store.pairs import _messages, append_revision, base_revision, now
from store.records import ErrorCategory, ErrorLabel, Prediction, PreferencePair, Status
from store.refs import NoSuchId, ambiguous, matches

DECISIONS = ("confirmed", "rejected")


# ---------------------------------------------------------------- taxonomy


def _to_category(r: tuple) -> ErrorCategory:
    return ErrorCategory(id=r[0], name=r[1], description=r[2], merged_into=r[3], active=r[4])


def categories(con: duckdb.DuckDBPyConnection, include_inactive: bool = True) -> list[ErrorCategory]:
    sql = "SELECT id, name, description, merged_into, active FROM error_categories"
    if not include_inactive:
        sql += " WHERE active"
    return [_to_category(r) for r in con.execute(sql + " ORDER BY created_at, id").fetchall()]


def get_category(con: duckdb.DuckDBPyConnection, cid: str) -> ErrorCategory:
    row = one(con, "SELECT id, name, description, merged_into, active FROM error_categories WHERE id = ?", [cid])
    if row is None:
        raise KeyError(f"no error category {cid!r}; `tuneloop taxonomy list` shows them")
    return _to_category(row)


def _event(con: duckdb.DuckDBPyConnection, kind: str, payload: dict[str, Any], author: str) -> None:
    con.execute("INSERT INTO taxonomy_events VALUES (?, ?, ?::JSON, ?, ?)",
                [event_id("te_"), kind, orjson.dumps(payload).decode(), author, now()])


def _check_name_free(con: duckdb.DuckDBPyConnection, name: str, except_id: str | None = None) -> None:
    clash = one(con, "SELECT id FROM error_categories WHERE active AND lower(name) = lower(?) AND id <> ?",
                [name.strip(), except_id or ""])
    if clash:
        raise ValueError(f"an active category is already named {name!r} ({clash[0]}); pick another name")


def _insert_category(con, cid: str, name: str, description: str, author: str, **extra: Any) -> None:
    if not name.strip():
        raise ValueError("a category needs a name")
    if one(con, "SELECT 1 FROM error_categories WHERE id = ?", [cid]):
        raise ValueError(f"category id {cid!r} exists already")
    _check_name_free(con, name)
    con.execute("INSERT INTO error_categories VALUES (?, ?, ?, NULL, true, ?)", [cid, name.strip(), description, now()])
    _event(con, "add", {"id": cid, "name": name.strip(), "description": description, **extra}, author)


def ensure_categories(
    con: duckdb.DuckDBPyConnection, defaults: Sequence[tuple[str, str, str]], author: str = "system"
) -> int:
    """Add the default categories a fresh project lacks (by id); idempotent. Returns how many."""
    with atomic(con):
        have = {r[0] for r in con.execute("SELECT id FROM error_categories").fetchall()}
        n = 0
        for cid, name, desc in defaults:
            if cid not in have:
                _insert_category(con, cid, name, desc, author, default=True)
                n += 1
    return n


def add_category(con: duckdb.DuckDBPyConnection, cid: str, name: str, *, description: str = "",
                 author: str) -> ErrorCategory:
    with atomic(con):
        _insert_category(con, cid, name, description, author)
    return get_category(con, cid)


def rename_category(con: duckdb.DuckDBPyConnection, cid: str, new_name: str, *, author: str) -> ErrorCategory:
    with atomic(con):
        old = get_category(con, cid)
        if not new_name.strip():
            raise ValueError("the new name is empty")
        _check_name_free(con, new_name, except_id=cid)
        con.execute("UPDATE error_categories SET name = ? WHERE id = ?", [new_name.strip(), cid])
        _event(con, "rename", {"id": cid, "from": old.name, "to": new_name.strip()}, author)
    return get_category(con, cid)


def merge_categories(con: duckdb.DuckDBPyConnection, sources: Sequence[str], target: str, *,
                     author: str) -> ErrorCategory:
    """Point every source at ``target`` and deactivate it; labels are resolved through it when read."""
    with atomic(con):
        tgt = get_category(con, target)
        if not tgt.active:
            raise ValueError(f"cannot merge into {tgt.name!r}: it is no longer active")
        counts = {}
        for s in sources:
            src = get_category(con, s)
            if src.id == tgt.id:
                raise ValueError(f"cannot merge {src.name!r} into itself")
            if not src.active:
                raise ValueError(f"{src.name!r} was already merged or split")
            counts[src.id] = scalar(con, "SELECT count(*) FROM error_labels WHERE category_id = ?", [src.id])
            con.execute("UPDATE error_categories SET merged_into = ?, active = false WHERE id = ?", [tgt.id, src.id])
        _event(con, "merge", {"sources": list(sources), "into": tgt.id, "label_rows": counts}, author)
    return get_category(con, target)


def split_category(
    con: duckdb.DuckDBPyConnection,
    cid: str,
    children: Sequence[tuple[str, str, str]],
    *,
    assign: dict[str, str] | None = None,
    author: str,
) -> list[ErrorCategory]:
    """Split ``cid`` into ``children`` (id, name, description). The parent's labels are copied to
    the child ``assign[prediction_id]`` names (default: the first child); the parent retires."""
    if len(children) < 2:
        raise ValueError("a split needs at least two new categories")
    assign = assign or {}
    child_ids = [c[0] for c in children]
    bad = sorted({v for v in assign.values() if v not in child_ids})
    if bad:
        raise ValueError(f"assignments name {bad}, which are not among the new categories {child_ids}")
    with atomic(con):
        parent = get_category(con, cid)
        if not parent.active:
            raise ValueError(f"{parent.name!r} was already merged or split")
        con.execute("UPDATE error_categories SET active = false WHERE id = ?", [cid])
        for ccid, name, desc in children:
            _insert_category(con, ccid, name, desc, author, split_from=cid)
        tbl = pa.table({"prediction_id": list(assign), "child": list(assign.values())},
                       schema=pa.schema([("prediction_id", pa.string()), ("child", pa.string())]))
        con.register("_assign", tbl)
        # the parent's own labels and those of categories merged into it earlier
        sources = [r[0] for r in con.execute(_RESOLVE + " SELECT cid FROM res WHERE root = ?", [cid]).fetchall()]
        n = scalar(con, "SELECT count(*) FROM error_labels WHERE list_contains(?, category_id)", [sources])
        con.execute(
            """INSERT INTO error_labels
               SELECT 'el_' || md5(l.id || ?), l.prediction_id, coalesce(a.child, ?), l.source, l.detector,
                      l.decision, l.confidence, '[split from ' || ? || '] ' || l.evidence, l.author, l.created_at
               FROM error_labels l LEFT JOIN _assign a ON a.prediction_id = l.prediction_id
               WHERE list_contains(?, l.category_id)""",
            [cid, child_ids[0], parent.name, sources],
        )
        con.unregister("_assign")
        _event(con, "split", {"id": cid, "into": child_ids, "default": child_ids[0],
                              "assigned": len(assign), "label_rows": n}, author)
    return [get_category(con, c) for c in child_ids]


def taxonomy_history(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return frame(con, """SELECT created_at, kind, payload::VARCHAR AS payload, author FROM taxonomy_events
                         ORDER BY created_at, id""")


# ---------------------------------------------------------------- labels

_RESOLVE = """
    WITH RECURSIVE chain(cid, cur, depth) AS (
        SELECT id, id, 0 FROM error_categories
        UNION ALL
        SELECT chain.cid, c.merged_into, chain.depth + 1
        FROM chain JOIN error_categories c ON c.id = chain.cur
        WHERE c.merged_into IS NOT NULL AND chain.depth < 32
    ),
    res AS (SELECT cid, arg_max(cur, depth) AS root FROM chain GROUP BY cid)"""


def add_auto_labels(con: duckdb.DuckDBPyConnection, proposals: pl.DataFrame, *, author: str = "auto") -> int:
    """Append automatic proposals (prediction_id, category_id, detector, confidence, evidence).

    A proposal identical to one already stored (same prediction, category, detector and
    evidence) is skipped, so re-running the same detectors is a no-op. Returns rows added.
    """
    if proposals.height == 0:
        return 0
    known = {r[0] for r in con.execute("SELECT id FROM error_categories").fetchall()}
    unknown = sorted(set(proposals["category_id"].to_list()) - known)
    if unknown:
        raise ValueError(f"proposals name unknown categories {unknown}; add them to the taxonomy first")
    df = proposals.select("prediction_id", "category_id", "detector", "confidence", "evidence")
    ts = now()
    with atomic(con):
        con.register("_props", df.to_arrow())
        before = scalar(con, "SELECT count(*) FROM error_labels")
        con.execute(
            """INSERT INTO error_labels
               SELECT 'el_' || md5(p.prediction_id || p.category_id || p.detector || ? || random()::VARCHAR),
                      p.prediction_id, p.category_id, 'auto', p.detector, 'proposed', p.confidence, p.evidence, ?, ?
               FROM (SELECT DISTINCT * FROM _props) p
               WHERE NOT EXISTS (SELECT 1 FROM error_labels l WHERE l.source = 'auto'
                   AND l.prediction_id = p.prediction_id AND l.category_id = p.category_id
                   AND l.detector = p.detector AND l.evidence = p.evidence)""",
            [ts.isoformat(), author, ts],
        )
        added = scalar(con, "SELECT count(*) FROM error_labels") - before
        con.unregister("_props")
    return int(added)


def _human_row(con, prediction_id: str, category_id: str, decision: str, author: str, comment: str) -> str:
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    if not one(con, "SELECT 1 FROM predictions WHERE id = ?", [prediction_id]):
        raise KeyError(f"no prediction {prediction_id!r}; `tuneloop errors list --run RUN` shows them")
    cat = get_category(con, category_id)
    if not cat.active:
        raise ValueError(f"category {cat.name!r} is retired (merged or split); label with its successor")
    lid = event_id("el_")
    con.execute("INSERT INTO error_labels VALUES (?, ?, ?, 'human', ?, ?, 1.0, ?, ?, ?)",
                [lid, prediction_id, category_id, author, decision, comment, author, now()])
    return lid


def review(con: duckdb.DuckDBPyConnection, prediction_id: str, category_id: str, decision: str, *,
           author: str, comment: str = "") -> str:
    """A reviewer confirms or rejects a category on a prediction (a new label row)."""
    with atomic(con):
        lid = _human_row(con, prediction_id, category_id, decision, author, comment)
    return lid


def change_category(con: duckdb.DuckDBPyConnection, prediction_id: str, old: str, new: str, *,
                    author: str, comment: str = "") -> tuple[str, str]:
    """Reject ``old`` and confirm ``new`` on one prediction, in one transaction."""
    with atomic(con):
        a = _human_row(con, prediction_id, old, "rejected", author, comment or f"changed to {new}")
        b = _human_row(con, prediction_id, new, "confirmed", author, comment or f"changed from {old}")
    return a, b


def label_history(con: duckdb.DuckDBPyConnection, prediction_id: str) -> list[ErrorLabel]:
    rows = con.execute(
        """SELECT id, prediction_id, category_id, source, detector, decision, confidence, evidence, author,
                  created_at FROM error_labels WHERE prediction_id = ? ORDER BY created_at, id""",
        [prediction_id],
    ).fetchall()
    return [ErrorLabel(id=r[0], prediction_id=r[1], category_id=r[2], source=r[3], detector=r[4], decision=r[5],
                       confidence=r[6], evidence=r[7], author=r[8], created_at=r[9]) for r in rows]


def current_labels_sql(scope: str = "set") -> str:
    """The one definition of a *current* error label, as CTEs ending in ``cur``.

    One row of ``cur`` per (prediction, resolved active category): the newest human decision
    if there is one, else the strongest automatic proposal (confidence, then newest). Every
    read of current labels (``current_labels``, the Errors page's aggregates and pages in
    ``store.error_pages``) selects from ``cur``, so they cannot disagree. Columns:
    prediction_id, pair_id, category_id, state (proposed/confirmed/rejected), source (auto or
    human: who decided the state), detector, confidence (1.0 once a human decided), evidence,
    auto_detector, auto_confidence, auto_evidence (the strongest proposal, NULL without one),
    reviewer. The CTEs ``res`` (category -> merge root) and ``lab`` (the scoped label rows)
    are visible too.

    ``scope`` names the one bound parameter: ``"set"`` a prediction set id, ``"prediction"``
    one prediction id; ``"all"`` (every prediction of the project) binds none.
    """
    where = {"set": "x.prediction_set_id = ?", "prediction": "l.prediction_id = ?", "all": "true"}[scope]
    return _RESOLVE + f""",
        lab AS (
            SELECT l.*, x.pair_id, res.root AS rcat
            FROM error_labels l JOIN predictions x ON x.id = l.prediction_id
            JOIN res ON res.cid = l.category_id
            JOIN error_categories rc ON rc.id = res.root AND rc.active
            WHERE {where}
        ),
        pick AS (
            -- per (prediction, category): the newest human row, and the strongest automatic one
            -- (highest confidence, then newest, then lowest id), in one pass over the labels
            SELECT prediction_id, rcat, any_value(pair_id) AS pair_id,
                   arg_max(struct_pack(decision := decision, detector := detector, evidence := evidence, author := author),
                           (created_at, id)) FILTER (WHERE source = 'human') AS h,
                   arg_min(struct_pack(detector := detector, confidence := confidence, evidence := evidence),
                           (-confidence, -epoch_us(created_at), id)) FILTER (WHERE source <> 'human') AS a
            FROM lab GROUP BY prediction_id, rcat
        ),
        cur AS (
            SELECT prediction_id, pair_id, rcat AS category_id,
                   coalesce(h.decision, 'proposed') AS state,
                   CASE WHEN h IS NULL THEN 'auto' ELSE 'human' END AS source,
                   coalesce(h.detector, a.detector) AS detector,
                   CASE WHEN h IS NULL THEN a.confidence ELSE 1.0 END AS confidence,
                   coalesce(nullif(h.evidence, ''), a.evidence, '') AS evidence,
                   a.detector AS auto_detector, a.confidence AS auto_confidence, a.evidence AS auto_evidence,
                   h.author AS reviewer
            FROM pick
        )"""


def current_labels(con: duckdb.DuckDBPyConnection, prediction_set_id: str, *,
                   include_rejected: bool = False) -> pl.DataFrame:
    """One row per (prediction, resolved category) of ``current_labels_sql``, with the category's
    name: prediction_id, pair_id, category_id, state, source, detector, confidence, evidence,
    auto_detector, auto_confidence, auto_evidence, reviewer, category. Rejected ones only with
    ``include_rejected``."""
    keep = "" if include_rejected else "WHERE state <> 'rejected'"
    return frame(
        con,
        current_labels_sql("set") + f"""
        SELECT cur.*, c.name AS category FROM cur JOIN error_categories c ON c.id = cur.category_id
        {keep} ORDER BY prediction_id, category_id""",
        [prediction_set_id],
    )


def labelled_sets(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> int:
    """How many automatic label rows a prediction set has (0 = never categorised)."""
    return int(scalar(con, """SELECT count(*) FROM error_labels l JOIN predictions x ON x.id = l.prediction_id
                               WHERE x.prediction_set_id = ? AND l.source = 'auto'""", [prediction_set_id]))


# A pair's source text in SQL (``p`` pairs, ``r`` its revision, ``d`` its document, LEFT JOINed):
# the document span it came from, else the revision's input field, else ''.
SOURCE_TEXT_SQL = """CASE WHEN d.text IS NOT NULL AND d.text <> '' AND p.char_start IS NOT NULL AND p.char_end IS NOT NULL
                          THEN substring(d.text, p.char_start + 1, p.char_end - p.char_start)
                          ELSE r.input END"""


def predictions_with_source(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> pl.DataFrame:
    """``store.runs.predictions_frame`` columns plus ``source_text``: the pair's document span, else
    its input field (the context it was asked about), else ''; and ``judge_faithful``: an LLM
    judge's latest readable faithfulness score of the prediction (1-5, ``store.judge``), else NULL."""
    return frame(
        con,
        f"""SELECT x.id AS prediction_id, x.pair_id, x.revision_id, x.prompt, x.output, x.reference,
                  x.n_prompt_tokens, x.n_output_tokens, x.finish_reason, x.latency_ms,
                  r.instruction, r.input, r.response, r.tags, p.document_id, p.char_start, p.char_end,
                  p.generator, p.source_uri, p.status AS pair_status, p.version AS pair_version,
                  {SOURCE_TEXT_SQL} AS source_text, j.judge_faithful
           FROM predictions x JOIN pair_revisions r ON r.id = x.revision_id JOIN pairs p ON p.id = x.pair_id
                LEFT JOIN documents d ON d.id = p.document_id
                LEFT JOIN (SELECT target_id, arg_max(score, created_at) AS judge_faithful FROM judge_scores
                           WHERE target_kind = 'prediction' AND criterion = 'faithful' AND score IS NOT NULL
                           GROUP BY target_id) j ON j.target_id = x.id
           WHERE x.prediction_set_id = ? ORDER BY x.pair_id""",
        [prediction_set_id],
    )


def slice_membership(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> pl.DataFrame:
    """(pair_id, slice) for every slice (name@version) holding a pair of this prediction set."""
    return frame(
        con,
        """SELECT DISTINCT x.pair_id, s.name || '@' || s.version AS slice
           FROM predictions x JOIN slice_items i ON i.pair_id = x.pair_id JOIN slices s ON s.id = i.slice_id
           WHERE x.prediction_set_id = ? ORDER BY 1, 2""",
        [prediction_set_id],
    )


# ---------------------------------------------------------------- corrections


@dataclass(frozen=True)
class Correction:
    pair_id: str
    revision_id: str
    version: int
    preference_id: str
    label_id: str | None


def resolve_prediction(con: duckdb.DuckDBPyConnection, ref: str, *, run_id: str | None = None) -> str:
    """The full id of the prediction ``ref`` names.

    ``ref`` is a prediction id or an unambiguous prefix of one, or a pair id (or prefix): then
    the pair's prediction in run ``run_id`` (from the newest prediction set of that run holding
    the pair), or without a run the pair's newest prediction in any run. A prefix that several
    predictions or pairs start with raises ``AmbiguousId`` listing them; nothing, ``NoSuchId``.
    """
    preds = matches(con, "prediction", ref)
    if ref in preds:
        return ref
    pairs = matches(con, "pair", ref)
    if ref in pairs:
        pairs = [ref]
    if len(preds) + len(pairs) > 1:
        raise ambiguous("prediction or pair", ref, preds + pairs)
    if preds:
        return preds[0]
    if not pairs:
        raise NoSuchId(f"no such prediction or pair {ref!r}; `tuneloop errors list --run RUN` shows the predictions")
    found = latest_prediction_id(con, pairs[0], run_id=run_id)
    if found is None:
        raise NoSuchId(f"pair {pairs[0]} has no prediction" + (f" in run {run_id}" if run_id else "")
                       + "; `tuneloop predict --run RUN` makes them")
    return found


def latest_prediction_id(con: duckdb.DuckDBPyConnection, pair_id: str, *, run_id: str | None = None) -> str | None:
    """The pair's prediction from the newest prediction set holding it (of run ``run_id``, else of any run)."""
    row = one(con, """SELECT x.id FROM predictions x JOIN prediction_sets s ON s.id = x.prediction_set_id
                      WHERE x.pair_id = ? AND (CAST(? AS VARCHAR) IS NULL OR x.run_id = ?)
                      ORDER BY s.created_at DESC, s.id DESC LIMIT 1""", [pair_id, run_id, run_id])
    return None if row is None else str(row[0])


def get_prediction(con: duckdb.DuckDBPyConnection, prediction_id: str) -> Prediction:
    row = one(con, """SELECT id, prediction_set_id, run_id, pair_id, revision_id, prompt, output, reference,
                             n_prompt_tokens, n_output_tokens, finish_reason, latency_ms
                      FROM predictions WHERE id = ?""", [prediction_id])
    if row is None:
        raise KeyError(f"no prediction {prediction_id!r}; `tuneloop errors list --run RUN` shows them")
    return Prediction(**dict(zip(Prediction.model_fields, row)))


def _prediction(con, prediction_id: str) -> tuple:
    row = one(con, "SELECT id, pair_id, prompt, output, reference FROM predictions WHERE id = ?", [prediction_id])
    if row is None:
        raise KeyError(f"no prediction {prediction_id!r}; `tuneloop errors list --run RUN` shows them")
    return row


def correct(
    con: duckdb.DuckDBPyConnection,
    prediction_id: str,
    response: str | None,
    *,
    author: str,
    category_id: str | None = None,
    reason: str = "",
    expected_version: int | None = None,
    base_revision_id: str | None = None,
    use_output: bool = False,
) -> Correction:
    """Turn a corrected answer into training data, in one transaction.

    Appends a revision of the prediction's pair whose response is ``response`` (with
    ``use_output`` and ``response`` None: the model's output, i.e. the model was right), records a
    preference pair (prompt, chosen = ``response``, rejected = the model output, or the old
    reference when the model already said ``response``) with ``category_id``, and a human
    ``confirmed`` label of that category. ``base_revision_id`` is the revision of the pair the
    corrector saw (or ``expected_version``, its version; neither: the head now). When that is no
    longer the head, the revision is still stored beside the head (marked conflict) and
    ``ConflictError`` is raised after commit (inside a caller's ``atomic`` block: after the write,
    which commits with that block).
    """
    if use_output == (response is not None):
        raise ValueError("give the right answer or use the model's output, not both or neither")
    if response is not None and not response.strip():
        raise ValueError("the correction is empty; write the right answer")
    with atomic(con):
        _, pid, prompt, output, reference = _prediction(con, prediction_id)
        if response is None:
            if not output.strip():
                raise ValueError(f"the model's output of {prediction_id} is empty; write the right answer instead")
            response = output
        if base_revision_id is None and expected_version is None:
            base_revision_id = scalar(con, "SELECT head_revision_id FROM pairs WHERE id = ?", [pid])
        base_id = base_revision(con, pid, base_revision_id, expected_version)
        messages = [m.model_dump() for m in _messages(scalar(con, "SELECT messages FROM pair_revisions WHERE id = ?",
                                                                 [base_id]))]
        if messages and messages[-1]["role"] == "assistant":
            messages[-1]["content"] = response  # a multi-turn pair's answer is its last assistant turn
        res = append_revision(
            con, pid, base_revision_id=base_id, author=author,
            reason=reason or f"correction of prediction {prediction_id}", response=response,
            messages=messages or None,
        )
        conflict, rid, version = res.conflict, res.revision_id, res.version
        ts = now()
        rejected = output if output.strip() != response.strip() else reference
        # The same correction again (a re-run, a double click) keeps its one preference pair.
        pref_id = scalar(con, """SELECT id FROM preference_pairs WHERE prediction_id = ? AND chosen = ? AND rejected = ?
                                   AND category_id IS NOT DISTINCT FROM ?""",
                         [prediction_id, response, rejected, category_id])
        if pref_id is None:
            pref_id = add_preference_pair(con, pair_id=pid, prediction_id=prediction_id, prompt=prompt,
                                          chosen=response, rejected=rejected, category_id=category_id,
                                          author=author, at=ts)
        label_id = None
        if category_id:
            label_id = _human_row(con, prediction_id, category_id, "confirmed", author,
                                  reason or "corrected")
    if conflict:
        raise ConflictError(
            f"Pair {pid} changed since you opened it (someone else saved revision {res.head_revision_id}). "
            f"Your correction was kept as revision {rid} beside the current one, with its preference pair; "
            f"nothing was overwritten.",
            kept_revision_id=rid,
        )
    return Correction(pid, rid, version, pref_id, label_id)


@dataclass(frozen=True)
class Accepted:
    corrections: list[Correction]  # one per prediction whose output became its pair's head
    conflicts: list[str]  # revisions kept beside a head that moved since the prediction (nothing overwritten)


def accept_outputs(con: duckdb.DuckDBPyConnection, prediction_ids: Sequence[str], *, author: str,
                   reason: str = "") -> Accepted:
    """The model was right: each prediction's output becomes its pair's response (``correct`` with
    ``use_output``, so each also gets its preference pair), all in one transaction.

    Each edit is based on the revision the model predicted on, whose response is the reference
    the reviewer compared the output with: a pair edited since keeps its head and gets the output
    beside it, marked conflict. No error label is confirmed: the model was not wrong.
    """
    done: list[Correction] = []
    kept: list[str] = []
    with atomic(con):
        for prediction_id in dict.fromkeys(prediction_ids):
            base = scalar(con, "SELECT revision_id FROM predictions WHERE id = ?", [prediction_id])
            try:
                done.append(correct(con, prediction_id, None, use_output=True, author=author, base_revision_id=base,
                                    reason=reason or f"accepted the model's answer (prediction {prediction_id})"))
            except ConflictError as exc:  # already written in this transaction, beside the head
                kept.append(exc.kept_revision_id or "")
    return Accepted(done, kept)


def mark_bad(
    con: duckdb.DuckDBPyConnection,
    prediction_id: str,
    status: Status | str,
    *,
    author: str,
    comment: str = "",
    category_id: str | None = None,
) -> int:
    """The pair behind a prediction is bad data (wrong label, wrong source): move it to needs_fix or
    rejected and, with ``category_id``, confirm that category on the prediction. One transaction."""
    status = Status(status)
    if status not in (Status.needs_fix, Status.rejected):
        raise ValueError("bad data goes to needs_fix or rejected")
    with atomic(con):
        _, pid, *_ = _prediction(con, prediction_id)
        row = one(con, "SELECT version, status, head_revision_id FROM pairs WHERE id = ?", [pid])
        assert row is not None  # predictions always point at a stored pair
        version, prev, head = row
        ts = now()
        if prev != status.value:
            con.execute("UPDATE pairs SET status = ?, version = version + 1, updated_by = ?, updated_at = ? WHERE id = ?",
                        [status.value, author, ts, pid])
            con.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [event_id("v_"), pid, head, status.value, prev, author,
                         comment or f"bad data (from prediction {prediction_id})", ts])
            version += 1
        if category_id:
            _human_row(con, prediction_id, category_id, "confirmed", author, comment or f"marked {status.value}")
    return int(version)


def add_preference_pair(con: duckdb.DuckDBPyConnection, *, pair_id: str, prediction_id: str | None, prompt: str,
                        chosen: str, rejected: str, category_id: str | None, author: str,
                        at: datetime | None = None) -> str:
    """Append one preference pair (prompt, chosen, rejected) of a pair; returns its id. The one
    insert path: a correction (``correct``) and a blind A/B vote with a winner (``store.ab``) write here."""
    pref_id = event_id("pp_")
    con.execute("""INSERT INTO preference_pairs (id, pair_id, prediction_id, prompt, chosen, rejected, category_id,
                                                 author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [pref_id, pair_id, prediction_id, prompt, chosen, rejected, category_id, author, at or now()])
    return pref_id


def preference_pairs(con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str] | None = None) -> list[PreferencePair]:
    """The preference pairs that count (of ``pair_ids``, else all): every correction's, and the
    winner's of each *current* blind A/B vote; one a person's later vote on the same item replaced
    stays stored but counts no more (``store.ab.SUPERSEDED_PREFERENCES_SQL``)."""
    from store.ab import SUPERSEDED_PREFERENCES_SQL  # store.ab writes through this module

    sql = f"""SELECT id, pair_id, prediction_id, prompt, chosen, rejected, category_id, author
             FROM preference_pairs WHERE id NOT IN ({SUPERSEDED_PREFERENCES_SQL})"""
    params: list[Any] = []
    if pair_ids is not None:
        sql += " AND list_contains(?, pair_id)"
        params.append(list(pair_ids))
    rows = con.execute(sql + " ORDER BY created_at, id", params).fetchall()
    return [PreferencePair(id=r[0], pair_id=r[1], prediction_id=r[2], prompt=r[3], chosen=r[4], rejected=r[5],
                           category_id=r[6], author=r[7]) for r in rows]


def pair_states(con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str]) -> pl.DataFrame:
    """Current head revision and status of pairs, plus the categories of their corrections
    (preference pairs) and whether the head descends from each given revision (for retrain)."""
    tbl = pa.table({"pair_id": list(pair_ids)}, schema=pa.schema([("pair_id", pa.string())]))
    con.register("_pids", tbl)
    try:
        return con.sql(
            """SELECT p.id AS pair_id, p.head_revision_id, p.status,
                      coalesce((SELECT list(DISTINCT coalesce(pp.category_id, '')) FROM preference_pairs pp
                                WHERE pp.pair_id = p.id), []) AS corrected_categories
               FROM (SELECT DISTINCT pair_id FROM _pids) i JOIN pairs p ON p.id = i.pair_id ORDER BY p.id"""
        ).pl()
    finally:
        con.unregister("_pids")
