"""Exact and near duplicates: planted duplicates are found and nothing else; the store keeps
one member per exact cluster, marks the others (never deletes) and re-running is a no-op."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from analysis import dedupe as dd
from analysis.curate import DedupeConfig, dedupe
from analysis.normalize import normalize_expr
from scoring import normalize_text
from store import curation as cur
from store import pairs as pairs_store
from store.records import NewPair, PairContent, SliceFilter, Status


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,  World!", "hello world"),
        ("  TAB\tand\nnewline ", "tab and newline"),
        ("ﬁle №5", "file no5"),  # NFKC folds ligatures and compatibility characters
        ("résumé", "résumé"),  # accents are kept
        ("a+b=c", "a b c"),
        ("snake_case-word", "snake case word"),
        ("", ""),
        ("2 GB vs 3 GB", "2 gb vs 3 gb"),
    ],
)
def test_normalize_python_and_polars_agree(text, expected):
    assert normalize_text(text) == expected
    assert pl.select(normalize_expr(pl.lit(text))).item() == expected


T0 = dt.datetime(2025, 1, 1)


def frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (pair_id, instruction, input, response, status)."""
    return pl.DataFrame([
        {"pair_id": pid, "revision_id": "r" + pid, "instruction": i, "input": x, "response": r, "status": s,
         "created_at": T0 + dt.timedelta(minutes=n)}
        for n, (pid, i, x, r, s) in enumerate(rows)
    ])


PLANTED = frame([
    ("p_01", "How do I reset my password?", "", "Open settings and choose Reset.", "pending"),
    ("p_02", "how do i reset my PASSWORD", "", "open settings and choose reset", "accepted"),  # case/punct
    ("p_03", "How  do I reset\tmy password ?", "", "Open settings and choose Reset.", "pending"),  # whitespace
    ("p_04", "How do I reset my password?", "", "Call support.", "pending"),  # same prompt only
    ("p_05", "Where is my parcel?", "order 17", "It ships tomorrow.", "pending"),
    ("p_06", "Where is my parcel?", "order 18", "It ships tomorrow.", "pending"),  # input differs
    ("p_07", "Where is my parcel? order 17", "", "It ships tomorrow.", "pending"),  # field boundary differs
    ("p_08", "Translate 'cat' to French", "", "chat", "pending"),
    ("p_09", "", "", "", "pending"),
    ("p_10", "", "", "", "pending"),  # empty keys never cluster
])


def clusters_of(members: pl.DataFrame) -> set[frozenset[str]]:
    return {frozenset(g["pair_id"].to_list()) for _, g in members.group_by("cluster_id")}


def test_exact_full_finds_planted_variants_and_nothing_else():
    m = dd.exact_clusters(PLANTED, "exact_full")
    assert clusters_of(m) == {frozenset({"p_01", "p_02", "p_03"})}
    kept = m.filter("is_kept")
    assert kept["pair_id"].to_list() == ["p_02"]  # the accepted one, although later
    assert set(m["kept_pair_id"]) == {"p_02"}
    assert (m["similarity"] == 1.0).all()


def test_exact_prompt_groups_same_prompt_any_response():
    m = dd.exact_clusters(PLANTED, "exact_prompt")
    assert clusters_of(m) == {frozenset({"p_01", "p_02", "p_03", "p_04"})}


def test_kept_is_earliest_when_none_accepted_and_rejected_is_last():
    df = frame([("p_a", "Q one two", "", "A", "rejected"), ("p_b", "q one two", "", "a", "pending"),
                ("p_c", "Q one two!", "", "A", "pending")])
    m = dd.exact_clusters(df, "exact_full")
    assert m.filter("is_kept")["pair_id"].to_list() == ["p_b"]


