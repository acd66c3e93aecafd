"""Ordered, named migrations, recorded in ``_migrations``.

Each migration is a function that takes a connection inside a transaction (``atomic``). ``migrate``
applies the ones not yet recorded, in order; running it twice is a no-op, and a database
created fresh and one migrated step by step end with the same schema (tests check both).
Never edit a migration that has shipped: append a new one.

Design notes:
- Content tables (documents, elements, chunks, pair_revisions, pair_sources, predictions,
  error_labels, reviews, *_events) are append-only: the product inserts into them and never updates or
  deletes. ``pairs``, ``error_categories`` and ``runs`` hold current state; every change
  to them is also recorded in an append-only log in the same transaction.
- Slices are frozen: a slice row and its items are written once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import duckdb

from store.db import atomic

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_documents_and_pairs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE documents (
            id VARCHAR PRIMARY KEY,            -- d_ + sha256(file bytes)
            uri VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            filetype VARCHAR NOT NULL,
            size_bytes BIGINT NOT NULL,
            n_pages INTEGER,
            title VARCHAR NOT NULL DEFAULT '',
            text VARCHAR NOT NULL DEFAULT '',
            previous_id VARCHAR,               -- older version of the same uri
            metadata JSON,
            created_at TIMESTAMP NOT NULL,
            author VARCHAR NOT NULL DEFAULT ''
        )""")
    con.execute("""
        CREATE TABLE elements (
            id VARCHAR PRIMARY KEY,
            document_id VARCHAR NOT NULL,
            idx INTEGER NOT NULL,
            type VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            page INTEGER,
            parent_id VARCHAR,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            metadata JSON
        )""")
    con.execute("""
        CREATE TABLE chunks (
            id VARCHAR PRIMARY KEY,
            document_id VARCHAR NOT NULL,
            idx INTEGER NOT NULL,
            title VARCHAR NOT NULL DEFAULT '',
            text VARCHAR NOT NULL,
            element_ids VARCHAR[] NOT NULL,
            page_start INTEGER,
            page_end INTEGER,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL
        )""")
    con.execute("""
        CREATE TABLE pairs (
            id VARCHAR PRIMARY KEY,            -- p_ + sha256(canonical JSON of first content)
            head_revision_id VARCHAR NOT NULL,
            version INTEGER NOT NULL,          -- bumps on every revision or status change
            status VARCHAR NOT NULL,
            split VARCHAR,
            duplicate_of VARCHAR,
            document_id VARCHAR,
            page INTEGER,
            element_ids VARCHAR[],
            char_start INTEGER,
            char_end INTEGER,
            generator VARCHAR NOT NULL,
            generator_version VARCHAR NOT NULL DEFAULT '',
            source_uri VARCHAR NOT NULL DEFAULT '',
            source_line INTEGER,
            author VARCHAR NOT NULL,
            updated_by VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE pair_revisions (
            id VARCHAR PRIMARY KEY,            -- r_ + sha256(pair id, parent, content, tags)
            pair_id VARCHAR NOT NULL,
            revision_no INTEGER NOT NULL,
            parent_id VARCHAR,
            instruction VARCHAR NOT NULL,
            input VARCHAR NOT NULL DEFAULT '',
            response VARCHAR NOT NULL DEFAULT '',
            system VARCHAR NOT NULL DEFAULT '',
            messages JSON,
            tags VARCHAR[] NOT NULL DEFAULT [],
            author VARCHAR NOT NULL,
            reason VARCHAR NOT NULL DEFAULT '',
            conflict BOOLEAN NOT NULL DEFAULT false,  -- saved against a stale version
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE reviews (
            id VARCHAR PRIMARY KEY,
            pair_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            previous_status VARCHAR,
            author VARCHAR NOT NULL,
            comment VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE import_batches (
            id VARCHAR PRIMARY KEY,
            uri VARCHAR NOT NULL,
            format VARCHAR NOT NULL,
            n_rows INTEGER NOT NULL,
            n_new INTEGER NOT NULL,
            n_skipped INTEGER NOT NULL,
            errors JSON,
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("CREATE INDEX pairs_status_idx ON pairs(status)")
    con.execute("CREATE INDEX revisions_pair_idx ON pair_revisions(pair_id)")
    con.execute("CREATE INDEX elements_doc_idx ON elements(document_id)")


@migration
def m002_curation(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE duplicate_clusters (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,             -- exact_prompt, exact_full, near_lexical, near_semantic
            params JSON,
            kept_pair_id VARCHAR NOT NULL,
            size INTEGER NOT NULL,
            resolution VARCHAR NOT NULL DEFAULT 'auto',  -- auto, confirmed, not_duplicates
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE duplicate_members (
            cluster_id VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,
            similarity DOUBLE NOT NULL,
            is_kept BOOLEAN NOT NULL,
            PRIMARY KEY (cluster_id, pair_id)
        )""")
    con.execute("""
        CREATE TABLE quality_signals (
            revision_id VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            score DOUBLE NOT NULL,
            flagged BOOLEAN NOT NULL,
            reason VARCHAR NOT NULL DEFAULT '',
            details JSON,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (revision_id, name, version)
        )""")
    con.execute("""
        CREATE TABLE embeddings (
            revision_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,            -- model name@version
            field VARCHAR NOT NULL,            -- prompt, full, ...
            vector FLOAT[] NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (revision_id, model, field)
        )""")
    con.execute("""
        CREATE TABLE clusterings (
            id VARCHAR PRIMARY KEY,
            model VARCHAR NOT NULL,
            k INTEGER NOT NULL,
            params JSON,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE topic_clusters (
            clustering_id VARCHAR NOT NULL,
            cluster INTEGER NOT NULL,
            name VARCHAR NOT NULL,
            keywords VARCHAR[] NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (clustering_id, cluster)
        )""")
    con.execute("""
        CREATE TABLE cluster_assignments (
            clustering_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            cluster INTEGER NOT NULL,
            x DOUBLE,
            y DOUBLE,
            PRIMARY KEY (clustering_id, revision_id)
        )""")
    con.execute("CREATE INDEX signals_pair_idx ON quality_signals(pair_id)")
    con.execute("CREATE INDEX dup_members_pair_idx ON duplicate_members(pair_id)")


