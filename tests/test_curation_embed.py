"""Embeddings with the real bundled MiniLM (offline), the incremental cache, semantic search,
semantic duplicates, topic clusters and label noise."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import clusters as clusters_mod
from analysis import label_noise as ln
from analysis import search as search_mod
from analysis.curate import DedupeConfig, cluster, dedupe, embed, label_noise, search
from models.embeddings import DIM, Encoder, EncoderConfig, model_id
from store import curation as cur
from store import pairs as pairs_store
from store import slices as slices_store
from store.filters import parse_where
from store.records import NewPair, PairContent, SliceFilter

SENTENCES = [
    "How do I reset my password?",
    "How can I reset my password?",
    "The weather in Paris is sunny today.",
    "Bananas are rich in potassium.",
    "What is the best way to change my login password?",
    "A recipe for chocolate cake with dark cocoa.",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(EncoderConfig(precision="fp32", threads=1))


def test_encoder_vectors_are_normalised_ordered_and_meaningful(encoder):
    v = encoder.encode(SENTENCES)
    assert v.shape == (6, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.9 and sims[0, 1] > sims[0, 3] + 0.5
    assert sims[0, 4] > sims[0, 2]
    # input order is kept even though batches are length-sorted
    perm = [3, 0, 5, 1, 4, 2]
    assert np.allclose(encoder.encode([SENTENCES[i] for i in perm]), v[perm], atol=1e-5)
    assert model_id().startswith("sentence-transformers/all-MiniLM-L6-v2@")


def test_identical_texts_are_encoded_once_and_progress_counts_every_text(encoder):
    texts = [SENTENCES[0], SENTENCES[3], SENTENCES[0], SENTENCES[0], SENTENCES[5]]
    seen: list[int] = []
    v = encoder.encode(texts, progress=seen.append)
    assert sum(seen) == len(texts)
    assert np.array_equal(v[0], v[2]) and np.array_equal(v[0], v[3])
    assert np.allclose(v[[0, 1, 4]], encoder.encode([SENTENCES[0], SENTENCES[3], SENTENCES[5]]), atol=1e-6)


def test_auto_precision_only_uses_bf16_when_it_matches_fp32(encoder):
    auto = Encoder(EncoderConfig(precision="auto", threads=1))
    auto.calibrate(SENTENCES)
    got = auto.encode(SENTENCES)
    cos = (got * encoder.encode(SENTENCES)).sum(axis=1)
    assert auto.info["precision"] in ("fp32", "bf16")
    assert cos.min() >= 0.999
    if auto.info["precision"] == "bf16":
        assert auto.info["min_cosine_vs_fp32"] >= 0.999


def test_top_k_is_exact_and_excludes():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(200, 8)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    idx, sims = search_mod.top_k(m, m[17], k=5)
    assert idx[0] == 17 and sims[0] == pytest.approx(1.0)
    brute = np.argsort(-(m @ m[17]))[:6]
    assert idx.tolist() == brute[:5].tolist()
    idx2, _ = search_mod.top_k(m, m[17], k=5, exclude=np.array([17]))
    assert 17 not in idx2 and idx2.tolist() == brute[1:6].tolist()


def _add(con, instruction, response="r"):
    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=instruction, response=response))])[0]


def test_embed_is_incremental_and_search_and_semantic_dedupe_work(project):
    with project.connect() as con:
        ids = [_add(con, s) for s in SENTENCES]
    r1 = embed(project, precision="fp32", threads=1)
    assert r1["embedded"] == 6 and r1["model"] == model_id()
    assert embed(project, precision="fp32", threads=1)["embedded"] == 0
    with project.connect() as con:
        pairs_store.revise(con, ids[3], expected_version=1, author="t", instruction="Apples are rich in fibre.")
        assert cur.missing_embeddings(con, model_id(), "prompt")["pair_id"].to_list() == [ids[3]]
    assert embed(project, precision="fp32", threads=1)["embedded"] == 1
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), "prompt")
    assert rows.height == 6 and mat.shape == (6, DIM)

    res = search(project, text="forgot my password, how to reset it", k=3)
    assert set(res["pair_id"][:2]) == {ids[0], ids[1]}
    like = search(project, pair_id=ids[0], k=2)
    assert ids[0] not in like["pair_id"].to_list() and like["pair_id"][0] == ids[1]

    rep = dedupe(project, DedupeConfig(exact=False, semantic=True, semantic_threshold=0.9), author="t")
    assert rep["near_semantic"]["clusters"] == 1
    with project.connect() as con:
        assert set(cur.duplicate_members(con, ["near_semantic"])["pair_id"]) == {ids[0], ids[1]}


TOPICS = {
    "cooking": ["Bake the bread dough in a hot oven for forty minutes", "Roast the chicken with garlic, lemon and rosemary",
                "Knead fresh pasta dough with eggs and flour", "Simmer the tomato soup with basil and oregano",
                "Caramelize the onions slowly in butter"],
    "football": ["The striker scored a goal in the final minute of the match", "The goalkeeper saved a penalty kick",
                 "The referee gave the defender a red card for a foul", "The football club won the league title again",
                 "Fans cheered as the team lifted the cup at the stadium"],
    "computers": ["The laptop CPU overheats when compiling large programs", "Install the Python package with pip in a virtualenv",
                  "The Linux kernel crashed with a segmentation fault", "Upgrade the RAM and the SSD of the desktop computer",
                  "Compile the C source code with gcc and link the libraries"],
}


def test_cluster_groups_topics_and_names_them(project):
    with project.connect() as con:
        topic_of = {}
        for topic, qs in TOPICS.items():
            for q in qs:
                topic_of[_add(con, q)] = topic
    cid, topics = cluster(project, clusters_mod.ClusterConfig(k=3, seed=0))
    assert topics["size"].sum() == 15
    with project.connect() as con:
        pts = cur.map_points(con, cid)
        assert pts.height == 15 and pts["x"].is_not_null().all()
        by = pts.with_columns(topic=pl.col("pair_id").replace_strict(topic_of)).group_by("cluster").agg(
            major=pl.col("topic").mode().first(), hits=(pl.col("topic") == pl.col("topic").mode().first()).sum())
        assert set(by["major"]) == set(TOPICS)  # each topic leads its own cluster
        assert by["hits"].sum() >= 13  # k-means on 15 points: at most two strays
        # the newest clustering drives `--where cluster=N`
        first = int(pts["cluster"][0])
        sel = pairs_store.frame(con, parse_where(f"cluster={first}"))
        assert sel.height == pts.filter(pl.col("cluster") == first).height
    # names are c-TF-IDF keywords of the cluster's own texts: the football cluster is named by football words
    football = by.filter(pl.col("major") == "football")["cluster"][0]
    name_words = set(topics.filter(pl.col("cluster") == football)["name"][0].replace(",", " ").split())
    vocab = set(" ".join(TOPICS["football"]).lower().split())
    assert len(name_words & vocab) >= 2, name_words


def test_ctfidf_prefers_cluster_specific_words():
    texts = ["red apple pie", "apple pie recipe", "green apple tart", "car engine oil", "engine repair shop", "oil change car"]
    kw = clusters_mod.ctfidf_keywords(texts, np.array([0, 0, 0, 1, 1, 1]), 3)
    assert "apple" in kw[0] and "engine" in kw[1]


def blobs(n_per: int = 100, k: int = 4, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, dim))
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    return x, y


def test_label_noise_finds_flipped_labels_well_above_chance():
    x, y = blobs()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), 20, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 4, 20)) % 4
    names = np.array(["billing", "refund", "shipping", "login"])
    rows = pl.DataFrame({"revision_id": [f"r{i}" for i in range(len(y))], "pair_id": [f"p{i}" for i in range(len(y))],
                         "response": names[noisy].tolist()})
    out = ln.find_label_noise(rows, x)
    found = set(np.flatnonzero(out["flagged"].to_numpy()))
    truth = set(flipped.tolist())
    recall = len(found & truth) / len(truth)
    precision = len(found & truth) / max(1, len(found))
    assert recall >= 0.6 and precision >= 0.8  # chance: 5% of pairs are flipped
    # the suggestion is the true label
    sugg = out.filter("flagged").with_columns(i=pl.col("pair_id").str.slice(1).cast(pl.Int64)).filter(
        pl.col("i").is_in(flipped.tolist()))
    right = sum(names[y[i]] == s for i, s in zip(sugg["i"], sugg["details"].str.json_path_match("$.suggested")))
    assert right / sugg.height >= 0.9
    # clean labels: hardly anything flagged
    clean = rows.with_columns(response=pl.Series(names[y].tolist()))
    assert ln.find_label_noise(clean, x)["flagged"].sum() <= 4


def test_label_noise_refuses_free_text():
    rows = [f"a long free-text answer number {i} that is nothing like a label at all" for i in range(40)]
    with pytest.raises(ValueError, match="do not look like labels"):
        ln.check_label_like(rows)


INTENTS = {
    "card_lost": ["I lost my card", "my card was stolen", "can't find my bank card anywhere", "someone stole my wallet with my card",
                  "I think I left my card at the shop", "card missing, please block it", "my debit card is lost",
                  "help, my credit card got stolen", "I misplaced my card yesterday", "block my stolen card now"],
    "transfer_fee": ["how much does a transfer cost", "is there a fee for sending money", "why was I charged for a transfer",
                     "what are the fees for bank transfers", "do you charge for international transfers",
                     "transfer fee seems too high", "how much do you take per transfer", "are transfers free",
                     "I was billed a fee when I sent money", "what does it cost to wire money abroad"],
    "exchange_rate": ["what exchange rate do you use", "why is the euro rate so bad", "how are currency rates calculated",
                      "the exchange rate on my payment was wrong", "do you use the interbank rate",
                      "what rate for dollars to pounds", "currency conversion rate is unfair", "how do you set exchange rates",
                      "which rate applies when I pay in yen", "is the exchange rate fixed"],
}


@pytest.mark.slow
def test_label_noise_end_to_end_with_minilm(project):
    flip = {"I lost my card": "exchange_rate", "are transfers free": "card_lost", "is the exchange rate fixed": "transfer_fee"}
    with project.connect() as con:
        for intent, qs in INTENTS.items():
            for q in qs:
                _add(con, q, flip.get(q, intent))
        slices_store.create(con, "intents", SliceFilter(), eval_fraction=0.0, split_by="pair")
    flagged = label_noise(project, "intents", ln.LabelNoiseConfig(folds=5))
    hits = set(flagged["instruction"]) & set(flip)
    assert len(hits) >= 2 and flagged.height <= 6
    for row in flagged.filter(pl.col("instruction").is_in(list(flip))).iter_rows(named=True):
        assert row["given"] == flip[row["instruction"]]
    with project.connect() as con:
        assert pairs_store.frame(con, parse_where("flagged=label_noise")).height == flagged.height
    queue = label_noise(project, "intents", ln.LabelNoiseConfig(folds=5), review=8)
    assert flagged.height <= queue.height <= 8  # only pairs whose label is not the most probable one
    assert queue["score"].is_sorted(descending=True) and (queue["score"] > 0).all()
    assert set(flagged["pair_id"]) <= set(queue["pair_id"])  # the flags score highest here
    assert set(queue["instruction"]) & set(flip) >= hits


def test_search_without_inline_embedding_covers_only_embedded_pairs(project):
    """The app's path for a large backlog: nothing is embedded in the request; only stored vectors are searched."""
    from analysis import curate
    from store import pairs as pairs_store
    from store.records import NewPair, PairContent

    with project.transaction() as con:
        pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"How do I reset card {i}?", response="x"))
                                    for i in range(5)])
    assert curate.missing_count(project) == 5
    hits = curate.search(project, text="reset my card", k=3, embed_missing=False)
    assert hits.height == 0
    assert curate.missing_count(project) == 5  # still nothing embedded
    curate.embed(project)
    assert curate.missing_count(project) == 0
    assert curate.search(project, text="reset my card", k=3, embed_missing=False).height == 3


