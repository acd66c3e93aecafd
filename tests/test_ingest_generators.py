"""Chunking and the pair generators on crafted documents (pure functions, exact outputs)."""

from __future__ import annotations

import pytest

from ingest.chunking import ChunkConfig, chunk_document
from ingest.elements import build_document, sections
from ingest.generators import Generator, Source, available, create, register
from ingest.partition import partition_file
from tests.test_ingest_files import make


def doc_from(items: list[tuple[str, str]], **meta):
    """Raw elements (type, text); a Title is the parent of what follows it."""
    raw, parent = [], None
    for i, (typ, text) in enumerate(items):
        el = {"type": typ, "text": text, "uid": f"u{i}", "parent_uid": None if typ == "Title" else parent,
              "page": meta.get("page"), "metadata": meta.get("metadata", {}).get(i, {})}
        if typ == "Title":
            parent = f"u{i}"
        raw.append(el)
    return build_document(raw, document_id="d_test", uri="kb/test.md", name="test.md", filetype="md",
                          size_bytes=100)


def source(items, cfg: ChunkConfig | None = None, **meta) -> Source:
    doc, els = doc_from(items, **meta)
    return Source(doc, els, chunk_document(doc, els, cfg))


HANDBOOK = [
    ("Title", "Employee Handbook"),
    ("NarrativeText", "This handbook describes how we work at Larkspur Labs."),
    ("Title", "Vacation"),
    ("NarrativeText", "New employees get 22 vacation days per calendar year."),
    ("ListItem", "Days are pro-rated in the first year."),
    ("Title", "Remote work"),
    ("NarrativeText", "Employees may work remotely up to three days a week."),
]


# ------------------------------------------------------------------ chunking

def test_chunks_follow_sections_and_keep_element_ids():
    s = source(HANDBOOK, ChunkConfig(max_chars=200, min_chars=0))
    assert [(c.title, len(c.element_ids)) for c in s.chunks] == [
        ("Employee Handbook", 2), ("Vacation", 3), ("Remote work", 2)]
    for c in s.chunks:
        assert s.document.text[c.char_start:c.char_end] == c.text
        assert c.element_ids[0] in {e.id for e in s.elements}


def test_small_sections_merge_up_to_max():
    s = source(HANDBOOK, ChunkConfig(max_chars=1000, min_chars=500))
    assert len(s.chunks) == 1
    assert s.chunks[0].text == s.document.text
    assert len(s.chunks[0].element_ids) == len(s.elements)


def test_long_element_is_cut_at_sentences_within_bounds():
    long = " ".join(f"Sentence number {i} is about the Cobalt sensor." for i in range(40))
    s = source([("Title", "Long"), ("NarrativeText", long)], ChunkConfig(max_chars=300, min_chars=0))
    body = [c for c in s.chunks if c.title == "Long" and c.element_ids == [s.elements[1].id]]
    assert len(body) >= 6
    assert all(len(c.text) <= 300 for c in s.chunks)
    assert all(c.text.endswith(".") for c in body)
    assert all(s.document.text[c.char_start:c.char_end] == c.text for c in s.chunks)
    # the pieces cover the element with only whitespace between them
    joined = " ".join(c.text for c in body)
    assert joined == long


def test_chunk_config_rejects_nonsense():
    with pytest.raises(ValueError):
        ChunkConfig(max_chars=10)
    with pytest.raises(ValueError):
        ChunkConfig(max_chars=100, min_chars=200)


def test_sections_paths():
    _, els = doc_from(HANDBOOK)
    secs = sections(els)
    assert [s.heading.text for s in secs] == ["Employee Handbook", "Vacation", "Remote work"]
    assert [len(s.body) for s in secs] == [1, 2, 1]


# ------------------------------------------------------------------ sections generator

def test_sections_pairs_exact_with_verbatim_spans():
    s = source(HANDBOOK)
    pairs = list(create("sections").generate(s))
    assert [(p.content.instruction, p.content.response) for p in pairs] == [
        ("What is the Employee Handbook about?", "This handbook describes how we work at Larkspur Labs."),
        ("What does the Employee Handbook say about Vacation?",
         "New employees get 22 vacation days per calendar year.\n\nDays are pro-rated in the first year."),
        ("What does the Employee Handbook say about Remote work?",
         "Employees may work remotely up to three days a week."),
    ]
    for p in pairs:
        pv = p.provenance
        assert s.document.text[pv.char_start:pv.char_end] == p.content.response
        assert pv.generator == "sections" and pv.generator_version == "2"
        assert pv.document_id == "d_test" and pv.source_uri == "kb/test.md"
    assert pairs[1].provenance.element_ids == [e.id for e in s.elements[2:5]]


def test_sections_templates_are_configurable():
    gen = create("sections", {"templates": "Tell me about {heading} ({doc_title}).", "min_chars": "0"})
    pairs = list(gen.generate(source(HANDBOOK)))
    assert pairs[1].content.instruction == "Tell me about Vacation (Employee Handbook)."


def test_unknown_generator_option_is_rejected():
    with pytest.raises(ValueError, match="unknown option"):
        create("sections", {"tempaltes": "x"})
    with pytest.raises(ValueError, match="unknown generator"):
        create("nope")


# ------------------------------------------------------------------ qa generator

def qa_pairs(s: Source):
    pairs = list(create("qa").generate(s))
    for p in pairs:
        pv = p.provenance
        assert s.document.text[pv.char_start:pv.char_end] == p.content.response, p
        assert pv.generator == "qa"
    return [(p.content.instruction, p.content.response) for p in pairs]