@migration
def m003_slices_and_runs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE slices (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            content_hash VARCHAR NOT NULL,     -- sha256 over (revision id, split, weight) in order
            filter JSON NOT NULL,
            seed INTEGER NOT NULL,
            eval_fraction DOUBLE NOT NULL,
            split_by VARCHAR NOT NULL,
            parent_id VARCHAR,
            n_items INTEGER NOT NULL,
            n_train INTEGER NOT NULL,
            n_eval INTEGER NOT NULL,
            description VARCHAR NOT NULL DEFAULT '',
            author VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            UNIQUE (name, version)
        )""")
    con.execute("""
        CREATE TABLE slice_items (
            slice_id VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            pair_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,
            split VARCHAR NOT NULL,
            weight DOUBLE NOT NULL DEFAULT 1.0,
            PRIMARY KEY (slice_id, position)
        )""")
    con.execute("""
        CREATE TABLE runs (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL DEFAULT '',
            kind VARCHAR NOT NULL,             -- train, baseline
            base_model VARCHAR NOT NULL,
            slice_id VARCHAR,
            slice_hash VARCHAR,
            parent_run_id VARCHAR,
            config JSON NOT NULL,
            status VARCHAR NOT NULL,
            run_dir VARCHAR NOT NULL,
            adapter_path VARCHAR,
            error VARCHAR,
            summary JSON,
            author VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            started_at TIMESTAMP,
            finished_at TIMESTAMP
        )""")
    con.execute("""
        CREATE TABLE run_events (
            run_id VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            message VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE run_metrics (
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            name VARCHAR NOT NULL,             -- loss, val_loss, lr, tokens_per_s, grad_norm, ...
            value DOUBLE NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (run_id, step, name)
        )""")
    con.execute("""
        CREATE TABLE prediction_sets (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            slice_id VARCHAR,
            split VARCHAR,
            model VARCHAR NOT NULL,            -- base model (+ adapter path) that generated
            generation_config JSON NOT NULL,
            n INTEGER NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE predictions (
            id VARCHAR PRIMARY KEY,
            prediction_set_id VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            output VARCHAR NOT NULL,
            reference VARCHAR NOT NULL DEFAULT '',
            n_prompt_tokens INTEGER NOT NULL DEFAULT 0,
            n_output_tokens INTEGER NOT NULL DEFAULT 0,
            finish_reason VARCHAR NOT NULL DEFAULT 'stop',
            latency_ms DOUBLE NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE metrics (
            run_id VARCHAR NOT NULL,
            prediction_set_id VARCHAR NOT NULL,
            slice_id VARCHAR,
            scope VARCHAR NOT NULL,            -- overall, label:<name>, category:<id>, ...
            name VARCHAR NOT NULL,
            value DOUBLE NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (prediction_set_id, scope, name)
        )""")
    con.execute("CREATE INDEX predictions_set_idx ON predictions(prediction_set_id)")
    con.execute("CREATE INDEX slice_items_slice_idx ON slice_items(slice_id)")


@migration
def m004_errors(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE error_categories (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            description VARCHAR NOT NULL DEFAULT '',
            merged_into VARCHAR,
            active BOOLEAN NOT NULL DEFAULT true,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE taxonomy_events (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,             -- add, rename, merge, split, deactivate
            payload JSON NOT NULL,
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE error_labels (
            id VARCHAR PRIMARY KEY,
            prediction_id VARCHAR NOT NULL,
            category_id VARCHAR NOT NULL,
            source VARCHAR NOT NULL,           -- auto, human
            detector VARCHAR NOT NULL DEFAULT '',
            decision VARCHAR NOT NULL,         -- proposed, confirmed, rejected
            confidence DOUBLE NOT NULL DEFAULT 1.0,
            evidence VARCHAR NOT NULL DEFAULT '',
            author VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE preference_pairs (
            id VARCHAR PRIMARY KEY,
            pair_id VARCHAR NOT NULL,
            prediction_id VARCHAR,
            prompt VARCHAR NOT NULL,
            chosen VARCHAR NOT NULL,
            rejected VARCHAR NOT NULL,
            category_id VARCHAR,
            author VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("CREATE INDEX error_labels_pred_idx ON error_labels(prediction_id)")


@migration
def m005_users(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE users (
            name VARCHAR PRIMARY KEY,
            display_name VARCHAR NOT NULL DEFAULT '',
            role VARCHAR NOT NULL,             -- admin, reviewer, annotator
            password_hash VARCHAR,             -- scrypt; NULL for OIDC-only users
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE assignments (
            pair_id VARCHAR NOT NULL,
            user_name VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (pair_id, user_name)
        )""")


# Names are the recorded identity of a migration (existing databases list them in
# ``_migrations``), so a shipped name never changes; ``migrate`` applies them sorted by name.


@migration
def m050_search_text(con: duckdb.DuckDBPyConnection) -> None:
    # Derived, rebuildable: the lower-cased text of each pair revision, so a text search scans
    # one column with a plain substring match instead of three ILIKEs (store/pair_pages.py keeps
    # it in step with the append-only pair_revisions before each search).
    con.execute("""
        CREATE TABLE search_text (
            revision_id VARCHAR PRIMARY KEY,
            text VARCHAR NOT NULL
        )""")


@migration
def m060_sign_in_failures(con: duckdb.DuckDBPyConnection) -> None:
    # Failed sign-ins per (account name, client address), read by the rate limit in store/users.py.
    # Kept in the project, not in a server's memory, so every app process serving the project
    # counts the same failures and a restart does not reset them. Not content: a successful
    # sign-in clears its (account, address) rows and rows older than a day are pruned.
    con.execute("""
        CREATE TABLE sign_in_failures (
            user_name VARCHAR NOT NULL,
            address VARCHAR NOT NULL,          -- client IP, or 'local' when Streamlit reports none
            failed_at TIMESTAMP NOT NULL
        )""")


@migration
def m070_signed_out_sessions(con: duckdb.DuckDBPyConnection) -> None:
    # Sign-in tokens revoked by signing out (store/sessions.py), each kept until it would have expired
    # anyway and pruned after. Not content: a token is a convenience, the account is the identity.
    con.execute("""
        CREATE TABLE signed_out_sessions (
            nonce VARCHAR PRIMARY KEY,         -- the token's random part, not the token
            user_name VARCHAR NOT NULL,
            expires_at TIMESTAMP NOT NULL
        )""")


@migration
def m080_ratings_and_guidelines(con: duckdb.DuckDBPyConnection) -> None:
    # A reviewer's 1-5 rating of a pair revision (store/ratings.py) and the project's annotation
    # guideline (store/guidelines.py). Both are content logs: rows are appended, the latest wins.
    con.execute("""
        CREATE TABLE ratings (
            id VARCHAR PRIMARY KEY,
            pair_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,      -- the text rated: an edit starts unrated
            value INTEGER CHECK (value BETWEEN 1 AND 5),  -- NULL withdraws the reviewer's rating
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("CREATE INDEX ratings_revision_idx ON ratings(revision_id)")
    con.execute("""
        CREATE TABLE guidelines (
            version INTEGER PRIMARY KEY,       -- 1, 2, ... in the order saved; the highest is the guideline
            text VARCHAR NOT NULL,             -- Markdown as written (the app renders a safe subset)
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")


@migration
def m095_settings(con: duckdb.DuckDBPyConnection) -> None:
    # Named project settings the app remembers (store/settings.py), e.g. the Ingest page's last
    # generator choice. A log: each change appends a version of the name; the highest is current.
    con.execute("""
        CREATE TABLE settings (
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            value JSON NOT NULL,
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (name, version)
        )""")


@migration
def m100_training_dynamics(con: duckdb.DuckDBPyConnection) -> None:
    # Per-example training dynamics of a run (store/dynamics.py): each train pair's mean token loss
    # and confidence (exp(-mean token loss)) in each epoch, as the trainer measured them.
    # Immutable per run, like predictions: a re-sync adds only rows it does not have yet.
    con.execute("""
        CREATE TABLE training_dynamics (
            run_id VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            revision_id VARCHAR NOT NULL,
            epoch INTEGER NOT NULL,
            step INTEGER NOT NULL,
            loss DOUBLE NOT NULL,
            confidence DOUBLE NOT NULL,
            PRIMARY KEY (run_id, pair_id, epoch)
        )""")


@migration
def m110_pair_sources(con: duckdb.DuckDBPyConnection) -> None:
    # Every source a pair was produced from (store/pairs.py ``insert_rows`` appends one whenever a batch
    # yields a pair, new or already stored), so the same text generated from two documents, or imported
    # from two files, keeps both origins. The pair's own provenance columns stay as they were (its first
    # source). Append-only. ``id`` hashes the source fields (kept in step with ``SOURCE_ID`` in
    # store/pairs.py), so the same source is recorded once however often it is re-ingested.
    con.execute("""
        CREATE TABLE pair_sources (
            id VARCHAR PRIMARY KEY,            -- ps_ + md5(pair, document, uri, line, chars, generator)
            pair_id VARCHAR NOT NULL,
            document_id VARCHAR,
            source_uri VARCHAR NOT NULL DEFAULT '',
            source_line INTEGER,
            char_start INTEGER,
            char_end INTEGER,
            element_ids VARCHAR[],
            generator VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("CREATE INDEX pair_sources_pair_idx ON pair_sources(pair_id)")
    con.execute("""
        INSERT INTO pair_sources
        SELECT 'ps_' || md5(concat_ws(chr(31), id, coalesce(document_id, ''), coalesce(source_uri, ''),
                                      coalesce(source_line::VARCHAR, ''), coalesce(char_start::VARCHAR, ''),
                                      coalesce(char_end::VARCHAR, ''), coalesce(generator, ''))),
               id, document_id, coalesce(source_uri, ''), source_line, char_start, char_end, element_ids,
               generator, created_at
        FROM pairs""")


@migration
def m120_pair_grounding(con: duckdb.DuckDBPyConnection) -> None:
    # How well a model-written answer is supported by its source span (ingest's ``model`` generator keeps
    # a pair only above a threshold and records the score; scoring.grounding). NULL for pairs
    # whose response is the span itself, for imports, and for every pair stored before this column.
    con.execute("ALTER TABLE pairs ADD COLUMN grounding DOUBLE")


@migration
def m130_revision_tools(con: duckdb.DuckDBPyConnection) -> None:
    # The function definitions a tool-calling conversation offers (a JSON list, OpenAI form), part of
    # the revision's content like its messages; NULL for pairs without tools (issue 17).
    con.execute("ALTER TABLE pair_revisions ADD COLUMN tools JSON")


@migration
def m140_prediction_label_scores(con: duckdb.DuckDBPyConnection) -> None:
    # A label task predicted within its label set (``predict --decode labels``, training/label_scoring.py):
    # the chosen label's summed log-probability and its lead over the runner-up. NULL for generated answers.
    con.execute("ALTER TABLE predictions ADD COLUMN label_logprob DOUBLE")
    con.execute("ALTER TABLE predictions ADD COLUMN label_margin DOUBLE")


@migration
def m150_benchmark_results(con: duckdb.DuckDBPyConnection) -> None:
    # Standard benchmarks scored by lm-evaluation-harness on a run's model (issue 18): one row per
    # run, benchmark and metric of one evaluation pass; append-only (a new pass is new rows).
    # ``n`` questions scored; ``limit`` the --limit asked (NULL: the whole set); ``stderr`` is the
    # harness's standard error of the mean (NULL when it reports none).
    con.execute("""
        CREATE TABLE benchmark_results (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            benchmark VARCHAR NOT NULL,        -- mmlu, arc_challenge, hellaswag, truthfulqa_mc2
            task VARCHAR NOT NULL,             -- the harness task or group it was scored as
            metric VARCHAR NOT NULL,           -- acc, acc_norm
            value DOUBLE NOT NULL,
            stderr DOUBLE,
            n INTEGER NOT NULL,
            "limit" INTEGER,
            num_fewshot INTEGER NOT NULL,
            harness_version VARCHAR NOT NULL,
            seconds DOUBLE NOT NULL,           -- harness wall time of the whole benchmark
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("CREATE INDEX benchmark_results_run ON benchmark_results (run_id, benchmark)")



@migration
def m170_judge_scores(con: duckdb.DuckDBPyConnection) -> None:
    # An LLM judge's rubric scores (issue 18): one row per judged text, criterion and judging pass;
    # append-only, the latest row per (target, judge, rubric, criterion) counts. ``target_kind``:
    # "prediction" (a run's answer; target_id = predictions.id) or "revision" (a pair's response;
    # target_id = pair_revisions.id). ``score`` 1-5, NULL when the judge's reply could not be read.
    con.execute("""
        CREATE TABLE judge_scores (
            id VARCHAR PRIMARY KEY,
            target_kind VARCHAR NOT NULL,
            target_id VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            judge VARCHAR NOT NULL,            -- the judging model (backend name)
            rubric VARCHAR NOT NULL,           -- rubric version: name + hash of the prompt
            criterion VARCHAR NOT NULL,        -- correct, faithful, complete, concise
            score INTEGER,
            reason VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            author VARCHAR NOT NULL DEFAULT ''
        )""")
    con.execute("CREATE INDEX judge_scores_target ON judge_scores (target_id)")

@migration
def m160_ab_votes(con: duckdb.DuckDBPyConnection) -> None:
    # Blind A/B votes of people on two runs' answers to one prompt (issue 18): append-only; a
    # reviewer voting again on the same item adds a row and the newest (highest seq) per (author,
    # prediction_a, prediction_b) counts. run_a < run_b (canonical order), ``choice`` and ``left``
    # are in those canonical terms, not the screen's. ``preference_pair_id``: the preference pair
    # a vote with a winner wrote (NULL for tie / both_bad).
    con.execute("""
        CREATE TABLE ab_votes (
            id VARCHAR PRIMARY KEY,
            seq BIGINT NOT NULL,               -- order of the votes: the latest per author and item counts
            run_a VARCHAR NOT NULL,
            run_b VARCHAR NOT NULL,
            pair_id VARCHAR NOT NULL,
            prediction_a VARCHAR NOT NULL,     -- run_a's answer
            prediction_b VARCHAR NOT NULL,     -- run_b's answer
            "left" VARCHAR NOT NULL,           -- a, b: whose answer was shown first ("Answer 1")
            choice VARCHAR NOT NULL,           -- a, b, tie, both_bad
            reason VARCHAR NOT NULL DEFAULT '',
            preference_pair_id VARCHAR,
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("CREATE INDEX ab_votes_runs ON ab_votes (run_a, run_b, author)")


@migration
def m180_pair_head_tags(con: duckdb.DuckDBPyConnection) -> None:
    # The head revision's tags beside the pair, written in the same statement that moves
    # ``head_revision_id`` (store.pairs): a tag filter then reads ``pairs`` alone instead of every
    # revision's tag list and a join on revision ids (Explore at 10M pairs, issue 19).
    # Filled by copying the table, in its row order, with its constraints and indexes: an UPDATE of
    # list values rewrites row by row (62 s at 1M pairs, 12 min at 10M); the copy took 1.9 s at 1M.
    ddl = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'pairs' AND schema_name = 'main'").fetchone()
    indexes = con.execute("SELECT index_name, sql FROM duckdb_indexes() WHERE table_name = 'pairs' "
                          "AND schema_name = 'main'").fetchall()
    assert ddl is not None
    n = con.execute("SELECT count(*) FROM pairs").fetchone()
    con.execute("""CREATE TEMP TABLE _pairs_m180 AS
                   SELECT p.*, coalesce(r.tags, []::VARCHAR[]) AS head_tags, p.rowid AS _row
                   FROM pairs p LEFT JOIN pair_revisions r ON r.id = p.head_revision_id""")
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')
    con.execute("DROP TABLE pairs")
    con.execute(ddl[0])
    con.execute("ALTER TABLE pairs ADD COLUMN head_tags VARCHAR[] DEFAULT []")
    con.execute("INSERT INTO pairs SELECT * EXCLUDE (_row) FROM _pairs_m180 ORDER BY _row")
    con.execute("DROP TABLE _pairs_m180")
    for _, sql in indexes:
        con.execute(sql)
    if con.execute("SELECT count(*) FROM pairs").fetchone() != n:  # inside the migration's transaction
        raise RuntimeError("m180_pair_head_tags: the copy of pairs lost rows; nothing was changed")


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]


def migrate(con: duckdb.DuckDBPyConnection, upto: str | None = None) -> list[str]:
    """Apply pending migrations in order (up to and including ``upto``); return their names."""
    done = set(applied(con))
    ran: list[str] = []
    for name, fn in sorted(MIGRATIONS, key=lambda m: m[0]):
        if name not in done:
            with atomic(con):
                fn(con)
                con.execute(
                    "INSERT INTO _migrations VALUES (?, ?)", [name, datetime.now(UTC).replace(tzinfo=None)]
                )
            ran.append(name)
        if upto is not None and name == upto:
            break
    return ran


def schema(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str]]:
    """(table, column, type, nullable) for every user table, in a stable order."""
    return [
        tuple(r)
        for r in con.execute(
            """SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
               WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"""
        ).fetchall()
    ]
