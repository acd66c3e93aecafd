"""Migrations: ordered, recorded, idempotent; fresh and step-by-step databases match."""

from __future__ import annotations

from pathlib import Path

import duckdb

from store.db import Project
from store.migrations import MIGRATIONS, applied, migrate, schema

SNAPSHOT = Path(__file__).parent / "data" / "schema.txt"


def dump(con) -> str:
    return "\n".join("\t".join(map(str, row)) for row in schema(con)) + "\n"


def test_fresh_schema_matches_snapshot(tmp_path):
    p = Project(tmp_path / "p").init()
    with p.connect() as con:
        got = dump(con)
    # Regenerate deliberately after adding a migration:
    #   python -c "from tests.test_store_migrations import write_snapshot; write_snapshot()"
    assert got == SNAPSHOT.read_text(), "schema changed: add a migration and regenerate tests/data/schema.txt"


def write_snapshot() -> None:
    import tempfile

    p = Project(Path(tempfile.mkdtemp()) / "p").init()
    with p.connect() as con:
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(dump(con))


def test_migrating_twice_is_noop(tmp_path):
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    first = migrate(con)
    before = dump(con)
    assert migrate(con) == []
    assert dump(con) == before
    assert applied(con) == sorted(name for name, _ in MIGRATIONS)
    assert first == sorted(name for name, _ in MIGRATIONS)


def test_step_by_step_equals_fresh(tmp_path):
    names = sorted(name for name, _ in MIGRATIONS)
    fresh = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    migrate(fresh)
    for i, upto in enumerate(names[:-1]):
        old = duckdb.connect(str(tmp_path / f"old{i}.duckdb"))
        migrate(old, upto=upto)
        assert applied(old) == names[: i + 1]
        migrate(old)  # an old database brought up to date
        assert dump(old) == dump(fresh)
        old.close()


def test_open_project_migrates_an_old_database(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    con = duckdb.connect(str(root / "tuneloop.duckdb"))
    migrate(con, upto=sorted(n for n, _ in MIGRATIONS)[0])
    con.close()
    from store.db import open_project

    p = open_project(root)
    with p.connect() as c:
        assert applied(c) == sorted(name for name, _ in MIGRATIONS)
