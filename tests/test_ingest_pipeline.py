"""Files -> documents, elements, chunks and pairs in a real project database."""

from __future__ import annotations

import zipfile

from ingest.documents import IngestConfig, ingest
from store import documents as docs_store
from store.db import frame, scalar
from tests.test_ingest_files import MD, make

# qa first: when two generators make the same pair (a question heading), the first one keeps it.
CFG = IngestConfig(generators=("qa", "sections"), workers=0)


def counts(project) -> dict[str, int]:
    with project.connect() as con:
        return {t: scalar(con, f"SELECT count(*) FROM {t}")
                for t in ("documents", "elements", "chunks", "pairs", "pair_revisions")}


def test_folder_to_pairs_with_provenance(project, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    make(kb, "md", "guide")
    make(kb, "html", "faq")
    (kb / ".hidden.md").write_text("# skipped\n\nhidden files are ignored\n")
    report = ingest(project, [kb], CFG)
    assert report.ok, [f.error for f in report.files]
    assert sorted((f.uri, f.status) for f in report.files) == [("kb/faq.html", "new"), ("kb/guide.md", "new")]
    with project.connect() as con:
        pairs = frame(con, """SELECT r.instruction, r.response, p.document_id, p.char_start, p.char_end,
                                     p.generator, p.generator_version, p.source_uri, p.element_ids, d.text
                              FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                              JOIN documents d ON d.id = p.document_id ORDER BY p.source_uri, p.char_start""")
        faq = docs_store.find(con, "kb/faq.html")
        els = docs_store.elements(con, faq.id)
    got = {(r["generator"], r["instruction"]) for r in pairs.iter_rows(named=True)}
    assert ("sections", "What does the Cobalt Quick Guide say about Battery?") in got
    assert ("qa", "How do I reset the sensor?") in got
    assert ("sections", "How do I reset the sensor?") not in got
    for r in pairs.iter_rows(named=True):
        # the response is found verbatim at its recorded span of the stored document text
        assert r["text"][r["char_start"]:r["char_end"]] == r["response"]
        assert r["generator_version"] == ("1" if r["generator"] == "qa" else "2")
        assert r["source_uri"].startswith("kb/")
        assert r["element_ids"]
    assert faq.title == "Cobalt FAQ"
    assert [e.type for e in els] == ["Title", "Title", "NarrativeText", "Title", "NarrativeText"]
    assert all(faq.text[e.char_start:e.char_end] == e.text for e in els)


def test_reingest_is_a_noop(project, tmp_path):
    path = make(tmp_path, "md", "guide")
    first = ingest(project, [path], CFG)
    before = counts(project)
    assert first.files[0].status == "new" and first.pairs_new > 0
    again = ingest(project, [path], CFG)
    assert counts(project) == before
    assert again.files[0].status == "unchanged"
    assert again.pairs_new == 0 and again.files[0].pairs_total == first.files[0].pairs_total


def test_new_generator_on_a_stored_document_adds_only_its_pairs(project, tmp_path):
    path = make(tmp_path, "html", "faq")
    ingest(project, [path], IngestConfig(generators=("sections",), workers=0))
    before = counts(project)
    r = ingest(project, [path], IngestConfig(generators=("qa",), workers=0)).files[0]
    after = counts(project)
    assert r.status == "unchanged"
    assert after["documents"] == before["documents"] and after["elements"] == before["elements"]
    # the FAQ's qa pairs equal its question-heading sections pairs (same content -> same id)
    assert r.pairs_total == 2 and after["pairs"] == before["pairs"] + r.pairs_new


def test_changed_file_is_a_new_version_and_old_pairs_keep_their_version(project, tmp_path):
    path = tmp_path / "guide.md"
    path.write_text(MD)
    v1 = ingest(project, [path], CFG).files[0]
    path.write_text(MD.replace("every six months", "every three months"))
    v2 = ingest(project, [path], CFG).files[0]
    assert v2.status == "new_version" and v2.document_id != v1.document_id
    with project.connect() as con:
        new = docs_store.get(con, v2.document_id)
        assert new.previous_id == v1.document_id
        assert [d.id for d in docs_store.versions(con, "guide.md")] == [v1.document_id, v2.document_id]
        old_pairs = docs_store.pairs_frame(con, v1.document_id)
        new_pairs = docs_store.pairs_frame(con, v2.document_id)
    assert any("six months" in r for r in old_pairs["response"])
    assert any("three months" in r for r in new_pairs["response"])
    assert not any("six months" in r for r in new_pairs["response"])


def test_zip_archive_members_and_duplicates(project, tmp_path):
    src = make(tmp_path, "md", "guide")
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(src, "docs/guide.md")
        zf.write(src, "docs/copy-of-guide.md")
        zf.write(make(tmp_path, "docx", "policy"), "policy.docx")
    report = ingest(project, [z], CFG)
    assert report.ok, [f.error for f in report.files]
    assert sorted((f.uri, f.status) for f in report.files) == [
        ("bundle.zip/docs/copy-of-guide.md", "new"),  # members go in name order
        ("bundle.zip/docs/guide.md", "duplicate"),
        ("bundle.zip/policy.docx", "new"),
    ]
    assert counts(project)["documents"] == 2


def test_worker_processes_give_the_same_result(project, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    for ext in ("md", "html", "pdf", "docx"):
        make(kb, ext, f"f{ext}")
    report = ingest(project, [kb], IngestConfig(generators=("sections", "qa"), workers=2))
    assert report.ok, [f.error for f in report.files]
    in_process = ingest(project, [kb], CFG)
    assert [f.status for f in in_process.files] == ["unchanged"] * 4
    assert in_process.pairs_new == 0
    pdf = next(f for f in report.files if f.filetype == "pdf")
    assert pdf.n_pages == 2