def test_to_mark_points_at_a_kept_pair_that_is_never_marked():
    m = pl.concat([dd.exact_clusters(PLANTED, "exact_full"), dd.exact_clusters(PLANTED, "exact_prompt"),
                   dd.conflict_clusters(PLANTED)])
    marks = dd.to_mark(m)
    # p_04 has the same prompt but another answer: a conflict to review, not a duplicate (issue 14)
    assert set(marks["pair_id"]) == {"p_01", "p_03"}
    assert set(marks["duplicate_of"]) == {"p_02"}
    assert not set(marks["duplicate_of"]) & set(marks["pair_id"])


# --------------------------------------------------------------------------- near, lexical

BASE = [
    "the quarterly report shows revenue grew in every region except the northern sales office",
    "please explain how photosynthesis converts sunlight water and carbon dioxide into glucose",
    "write a short poem about the ocean at night with stars reflecting on the calm water",
    "list three reasons why regular exercise improves both physical health and mental wellbeing",
    "describe the main causes of the french revolution and its effect on european politics",
]
PARAPHRASE = [  # one-word edits of BASE: Jaccard of word trigrams well above 0.6
    "the quarterly report shows revenue grew in every region except the northern sales department",
    "please explain how photosynthesis converts sunlight water and carbon dioxide into sugar",
    "write a short poem about the ocean at night with stars reflecting on the calm sea",
    "list three reasons why regular exercise improves both physical health and mental wellness",
    "describe the main causes of the french revolution and its effect on european history",
]
DISTRACTORS = [
    "the quarterly budget shows spending fell in most regions including the southern office",
    "how do plants absorb nitrogen from the soil and why do they need it",
    "compose a haiku about mountains in winter",
    "give two tips for staying focused while studying for long exams at home",
    "summarize the causes of the american civil war",
    "what is the capital of australia",
]


def test_near_lexical_finds_planted_paraphrases_only():
    texts = BASE + PARAPHRASE + DISTRACTORS
    df = frame([(f"p_{i:02d}", t, "", f"answer {i}", "pending") for i, t in enumerate(texts)])
    m = dd.near_lexical_clusters(df, dd.MinHashParams(threshold=0.6))
    expected = {frozenset({f"p_{i:02d}", f"p_{i + 5:02d}"}) for i in range(5)}
    assert clusters_of(m) == expected
    sims = m.filter(~pl.col("is_kept"))["similarity"]
    assert (sims >= 0.6).all() and (sims < 1.0).all()


def test_near_lexical_threshold_is_respected():
    df = frame([(f"p_{i:02d}", t, "", "", "pending") for i, t in enumerate(BASE + PARAPHRASE)])
    assert dd.near_lexical_clusters(df, dd.MinHashParams(threshold=0.99)).height == 0


def test_minhash_estimate_tracks_true_jaccard():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(400)]
    a = list(rng.choice(vocab, 60))
    b = a[:45] + list(rng.choice(vocab, 15))
    texts = pl.Series([" ".join(a), " ".join(b)])
    sig = dd.minhash_signatures(texts, dd.MinHashParams(num_perm=256, ngram=1))

    est = dd.estimated_jaccard(sig, np.array([0]), np.array([1]))[0]
    true = len(set(a) & set(b)) / len(set(a) | set(b))
    assert abs(est - true) < 0.1


def test_semantic_clusters_from_vectors():
    v = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    df = frame([(f"p_{i}", f"t{i}", "", "", "pending") for i in range(4)])
    m = dd.near_semantic_clusters(df, v, threshold=0.95)
    assert clusters_of(m) == {frozenset({"p_0", "p_1"})}
    assert m.filter(~pl.col("is_kept"))["similarity"][0] == pytest.approx(0.99, abs=0.01)


# --------------------------------------------------------------------------- store + job


def add(con, instruction, response, status=Status.pending, input="", document_id=None):
    from store.records import Provenance

    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=instruction, input=input, response=response),
                                               status=status, provenance=Provenance(document_id=document_id))])[0]