def test_qa_faq_headings_and_question_lines():
    s = source([
        ("Title", "FAQ"),
        ("Title", "How do I reset the sensor?"),
        ("NarrativeText", "Hold the power button for ten seconds."),
        ("NarrativeText", "The light blinks blue when it is done."),
        ("Title", "Shipping"),
        ("NarrativeText", "Where do orders ship from?"),
        ("NarrativeText", "From our Lisbon warehouse."),
        ("NarrativeText", "Orders placed before noon ship the same day."),
        ("NarrativeText", "This closing remark is not a question."),
    ])
    assert qa_pairs(s) == [
        ("How do I reset the sensor?",
         "Hold the power button for ten seconds.\n\nThe light blinks blue when it is done."),
        ("Where do orders ship from?",
         "From our Lisbon warehouse.\n\nOrders placed before noon ship the same day.\n\n"
         "This closing remark is not a question."),
    ]


def test_qa_prefixed_lines_inline_and_split():
    s = source([
        ("NarrativeText", "Q: What is the warranty? A: Two years from delivery."),
        ("NarrativeText", "Question: Who approves travel?"),
        ("NarrativeText", "Answer: The department head."),
        ("NarrativeText", "Q. Is there a mobile app?\nA: Yes, for iOS and Android."),
    ])
    assert qa_pairs(s) == [
        ("What is the warranty?", "Two years from delivery."),
        ("Who approves travel?", "The department head."),
        ("Is there a mobile app?", "Yes, for iOS and Android."),
    ]


def test_qa_definition_list_and_table():
    html = ("<table><tr><th>Question</th><th>Answer</th></tr>"
            "<tr><td>What is Cobalt?</td><td>An environmental sensor.</td></tr>"
            "<tr><td>Where is the warehouse?</td><td>Lisbon.</td></tr></table>")
    items = [
        ("Title", "Glossary"),
        ("UncategorizedText", "Cobalt"),
        ("ListItem", "Our environmental sensor."),
        ("UncategorizedText", "Hub"),
        ("ListItem", "The gateway that uploads sensor readings."),
        ("Table", "Question Answer What is Cobalt? An environmental sensor. Where is the warehouse? Lisbon."),
    ]
    s = source(items, metadata={5: {"text_as_html": html}})
    assert qa_pairs(s) == [
        ("What is Cobalt?", "Our environmental sensor."),
        ("What is Hub?", "The gateway that uploads sensor readings."),
        ("What is Cobalt?", "An environmental sensor."),
        ("Where is the warehouse?", "Lisbon."),
    ]


def test_qa_ignores_plain_prose():
    assert qa_pairs(source(HANDBOOK)) == []
    # a paragraph that ends with a question (unstructured's fake-html.html) is no question line;
    # a numbered or "Q." question is one
    assert qa_pairs(source([
        ("NarrativeText", "My first paragraph. lorem ipsum dolor. if the cow comes home how do you fault the cow?"),
        ("ListItem", "A test list"),
        ("NarrativeText", "3. Can I return a sensor?"),
        ("NarrativeText", "Yes, within thirty days of delivery."),
        ("NarrativeText", "Q. Does the hub need Wi-Fi?"),
        ("NarrativeText", "It needs Wi-Fi or Ethernet."),
    ])) == [("3. Can I return a sensor?", "Yes, within thirty days of delivery."),
            ("Q. Does the hub need Wi-Fi?", "It needs Wi-Fi or Ethernet.")]


def test_qa_on_a_real_html_faq(tmp_path):
    path = make(tmp_path, "html")
    parsed = partition_file(path)
    doc, els = build_document(parsed.elements, document_id="d_faq", uri=path.name, name=path.name,
                              filetype="html", size_bytes=1)
    s = Source(doc, els, chunk_document(doc, els))
    assert qa_pairs(s) == [
        ("How do I reset the sensor?", "Hold the power button for ten seconds until the light blinks blue."),
        ("Can I mount it outdoors?", "No. The Cobalt sensor is rated for indoor use only."),
    ]


# ------------------------------------------------------------------ pluggable interface

def test_a_user_generator_in_a_few_lines():
    @register
    class FirstChunk(Generator):
        name = "first-chunk-test"
        version = "7"

        def generate(self, source):
            ch = source.chunks[0]
            yield self.pair(source, f"Summarise {ch.title}.", ch.text, span=(ch.char_start, ch.char_end),
                            element_ids=ch.element_ids, page=ch.page_start)

    assert "first-chunk-test" in available()
    (p,) = list(create("first-chunk-test").generate(source(HANDBOOK, ChunkConfig(200, 0))))
    assert p.content.instruction == "Summarise Employee Handbook."
    assert (p.provenance.generator, p.provenance.generator_version) == ("first-chunk-test", "7")


def test_paragraph_windows_skip_lone_numbers():
    """A figure's callout numbers before the text (unstructured's embedded-images.pdf: "3", "5", "4",
    then "Hands-free unlocking...") open no passage; the passage is the text, quoted from its words."""
    s = source([("UncategorizedText", "3"), ("UncategorizedText", "5"), ("UncategorizedText", "$1,200"),
                ("NarrativeText", "Hands-free unlocking works when you approach the vehicle with the card in "
                                  "access zone three; the car unlocks and the lights flash once."),
                ("UncategorizedText", "4")])
    pairs = list(create("paragraphs").generate(s))
    assert [p.content.response for p in pairs] == [s.elements[3].text]
    assert all('begins "Hands-free unlocking works' in p.content.instruction for p in pairs)