TOOL_HEADER = ("You can call the following tool. request(url, method, headers, body) sends an HTTP request to the "
               "given url with the method GET or POST and returns the status code and the body of the response as "
               "text; use it whenever the user asks for data that lives on a web server.")
REQUESTS = [
    "Fetch the weather forecast for Lisbon tomorrow.", "Post my new address to the billing service.",
    "Get the latest exchange rate of the euro to the yen.", "Download the list of open pull requests.",
    "Check whether the shop's status page reports an outage.", "Send the survey answers to the research server.",
    "Look up the train departures from Porto this evening.", "Retrieve my last ten bank transactions.",
    "Find the opening hours of the city library.", "Ask the calendar service for free slots on Friday.",
    "Query the inventory for blue running shoes in size 42.", "Read the top headlines from the news feed.",
    "Upload the signed contract to the document store.", "Get the current price of a kilo of coffee beans.",
    "Tell the thermostat to lower the heating to 19 degrees.", "List the flights from Madrid to Oslo on Monday.",
    "Fetch the football results of last weekend.", "Submit my timesheet for this week.",
    "Check the delivery status of parcel 7731.", "Retrieve the minutes of yesterday's board meeting.",
    "Get the air quality index for Milan right now.", "Register my bike with the city's rental scheme.",
]


def test_semantic_dedupe_discounts_a_shared_tool_description(project):
    """A 40-word tool description on every prompt makes all embeddings alike: without it only the
    planted rewording of a request is a semantic duplicate, and the template is reported."""
    planted = "Please fetch tomorrow's weather forecast for Lisbon."
    with project.connect() as con:
        ids = [_add(con, f"{TOOL_HEADER}\n{r}") for r in [*REQUESTS, planted]]
    rep = dedupe(project, DedupeConfig(exact=False, semantic=True, semantic_threshold=0.85, field="prompt"),
                 author="t")
    assert rep["templates"] and "request url method headers body" in rep["templates"][0]["text"]
    with project.connect() as con:
        members = cur.duplicate_members(con, ["near_semantic"])
    assert set(members["pair_id"]) == {ids[0], ids[-1]}, members
    # the header's own vectors are not mixed with the field's cache
    with project.connect() as con:
        assert cur.missing_embeddings(con, model_id(), "prompt").height == len(ids)