def test_dedupe_job_marks_exact_duplicates_and_is_idempotent(project):
    with project.connect() as con:
        a = add(con, "How do I reset my password?", "Open settings.")
        b = add(con, "how do I reset my password", "open settings", status=Status.accepted)
        c = add(con, "HOW DO I RESET MY PASSWORD?!", "Open settings!")
        d = add(con, "Where is my parcel?", "Tomorrow.")
        e = add(con, BASE[0], "x")
        f = add(con, PARAPHRASE[0], "y")
    r1 = dedupe(project, DedupeConfig(near=True, near_threshold=0.6), author="tester")
    assert r1["exact_full"] == {"clusters": 1, "members": 3, "duplicates": 2}
    assert r1["marked_now"] == 2
    assert r1["near_lexical"]["clusters"] == 1
    with project.connect() as con:
        pa_, pb, pc, pd = (pairs_store.get(con, x) for x in (a, b, c, d))
        assert (pa_.status, pa_.duplicate_of) == (Status.duplicate, b)
        assert (pc.status, pc.duplicate_of) == (Status.duplicate, b)
        assert pb.status == Status.accepted and pb.duplicate_of is None
        assert pd.status == Status.pending
        assert len(pairs_store.reviews(con, a)) == 1  # the change is a review, nothing deleted
        assert pairs_store.count(con) == 6
        near = cur.duplicate_members(con, ["near_lexical"])
        assert set(near["pair_id"]) == {e, f}
        n_clusters = con.execute("SELECT count(*) FROM duplicate_clusters").fetchall()[0][0]
        # excluded from slices by default
        assert set(pairs_store.frame(con, SliceFilter())["pair_id"]) == {b, d, e, f}
    r2 = dedupe(project, DedupeConfig(near=True, near_threshold=0.6), author="tester")
    assert r2["marked_now"] == 0
    with project.connect() as con:
        assert con.execute("SELECT count(*) FROM duplicate_clusters").fetchall()[0][0] == n_clusters
        assert len(pairs_store.reviews(con, a)) == 1


def test_automatic_dedupe_holds_accepted_and_sliced_pairs_for_a_person(project):
    from store import slices as slices_store

    with project.connect() as con:
        kept = add(con, "How do I reset my password?", "Open settings.", status=Status.accepted)
        accepted = add(con, "how do I reset my password", "open settings", status=Status.accepted)
        sliced = add(con, "HOW DO I RESET MY PASSWORD?!", "Open settings!")
        plain = add(con, "How do I reset my password!!", "Open settings")
        slices_store.create(con, "frozen", SliceFilter(pair_ids=[sliced]), split_by="pair")
    report = dedupe(project, DedupeConfig(), author="tester")
    assert report["marked_now"] == 1 and report["held_for_review"] == 2
    with project.connect() as con:
        assert pairs_store.get(con, kept).status == Status.accepted
        assert pairs_store.get(con, accepted).status == Status.accepted  # a person accepted it: not silently demoted
        assert pairs_store.get(con, sliced).status == Status.pending  # it is in a frozen slice
        assert pairs_store.get(con, plain).status == Status.duplicate


def test_human_resolution_survives_rerun(project):
    with project.connect() as con:
        add(con, BASE[1], "x")
        add(con, PARAPHRASE[1], "y")
    dedupe(project, DedupeConfig(exact=False, near=True, near_threshold=0.6), author="t")
    with project.connect() as con:
        (cl,) = cur.clusters(con, "near_lexical")
        cur.resolve_cluster(con, cl.id, "not_duplicates")
    dedupe(project, DedupeConfig(exact=False, near=True, near_threshold=0.6), author="t")
    with project.connect() as con:
        rows = con.execute("SELECT id, resolution FROM duplicate_clusters").fetchall()
        assert rows == [(cl.id, "not_duplicates")]
        assert cur.duplicate_members(con, ["near_lexical"]).height == 0  # not_duplicates are not used


def test_fast_paths_match_the_reference_normal_form():
    from analysis.normalize import loose_hash, normalize_series

    texts = ["Hello,  World!", "  a+b=c  ", "", None, "x_y", "Ünïcode ﬁle …", "tab\tnew\nline", "...", "ab  ", "!a!",
             "ﬁle report", "file report", "FILE  report!!"]
    s = pl.Series(texts)
    assert normalize_series(s).to_list() == pl.select(normalize_expr(pl.lit(s))).to_series().to_list()
    h, non_ascii = loose_hash(s)
    assert non_ascii.tolist() == [t is not None and not t.isascii() for t in texts]
    assert h[0] == loose_hash(pl.Series(["hello world"]))[0][0]  # invariant under the normalisation
    assert h[11] == h[12] and h[0] != h[11]


