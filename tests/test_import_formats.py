"""Import formats and results: self-instruct seed tasks, plain ok/partial/failed summaries,
and mojibake repair on import (``--fix-text``), on real files and real project databases."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.datasets import detect_format
from ingest.importer import import_file
from store import pairs
from store.db import Project
from store.ids import pair_content, pair_id

REPO = Path(__file__).resolve().parents[1]

# Look-alikes of yizhongw/self-instruct data/seed_tasks.jsonl records.
SEEDS = [
    {"id": "seed_task_0", "name": "breakfast_suggestion",
     "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
     "instances": [{"input": "", "output": "Yes, oatmeal with peanut butter."}], "is_classification": False},
    {"id": "seed_task_1", "name": "antonym_relation", "instruction": "What is the relation between the given pairs?",
     "instances": [{"input": "Night : Day :: Right : Left", "output": "They are opposites."},
                   {"input": "Hot : Cold :: Up : Down", "output": "Opposites again."}], "is_classification": False},
    {"id": "seed_task_2", "name": "sentiment", "instruction": "Classify the sentiment of the sentence.",
     "instances": [{"input": "I loved it.", "output": "Positive"}], "is_classification": True},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def stored(project: Project) -> list[dict]:
    with project.connect() as con:
        return sorted(pairs.frame(con).to_dicts(), key=lambda r: (r["source_line"] or 0, r["input"]))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneloop.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- self-instruct


@pytest.mark.parametrize("rec,fmt", [
    (SEEDS[0], "self-instruct"),
    ({"instruction": "Say hi.", "input": "", "output": "hi"}, "alpaca"),
    ({"instruction": "Say hi.", "instances": [], "output": "hi"}, "alpaca"),  # an output decides: alpaca
    ({"instruction": "Say hi.", "instances": "not a list"}, "self-instruct"),  # then named as bad instances
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}, "sharegpt"),
    ({"prompt": "hi", "completion": "hello"}, "prompt-completion"),
])
def test_detect_format(tmp_path, rec, fmt):
    assert detect_format(write_jsonl(tmp_path / "d.jsonl", [rec])) == fmt


def test_self_instruct_one_pair_per_instance_with_provenance_and_tags(project, tmp_path):
    f = write_jsonl(tmp_path / "seed_tasks.jsonl", SEEDS)
    r = import_file(project, f)
    assert (r.format, r.rows, r.new, r.skipped, r.status, r.problem) == ("self-instruct", 4, 4, 0, "ok", None)
    with project.connect() as con:
        made = sorted(pairs.query(con), key=lambda p: (p.provenance.source_line or 0, p.input))
    got = [(p.instruction[:20], p.input, p.response, p.tags, p.provenance.source_line, p.provenance.element_ids,
            p.provenance.generator) for p in made]
    assert got == [
        ("Is there anything I ", "", "Yes, oatmeal with peanut butter.", [], 1,
         ["id=seed_task_0", "name=breakfast_suggestion", "instances[0]"], "import:self-instruct"),
        ("What is the relation", "Hot : Cold :: Up : Down", "Opposites again.", [], 2,
         ["id=seed_task_1", "name=antonym_relation", "instances[1]"], "import:self-instruct"),
        ("What is the relation", "Night : Day :: Right : Left", "They are opposites.", [], 2,
         ["id=seed_task_1", "name=antonym_relation", "instances[0]"], "import:self-instruct"),
        ("Classify the sentime", "I loved it.", "Positive", ["classification"], 3,
         ["id=seed_task_2", "name=sentiment", "instances[0]"], "import:self-instruct"),
    ]
    again = import_file(project, f)  # content-addressed: a re-import adds nothing
    assert (again.new, again.existing, again.status) == (0, 4, "ok")


def test_self_instruct_malformed_instances_are_named_and_the_rest_lands(project, tmp_path):
    rows = [
        SEEDS[0],
        {"id": "t1", "name": "x", "instruction": "Add.", "is_classification": False,
         "instances": [{"input": "1+1", "output": "2"}, {"input": "2+2"}, "3+3", {"input": 5, "output": "5"}]},
        {"id": "t2", "name": "y", "instruction": "Empty.", "instances": []},
        {"id": "t3", "name": "z", "instruction": "Flag.", "instances": [{"input": "", "output": "a"}],
         "is_classification": "yes"},
    ]
    r = import_file(project, write_jsonl(tmp_path / "seeds.jsonl", rows))
    assert (r.rows, r.new, r.skipped, r.status) == (7, 2, 5, "partial")
    assert [(e.line, e.field) for e in r.errors] == [
        (2, "instances[1].output"), (2, "instances[2]"), (2, "instances[3].input"), (3, "instances"),
        (4, "is_classification")]
    assert r.errors[0].message == "seeds.jsonl:2: field 'instances[1].output': missing; expected a string (the answer)"
    assert r.errors[1].message.startswith("seeds.jsonl:2: field 'instances[2]': is str; expected an object")
    assert {p["response"] for p in stored(project)} == {"Yes, oatmeal with peanut butter.", "2"}


# ---------------------------------------------------------------- ok / partial / failed


def test_nothing_landed_is_failed_with_first_errors_and_what_to_do(project, tmp_path):
    f = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    r = import_file(project, f, "alpaca")  # the wrong format: every record lacks 'output'
    assert (r.rows, r.new, r.existing, r.skipped, r.fatal) == (3, 0, 0, 3, None)
    assert r.status == "failed"
    assert r.problem is not None
    assert r.problem.startswith(f"{f}: none of its 3 row(s) could be imported as alpaca; first errors: "
                                f"seeds.jsonl:1: field 'output': missing")
    assert "--format (" in r.problem and "self-instruct" in r.problem
    assert stored(project) == []


def test_status_ok_partial_and_a_file_of_known_rows_is_ok(project, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"instruction": "a", "output": "b"}])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"instruction": "c", "output": "d"}, {"instruction": 1}])
    assert import_file(project, good).status == "ok"
    r = import_file(project, mixed)
    assert (r.status, r.problem, r.ok) == ("partial", None, False)
    r = import_file(project, good)  # nothing new, but every row is a pair of the project: not a failure
    assert (r.new, r.existing, r.status) == (0, 1, "ok")
    assert import_file(project, tmp_path / "missing.jsonl").status == "failed"


def test_cli_result_column_and_exit_codes(tmp_path):
    proj = str(tmp_path / "p")
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"instruction": "c", "output": "d"}, {"instruction": 1}])
    r = cli("import", str(seeds), "--format", "alpaca", "--project", proj)
    assert r.returncode == 1
    assert "failed" in r.stdout and "partial" not in r.stdout
    assert "1 of 1 file(s) could not be imported" in r.stderr and "none of its 3 row(s)" in r.stderr
    r = cli("import", str(mixed), "--project", proj)
    assert r.returncode == 1 and "partial" in r.stdout and "mixed.jsonl:2: field 'instruction'" in r.stderr
    assert "could not be imported" not in r.stderr
    r = cli("import", str(seeds), "--project", proj)
    assert r.returncode == 0, r.stderr
    assert "self-instruct" in r.stdout and " ok " in r.stdout


# ---------------------------------------------------------------- mojibake repair


BROKEN = {"instruction": "Order a cafÃ© au lait.", "input": "", "output": "Itâ€™s 3 â‚¬."}
CLEAN = {"instruction": "Order a café au lait.", "input": "", "output": "It’s 3 €."}


def history(project: Project, pid: str) -> list[tuple[int, str, str, str]]:
    with project.connect() as con:
        return [(h.revision_no, h.author, h.instruction, h.response) for h in pairs.history(con, pid)]


def test_fix_text_keeps_the_original_as_revision_one_and_the_repair_as_two(project, tmp_path):
    f = write_jsonl(tmp_path / "broken.jsonl", [BROKEN, {"instruction": "Plain.", "output": "Fine."}])
    r = import_file(project, f, fix_text=True, author="alice")
    assert (r.new, r.repaired, r.status) == (2, 1, "ok")
    pid = pair_id(pair_content(CLEAN["instruction"], "", CLEAN["output"]))  # keyed by the repaired text
    assert sorted(history(project, pid)) == [
        (1, "alice", BROKEN["instruction"], BROKEN["output"]),
        (2, "ftfy", CLEAN["instruction"], CLEAN["output"]),
    ]
    with project.connect() as con:
        head = pairs.get(con, pid)
        plain = pairs.get(con, pair_id(pair_content("Plain.", "", "Fine.")))
    assert (head.instruction, head.response, head.status) == (CLEAN["instruction"], CLEAN["output"], "pending")
    assert len(history(project, plain.id)) == 1  # clean text: no second revision
    again = import_file(project, f, fix_text=True)  # same file again: a no-op, no third revision
    assert (again.new, again.existing, again.repaired) == (0, 2, 0)
    assert len(history(project, pid)) == 2


def test_the_bulk_repair_records_what_append_revision_records(project, template_project, tmp_path):
    """``append_followups`` (the importer's set-based second revision) and ``append_revision``
    (one edit) give the same history, head, version and review for the same repair."""
    import shutil

    from ingest.mojibake import REPAIR_AUTHOR, REPAIR_REASON, repair_content

    original = pair_content(BROKEN["instruction"], "", BROKEN["output"])
    fixed = repair_content(original)
    row = pairs.batch_row(original, tags=["t"], author="alice", key=fixed)
    follow = {**pairs.batch_row(fixed, tags=["t"], author=REPAIR_AUTHOR, key=fixed), "revision_id": row["revision_id"]}
    shutil.copytree(template_project, tmp_path / "other")
    seen = []
    for i, proj in enumerate([project, Project(tmp_path / "other")]):
        with proj.transaction() as con:
            pairs.insert_rows(con, pairs.rows_to_arrow([row]))
            if i == 0:
                assert pairs.append_followups(con, pairs.rows_to_arrow([follow, follow]), author=REPAIR_AUTHOR,
                                              reason=REPAIR_REASON) == 1
            else:
                pairs.append_revision(con, row["pair_id"], author=REPAIR_AUTHOR, base_revision_id=row["revision_id"],
                                      reason=REPAIR_REASON, instruction=fixed["instruction"], response=fixed["response"])
            assert pairs.append_followups(con, pairs.rows_to_arrow([follow]), author="x", reason="") == 0  # moved on
        with proj.connect() as con:
            pair = pairs.get(con, row["pair_id"])
            seen.append((
                [h.model_dump(exclude={"created_at"}) for h in pairs.history(con, row["pair_id"])],
                (pair.head_revision_id, pair.version, pair.status, pair.instruction, pair.tags, pair.updated_by),
                [(v.revision_id, v.status, v.previous_status, v.author, v.comment) for v in pairs.reviews(con, pair.id)],
            ))
    assert seen[0] == seen[1]
    assert seen[0][1][1:] == (2, "pending", CLEAN["instruction"], ["t"], "ftfy")


def test_text_differing_only_by_mojibake_is_not_a_new_pair_with_fix_text(project, tmp_path):
    assert import_file(project, write_jsonl(tmp_path / "clean.jsonl", [CLEAN])).new == 1
    broken = write_jsonl(tmp_path / "broken.jsonl", [BROKEN])
    r = import_file(project, broken, fix_text=True)
    assert (r.new, r.existing, r.in_project, r.repaired, r.status) == (0, 1, 1, 0, "ok")
    assert len(stored(project)) == 1
    pid = stored(project)[0]["pair_id"]
    assert history(project, pid) == [(1, "import", CLEAN["instruction"], CLEAN["output"])]  # left as it was
    assert import_file(project, broken).new == 1  # the option is off by default: a new pair


def test_fix_text_collapses_a_broken_and_a_clean_row_of_one_file(project, tmp_path):
    f = write_jsonl(tmp_path / "both.jsonl", [BROKEN, CLEAN])
    r = import_file(project, f, fix_text=True)
    assert (r.rows, r.new, r.repeats, r.repaired) == (2, 1, 1, 1)
    [p] = stored(project)
    assert (p["instruction"], p["response"], p["source_line"]) == (CLEAN["instruction"], CLEAN["output"], 1)


def test_cli_fix_text_reports_repairs(tmp_path):
    proj = str(tmp_path / "p")
    f = write_jsonl(tmp_path / "broken.jsonl", [BROKEN])
    r = cli("import", str(f), "--fix-text", "--project", proj)
    assert r.returncode == 0, r.stderr
    assert "repaired mojibake in 1 new pair(s)" in " ".join(r.stdout.split())
    with Project(Path(proj)).connect() as con:
        [p] = pairs.query(con)
        revs = pairs.history(con, p.id)
    assert (p.instruction, p.version) == (CLEAN["instruction"], 2)
    revs = sorted(revs, key=lambda h: h.revision_no)
    assert [(h.revision_no, h.instruction) for h in revs] == [(1, BROKEN["instruction"]), (2, CLEAN["instruction"])]
    assert revs[1].author == "ftfy" and revs[1].reason.startswith("mojibake repaired on import")


# ---------------------------------------------------------------- the Ingest page


def test_ingest_page_imports_a_dataset_with_the_repair_box_in_a_background_job(project, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import jobs

    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/ingest.py")
    at.run()
    lines = [BROKEN, *SEEDS[:1]]
    at.file_uploader(key="imp_files").set_value([
        ("seeds.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode(), "application/json")])
    at.selectbox(key="imp_format").set_value("detect")
    at.checkbox(key="imp_fix").check()
    at.button(key="imp_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = jobs.recent(project, kind="import")[0]
    deadline = time.monotonic() + 120
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == "failed", job.log()  # the Alpaca row is not a self-instruct record: partial
    [res] = job.result()
    assert (res["format"], res["result"], res["new"], res["skipped"]) == ("alpaca", "partial", 1, 1)
    assert res["repaired"] == 1 and job.author == "tester"
    with project.connect() as con:
        [p] = pairs.query(con)
        assert [h.author for h in sorted(pairs.history(con, p.id), key=lambda h: h.revision_no)] == ["tester", "ftfy"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("partial" in str(df.value) for df in at.dataframe)
