"""The sample project `make run` opens: real documents, pairs with provenance, curation done."""

from __future__ import annotations

from store import pairs, slices
from store.records import SliceFilter
from store.stats import project_stats
from tuneloop.sample import build_sample_project


def test_sample_project_is_ready_to_walk_the_loop(tmp_path):
    p = build_sample_project(tmp_path / "sample")
    with p.connect() as con:
        s = project_stats(con)
        doc_pairs = [x for x in pairs.query(con, SliceFilter(exclude_duplicates=False), limit=500)
                     if x.provenance.document_id]
        texts = dict(con.execute("SELECT id, text FROM documents").fetchall())
        filetypes = {t for (t,) in con.execute("SELECT filetype FROM documents").fetchall()}
        assert slices.get(con, "sample-accepted").n_items >= 5
    assert s["documents"] == 7
    assert filetypes == {"md", "html", "docx", "pdf", "pptx", "eml", "csv"}
    assert s["pairs"] >= 50
    assert s["duplicates_marked"] >= 2  # the seed set carries an exact and a case/space duplicate
    assert s["signals_flagged"].get("empty_response", 0) >= 1  # "N/A"
    # provenance: sections/qa responses are found at their recorded spans
    spanned = [x for x in doc_pairs if x.provenance.generator in ("sections", "qa")]
    assert len(spanned) >= 30
    for x in spanned:
        assert texts[x.provenance.document_id][x.provenance.char_start:x.provenance.char_end] == x.response
    # building again leaves it alone
    again = build_sample_project(tmp_path / "sample")
    with again.connect() as con:
        assert project_stats(con)["pairs"] == s["pairs"]