def test_exact_clusters_catch_nfkc_variants_that_skip_the_ascii_path():
    df = frame([("p_1", "ﬁle report", "", "x", "pending"), ("p_2", "file report", "", "x", "pending"),
                ("p_3", "FILE report!", "", "x", "pending"), ("p_4", "file reports", "", "x", "pending")])
    assert clusters_of(dd.exact_clusters(df, "exact_full")) == {frozenset({"p_1", "p_2", "p_3"})}


def test_loose_hash_and_normal_form_do_not_depend_on_chunking():
    from analysis.normalize import loose_hash, normalize_series

    s = pl.Series([f"Row {i}, with  SOME text!" * (i % 4) for i in range(1000)] + ["Ünï", None, ""])
    small_h, small_na = loose_hash(s, chunk_rows=7)
    big_h, big_na = loose_hash(s, chunk_rows=4096)
    assert (small_h == big_h).all() and (small_na == big_na).all()
    assert normalize_series(s, chunk_rows=7, threads=2).to_list() == normalize_series(s, threads=1).to_list()


def _candidates_by_definition(sig, bands, rows, valid, max_bucket, max_pairs):
    """Docs sharing a band's values share its bucket; all pairs of a small bucket, a star on a big one's first."""
    from collections import defaultdict
    from itertools import combinations

    groups = []
    for band in range(bands):
        by_value = defaultdict(list)
        for d in np.flatnonzero(valid):
            by_value[tuple(sig[d, band * rows:(band + 1) * rows])].append(int(d))
        groups += [g for g in by_value.values() if len(g) > 1]
    while max_bucket > 2 and sum(len(g) * (len(g) - 1) // 2 for g in groups if len(g) <= max_bucket) > max_pairs:
        max_bucket //= 2
    out = set()
    for g in groups:
        out |= set(combinations(g, 2)) if len(g) <= max_bucket else {(g[0], d) for d in g[1:]}
    return sorted(out)


def test_candidate_pairs_are_the_pairs_that_share_a_bucket_one_band_at_a_time():
    """Random signatures over small alphabets (buckets of every size, some over the cap, invalid
    rows, budgets that halve the cap): the candidates are exactly the definition's, sorted."""
    from analysis.dedupe import candidate_pairs

    rng = np.random.default_rng(7)
    for _ in range(25):
        n, bands, rows = int(rng.integers(2, 400)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
        sig = rng.integers(0, int(rng.integers(1, 12)), size=(n, bands * rows)).astype(np.uint32)
        valid = rng.random(n) < 0.8
        max_bucket, max_pairs = int(rng.choice([2, 4, 16, 64])), int(rng.choice([5, 300, 10**7]))
        got = candidate_pairs(sig, bands, rows, valid, max_bucket, max_pairs)
        assert got.tolist() == [list(p) for p in _candidates_by_definition(sig, bands, rows, valid, max_bucket,
                                                                            max_pairs)]


def test_candidate_pairs_stay_within_their_budget_on_templated_rows():
    """Rows that all share their LSH buckets (templated data at scale) would give every pair of
    each bucket; over the budget, buckets link to their first doc instead, and the linked docs
    are still candidates of one another through it."""
    from analysis.dedupe import candidate_pairs

    n, bands, rows = 600, 4, 2
    sig = np.zeros((n, bands * rows), dtype=np.uint32)
    sig[:, :] = (np.arange(n) // 60)[:, None]  # 10 groups of 60 docs sharing every band
    valid = np.ones(n, dtype=bool)
    full = candidate_pairs(sig, bands, rows, valid)
    assert len(full) == 10 * 60 * 59 // 2  # every pair inside each group
    capped = candidate_pairs(sig, bands, rows, valid, max_pairs=1_000)
    assert len(capped) == 10 * 59  # each group a star on its first doc
    assert set(map(tuple, capped.tolist())) <= set(map(tuple, full.tolist()))


def test_boilerplate_templates_are_runs_of_shared_words_counted_once_a_row():
    """A template is a run of boilerplate words in a row; a row holding it twice counts once;
    runs of equal length but other words are other templates; the texts lose exactly those runs."""
    from analysis.boilerplate import boilerplate

    hello, bye, ciao = "you are a helpful assistant", "thanks a lot friend", "grazie mille caro amico"
    rows = ([f"{hello} q{i} cats{i} {bye}" for i in range(30)]
            + [f"{hello} q{i} dogs{i} {ciao} r{i} {hello}" for i in range(30, 50)]
            + [f"plain row {i} with nothing shared" for i in range(50, 60)])
    texts, templates = boilerplate(pl.Series(rows), share=0.2, min_rows=10)
    assert templates.select("text", "rows").rows() == [(hello, 50), (bye, 30), (ciao, 20)]
    assert templates["share"].to_list() == pytest.approx([50 / 60, 30 / 60, 20 / 60])
    assert texts[0] == "q0 cats0" and texts[30] == "q30 dogs30 r30"
    assert texts[55] == "plain row 55 with nothing shared"
    for part in (1, 7, 13):  # read a few rows at a time: the same texts and templates
        got, got_templates = boilerplate(pl.Series(rows), share=0.2, min_rows=10, rows=part)
        assert got.equals(texts) and got_templates.equals(templates)


def test_boilerplate_read_in_parts_counts_an_ngram_spread_thinly_over_them():
    """A template in every third row: in rows read 7 at a time no part holds it often enough to
    reach the threshold alone, but its exact count over all parts does."""
    from analysis.boilerplate import boilerplate

    rows = [f"as an ai model i answer row {i} about topic{i}" if i % 3 == 0 else f"w{i} says x{i} y{i} z{i}"
            for i in range(60)]
    whole, templates = boilerplate(pl.Series(rows), share=0.2, min_rows=20, rows=10**6)
    assert templates.select("text", "rows").rows() == [("as an ai model i answer row", 20)]
    assert whole[3] == "3 about topic3"
    got, got_templates = boilerplate(pl.Series(rows), share=0.2, min_rows=20, rows=7)
    assert got.equals(whole) and got_templates.equals(templates)


def test_shingles_taken_a_few_rows_at_a_time_are_the_whole_corpus_shingles():
    """Rows are shingled in chunks (memory); a chunk boundary changes no shingle, row or order."""
    rng = np.random.default_rng(3)
    vocab = np.array(["cat", "dog", "bird", "fish", "cow", "hen", "fox", "owl", "bee", "ant"])
    texts = pl.Series([" ".join(rng.choice(vocab, int(rng.integers(0, 45)))) for _ in range(101)])
    params = dd.MinHashParams()
    short = texts.str.count_matches(r"\S+").to_numpy() < params.short_words
    assert short.any() and (~short).any()
    whole_docs, whole_x = dd._row_shingles(texts, short, params, rows=10**6)
    long_d, long_x = dd.shingle_hashes(texts.filter(pl.Series(~short)), params.ngram)
    assert set(zip(np.flatnonzero(~short)[long_d].tolist(), long_x.tolist())) <= set(
        zip(whole_docs.tolist(), whole_x.tolist()))
    for rows in (1, 7, 50):
        docs, x = dd._row_shingles(texts, short, params, rows=rows)
        assert docs.tolist() == whole_docs.tolist() and x.tolist() == whole_x.tolist()
        w_docs, w_x = dd._in_row_chunks(texts, lambda t, _: dd.shingle_hashes(t, 1), rows)
        one_d, one_x = dd.shingle_hashes(texts, 1)
        assert w_docs.tolist() == one_d.tolist() and w_x.tolist() == one_x.tolist()


def test_set_sketches_differ_by_at_most_the_sets_symmetric_difference():
    """The one-edit rule's prefilter: a sketch distance above the allowance proves the word sets
    differ by more, whatever the duplicates, the capped counts or the chunk the rows came in."""
    rng = np.random.default_rng(11)
    sets = []
    for k in range(120):
        base = rng.integers(0, 5000, size=int(rng.integers(0, 60)))
        if k % 3:  # a near copy of the previous row: a few words swapped, dropped or repeated
            prev = sets[-1]
            base = np.concatenate([prev[int(rng.integers(0, 3)):], rng.integers(0, 5000, size=int(rng.integers(0, 3))),
                                   prev[:2]])
        sets.append(base.astype(np.uint32))
    sets.append(np.arange(0, 64 * 300, 64, dtype=np.uint32))  # 300 distinct hashes in one bucket: capped at 255
    sets.append(np.arange(0, 64 * 250, 64, dtype=np.uint32))  # wrapped instead of capped: 44 against 250
    docs = np.concatenate([np.full(len(s), d, np.int32) for d, s in enumerate(sets)])
    x = np.concatenate(sets)
    n = len(sets)
    sketch = dd.set_sketch(docs, x, n)
    for rows in (1, 7, 1000):
        assert (dd.set_sketch(docs, x, n, rows=rows) == sketch).all()
    ruled_out = 0
    for a in range(n):
        for b in range(a + 1, min(n, a + 4)):
            sym = len(set(sets[a].tolist()) ^ set(sets[b].tolist()))
            dist = int(np.abs(sketch[a].astype(np.int16) - sketch[b]).sum())
            assert dist <= sym, (a, b)
            ruled_out += dist > 2
    assert 0 < ruled_out < 3 * n  # it rules out far-apart sets, not every pair


def test_the_sketch_prefilter_keeps_every_one_edit_match():
    """Verification with the sketches equals verification checking every candidate exactly."""
    import dataclasses

    from tests.bench.bench_dedupe import templated_candidates

    params, prep, cand = templated_candidates(4000, seed=5)
    i, j = cand[:, 0], cand[:, 1]
    jac, ok = dd._similarity(prep, params, len(cand))(i, j)
    plain = dataclasses.replace(prep, wsketch=np.zeros_like(prep.wsketch))  # every distance 0: nothing ruled out
    jac0, ok0 = dd._similarity(plain, params, len(cand))(i, j)
    assert (ok == ok0).all() and (jac == jac0).all()
    one_edit = ok & (jac < params.threshold)
    assert one_edit.sum() > 10  # the rule matched pairs here, so the comparison means something


def test_exact_jaccard_is_the_jaccard_of_each_pairs_shingle_sets():
    """Shingles of the documents in a pair are taken by their ranges of the (ascending) doc array."""
    rng = np.random.default_rng(4)
    sets = [rng.integers(0, 40, size=int(rng.integers(0, 30))).astype(np.uint32) for _ in range(60)]  # repeats, empties
    docs = np.concatenate([np.full(len(s), d, np.int32) for d, s in enumerate(sets)])
    x = np.concatenate(sets)
    i = rng.integers(0, 60, size=300)
    j = rng.integers(0, 60, size=300)
    got = dd.exact_jaccard(docs, x, i, j)
    for k in range(300):
        a, b = set(sets[i[k]].tolist()), set(sets[j[k]].tolist())
        assert got[k] == pytest.approx(len(a & b) / len(a | b) if a | b else 0.0), k


def test_pair_codes_decode_a_part_at_a_time_into_narrow_rows():
    codes = np.array([0, 5, 17, 99_999 * 100_000 + 4, 123], dtype=np.int64)
    width = np.int64(100_000)
    for part in (1, 2, 3, 1 << 24):
        got = dd._decode(codes, width, part=part)
        assert got.dtype == np.int32 and got.tolist() == [[int(c) // 100_000, int(c) % 100_000] for c in codes]
    assert dd._decode(codes, np.int64(2**31), part=2).dtype == np.int64  # row numbers past int32
