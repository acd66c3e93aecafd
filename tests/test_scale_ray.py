"""The heavy stages on Ray (issue 19): a real local Ray runtime with 2 CPUs gives the same results
as the local engine, work flows through Parquet shards, and a re-run computes only missing shards.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest

from analysis import dedupe as dd
from analysis import on_ray
from analysis.curate import embed
from models.embeddings import model_id
from scale.engine import Engine, EngineError, Shards, map_shards, resolve, runtime
from store import curation as cur
from store import pairs as pairs_store
from store import settings as settings_store
from store.records import NewPair, PairContent

ray = pytest.importorskip("ray")

LOCAL_RAY = Engine("ray", None, 2)


def _ray_tmp(factory) -> str:
    """Ray's session folder under pytest's tmp (a short path: Ray's socket paths must stay < 108 bytes)."""
    return str(factory.mktemp("ray"))


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory):
    """One local Ray runtime (2 CPUs) for the module; ``scale.engine.runtime`` uses it as it is."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    folder = _ray_tmp(tmp_path_factory)
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder  # also the files Ray keeps outside the session folder
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR", _temp_dir=folder)
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = saved


TEXTS = [
    "How do I reset my password?", "How can I reset my password?", "The weather in Paris is sunny today.",
    "Bananas are rich in potassium.", "What is the best way to change my login password?",
    "A recipe for chocolate cake with dark cocoa.", "Why was my card declined at the shop?",
    "Transfer money to a friend abroad", "My top-up did not arrive", "Cancel the transfer I made yesterday",
] * 3


def _add(project, texts):
    with project.transaction() as con:
        return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"{t} (#{i})", response=f"answer {i}"))
                                           for i, t in enumerate(texts)])


def _vectors(project, key):
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), key, None)
    return dict(zip(rows["revision_id"].to_list(), mat, strict=True))


def test_embeddings_on_ray_equal_the_local_engine(project, ray_runtime, monkeypatch):
    _add(project, TEXTS)
    monkeypatch.setattr(on_ray, "EMBED_SHARD_ROWS", 7)  # 30 texts: 5 shards over 2 actors
    local = embed(project, field="prompt", precision="fp32", key="local")
    on = embed(project, field="prompt", precision="fp32", key="ray", engine=LOCAL_RAY)
    assert local["embedded"] == on["embedded"] == len(TEXTS)
    a, b = _vectors(project, "local"), _vectors(project, "ray")
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-5, worst
    assert not (project.cache_dir / "shards" / "embed").exists() or not any((project.cache_dir / "shards" / "embed").iterdir())
    again = embed(project, field="prompt", precision="fp32", key="ray", engine=LOCAL_RAY)
    assert again["embedded"] == 0  # incremental, as locally


def _double(shards: Shards, k: int) -> int:
    t = shards.read_input(k)
    import pyarrow as pa

    shards.write_output(k, pa.table({"y": pa.array(np.asarray(t["x"]) * 2)}))
    return t.num_rows


def test_a_rerun_computes_only_the_missing_shards(tmp_path, ray_runtime):
    import pyarrow as pa

    shards = Shards(tmp_path / "shards" / "double" / "k1")
    n = shards.write_inputs(pa.table({"x": np.arange(s, s + 5)}) for s in range(0, 20, 5))
    assert n == 4 and map_shards(ray_runtime, shards, n, fn=_double) == 4
    first = shards.outputs(n)
    shards.output_path(2).unlink()  # as if the job had died before this shard
    with pytest.raises(EngineError, match="1 of 4 output shards .* missing"):
        shards.outputs(n)
    assert shards.pending(n) == [2]
    assert map_shards(ray_runtime, shards, n, fn=_double) == 1
    assert shards.outputs(n).equals(first)
    assert first["y"].to_pylist() == [2 * i for i in range(20)]
    assert not list(shards.dir.glob(".*.tmp"))


def test_minhash_signatures_on_ray_equal_the_local_ones(ray_runtime, monkeypatch):
    texts = pl.Series([f"the quick brown fox number {i} jumps over the lazy dog {i % 7}" for i in range(400)]
                      + ["", "short"])
    docs, x = dd.shingle_hashes(texts, 3)
    params = dd.MinHashParams()
    want = dd._signatures_from_shingles(len(texts), docs, x, params)
    monkeypatch.setattr(on_ray, "SIGNATURE_MIN_DOCS", 30)  # 402 documents: 8 tasks over 2 slots
    seen: list[int] = []
    got = on_ray.signatures(LOCAL_RAY, len(texts), docs, x, num_perm=params.num_perm, seed=params.seed,
                            progress=seen.append)
    assert got.dtype == np.uint32 and np.array_equal(got, want)
    assert len(seen) == 8 and sum(seen) == len(texts)


def test_engine_choice_flag_over_project_setting_over_local(project, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve() == Engine()
    assert resolve("ray") == Engine("ray")
    assert resolve(None, None, {"kind": "ray", "address": "ray://head:10001"}).address == "ray://head:10001"
    assert resolve("local", None, {"kind": "ray"}) == Engine()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert resolve("ray").address == "10.0.0.5:6379"
    assert resolve("ray", "ray://other:10001").address == "ray://other:10001"
    with pytest.raises(EngineError, match="'spark' is not known: choose one of local, ray"):
        resolve("spark")
    from scale.engine import for_project

    with project.transaction() as con:
        settings_store.put(con, "engine", {"kind": "ray", "num_cpus": 2}, author="t")
    assert for_project(project) == Engine("ray", "10.0.0.5:6379", 2)


def test_an_unreachable_cluster_is_one_clear_error():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(EngineError, match=f"could not reach the Ray cluster at {address}: 127.0.0.1:{port} did not "
                                              "accept a connection"), runtime(Engine("ray", address)):
            pass


def test_an_unreachable_cluster_from_the_cli_is_one_error_line(project):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _add(project, TEXTS[:3])
    done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "embed", "--engine", "ray", "--ray-address",
                           f"127.0.0.1:{port}", "-p", str(project.root)], capture_output=True, text=True, timeout=300,
                          cwd=project.root, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 2, done.stderr[-2000:]
    err = " ".join(done.stderr.split())
    assert f"error: could not reach the Ray cluster at 127.0.0.1:{port}" in err
    assert "Traceback" not in done.stderr and "EngineError" not in done.stderr


def _store_rows(project):
    from store.db import frame

    with project.connect() as con:
        docs = frame(con, "SELECT id, uri, n_pages, text FROM documents ORDER BY id")
        els = frame(con, "SELECT id, document_id, idx, type, text, page FROM elements ORDER BY id")
        pairs = frame(con, """SELECT p.id, p.document_id, p.char_start, p.char_end, r.instruction, r.response
                              FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id ORDER BY p.id""")
    return docs, els, pairs


def test_partition_on_ray_gives_the_same_documents_elements_and_pairs(tmp_path, ray_runtime, template_project):
    """The sample corpus (every office format, e-mail, PDF, CSV, HTML) with a 60-page PDF split in
    page ranges across the 2 slots: the same documents, elements and pairs as one local process,
    which parses that PDF in one piece (a chapter's running head on most pages of one range only
    stays text on both)."""
    import shutil

    from ingest.documents import IngestConfig, ingest
    from store.db import Project
    from tests.test_ingest_clean_text import _pdf
    from tuneloop.sample_corpus import write_corpus

    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    _pdf(corpus / "long.pdf", 60, chapter_head_from=36)
    results = {}
    for name, cfg in (("local", IngestConfig(workers=1)), ("ray", IngestConfig(engine=LOCAL_RAY))):
        root = tmp_path / name
        shutil.copytree(template_project, root)
        project = Project(root)
        report = ingest(project, [corpus], cfg)
        assert not report.failed, [(f.uri, f.error) for f in report.failed]
        assert {f.status for f in report.files} == {"new"}
        results[name] = _store_rows(project)
    for a, b in zip(results["local"], results["ray"], strict=True):
        assert a.height > 0 and a.equals(b)
    assert results["ray"][0].filter(pl.col("uri").str.ends_with("long.pdf"))["n_pages"].to_list() == [60]


def test_a_file_over_its_time_limit_on_ray_fails_alone(tmp_path, ray_runtime):
    """A task over its limit is cancelled (its worker killed) with the local engine's message; the
    other files of the batch are parsed."""
    from ingest.ray_parse import groups, parse_all_ray
    from ingest.workers import BOOT_TIMEOUT_S, ParseOptions, Task
    from tests.test_ingest_files import make

    ok = make(tmp_path, "md")
    slow = tmp_path / "slow.txt"
    slow.write_text("x")
    warm = list(parse_all_ray([Task(0, str(ok), ok.name)] * 2, LOCAL_RAY, timeout_s=60, opts=ParseOptions()))
    assert all(not isinstance(r, Exception) for _, r in warm)  # both slots have loaded the parsers
    # A limit below any real parse: the fresh-worker allowance is spent by the warm-up above
    tasks = [Task(1, str(slow), slow.name, limit_s=1e-3 - BOOT_TIMEOUT_S, limit_for="test"), Task(2, str(ok), ok.name)]
    got = dict((t.key, r) for t, r in parse_all_ray(tasks, LOCAL_RAY, timeout_s=60, opts=ParseOptions()))
    assert not isinstance(got[2], Exception) and got[2].elements
    assert got[1].kind == "timeout" and "timed out after" in got[1].message and "the limit for test" in got[1].message
    # Small files travel in groups: a group over its limit is parsed again one file per task, so
    # only the slow file fails and the others of its group are parsed.
    small = [Task(3, str(slow), slow.name, limit_s=-1.0 - 120 - BOOT_TIMEOUT_S, limit_for="test", cost=0.1),
             Task(4, str(ok), ok.name, limit_s=60, cost=0.1), Task(5, str(ok), ok.name, limit_s=60, cost=0.1)]
    assert [len(g) for g in groups(small)] == [3]
    # page ranges of a PDF run side by side, never in one group, however cheap their estimate
    ranges = [Task(6 + k, str(ok), ok.name, pages=(1 + 24 * k, 24 * (k + 1)), cost=0.48) for k in range(2)]
    assert [[t.key for t in g] for g in groups([*ranges, *small])] == [[6], [7], [3, 4, 5]]
    got = dict((t.key, r) for t, r in parse_all_ray(small, LOCAL_RAY, timeout_s=60, opts=ParseOptions()))
    assert got[3].kind == "timeout"
    assert not isinstance(got[4], Exception) and not isinstance(got[5], Exception) and got[4].elements


def test_a_freed_ray_slot_gets_its_next_file_before_the_caller_handles_a_result(tmp_path, ray_runtime):
    """The caller builds pairs from each parsed document before it asks for the next one; the slot
    that document came from must have its next file by then, not idle meanwhile."""
    from ingest.ray_parse import parse_all_ray
    from ingest.workers import ParseOptions, Task
    from scale.engine import slots
    from tests.test_ingest_files import make

    doc = make(tmp_path, "md")
    n = slots(ray_runtime)
    tasks = [Task(k, str(doc), doc.name, cost=1.0) for k in range(n + 2)]  # one task each (cost over GROUP_COST)
    started: list[int] = []
    seen_at_first: int | None = None
    for _task, res in parse_all_ray(tasks, LOCAL_RAY, timeout_s=120, opts=ParseOptions(),
                                    on_start=lambda t, _loading: started.append(t.key)):
        assert not isinstance(res, Exception)
        if seen_at_first is None:
            seen_at_first = len(started)
    assert seen_at_first == n + 1  # every slot busy, the freed one included
    assert sorted(started) == list(range(n + 2))


def _blocked_parsers() -> list[int]:
    """Ray workers parsing (their title) that wait in ``open`` on a FIFO with no writer: the kernel's
    wait channel says so, or (where it hides wait channels) the system call they are blocked in."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().startswith(b"ray::_parse_on_worker"):
                    continue
            with open(f"/proc/{pid}/wchan") as f:
                wchan = f.read()
            if wchan in ("", "0"):
                with open(f"/proc/{pid}/syscall") as f:
                    wchan = "wait_for_partner" if f.read().split(" ")[0] in ("2", "257") else wchan  # open, openat
        except OSError:
            continue
        if wchan == "wait_for_partner":
            out.append(int(pid))
    return out


def _kill_blocked(times: int, before_first=None, wait_s: float = 120.0) -> None:
    """SIGKILL (as the OOM killer does) each new Ray worker stuck on the FIFO until ``times`` are
    killed; ``before_first()`` runs just before the first kill."""
    import signal
    import time

    killed: set[int] = set()
    end = time.monotonic() + wait_s
    while len(killed) < times and time.monotonic() < end:
        for pid in set(_blocked_parsers()) - killed:
            if before_first and not killed:
                before_first()
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.02)


def test_a_worker_killed_under_a_file_on_ray_parses_it_again_on_its_own(tmp_path, ray_runtime):
    """A Ray worker that dies under a file (killed mid-parse) costs nothing if the file parses on a
    fresh worker; a file whose worker dies twice fails alone with "crash". Ray may also hand a task
    to a worker a cancellation is killing: the same retry covers it (CI saw that race fail a file)."""
    import threading

    from ingest.ray_parse import parse_all_ray
    from ingest.workers import ParseOptions, Task
    from tests.test_ingest_files import make

    ok = make(tmp_path, "md")
    real = tmp_path / "real.md"
    real.write_bytes(ok.read_bytes())
    for name, times in (("once.md", 1), ("twice.md", 2)):
        stuck = tmp_path / name
        os.mkfifo(stuck)  # a parser opening it waits for a writer that never comes: killed while it waits
        # "once": the path holds a real file from the first kill on (the waiting open keeps the FIFO)
        swap = (lambda s=stuck: os.replace(real, s)) if times == 1 else None
        killer = threading.Thread(target=_kill_blocked, args=(times, swap))
        killer.start()
        tasks = [Task(0, str(stuck), name, limit_s=600), Task(1, str(ok), ok.name), Task(2, str(ok), ok.name)]
        got = dict((t.key, r) for t, r in parse_all_ray(tasks, LOCAL_RAY, timeout_s=600, opts=ParseOptions()))
        killer.join()
        assert not isinstance(got[1], Exception) and not isinstance(got[2], Exception) and got[1].elements
        if times == 1:
            assert not isinstance(got[0], Exception), got[0]
            assert [e["text"] for e in got[0].elements] == [e["text"] for e in got[1].elements]
        else:
            assert got[0].kind == "crash" and "died on this file (twice" in got[0].message


def test_near_dedupe_with_signatures_on_ray_finds_the_same_clusters(tmp_path, ray_runtime, template_project,
                                                                     monkeypatch):
    """Near duplicates with shared boilerplate, one-word edits and unrelated rows: the same clusters
    (members, kept pairs, similarities) with the signatures on Ray as on the local engine."""
    import shutil

    from analysis.curate import DedupeConfig, dedupe
    from store.db import Project

    monkeypatch.setattr(on_ray, "SIGNATURE_MIN_DOCS", 16)
    footer = "Thank you for contacting Cobalt support. Reply to this e-mail if you need anything else."
    rows = []
    for i in range(30):
        q = f"My card number {i} was charged twice for the same order at the grocery shop on Monday"
        rows += [(q, f"We refunded the second charge {i}. {footer}"),
                 (q.replace("twice", "two times"), f"We refunded the second charge {i}. {footer}"),
                 (f"Unrelated question {i} about opening hours of branch {i * 13}", f"Open nine to five. {footer}")]
    got = {}
    for name, engine in (("local", None), ("ray", LOCAL_RAY)):
        root = tmp_path / name
        shutil.copytree(template_project, root)
        project = Project(root)
        with project.transaction() as con:
            pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=q, response=r)) for q, r in rows])
        report = dedupe(project, DedupeConfig(exact=False, near=True, near_threshold=0.7), author="t", engine=engine)
        with project.connect() as con:
            members = cur.duplicate_members(con, ["near_lexical"])
        got[name] = (report["near_lexical"], members.select("pair_id", "kept_pair_id", "is_kept", "similarity")
                     .sort("pair_id"))
    assert got["local"][0]["clusters"] >= 25
    assert got["local"][0] == got["ray"][0]
    assert got["local"][1].equals(got["ray"][1])


def test_cli_ingest_with_engine_ray(tmp_path, tmp_path_factory):
    """``tuneloop ingest --engine ray`` in a fresh process: its own local Ray runtime, said on stderr,
    pairs stored; ``tuneloop engine`` shows and sets the project's choice."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"note-{i}.md").write_text(f"# Returns policy {i}\n\nItems can be returned within {i + 14} days of "
                                              f"delivery. Refunds reach the card within five working days.\n")
    env = {**os.environ, "PYTHONPATH": str(repo), "RAY_ADDRESS": "", "RAY_TMPDIR": _ray_tmp(tmp_path_factory)}
    cli = [sys.executable, "-m", "tuneloop.cli"]
    proj = tmp_path / "proj"
    done = subprocess.run([*cli, "ingest", str(corpus), "-p", str(proj), "--engine", "ray"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "engine: ray (local" in done.stderr
    from store.db import Project, scalar

    with Project(proj).connect() as con:
        assert scalar(con, "SELECT count(*) FROM documents") == 3
        assert scalar(con, "SELECT count(*) FROM pairs") >= 3
    shown = subprocess.run([*cli, "engine", "ray", "--num-cpus", "2", "-p", str(proj)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "engine: ray (local, 2 CPUs)" in shown.stdout


def _predictions(project, psid):
    from store.db import frame

    with project.connect() as con:
        rows = frame(con, """SELECT pair_id, output, n_prompt_tokens, n_output_tokens, finish_reason, label_logprob
                             FROM predictions WHERE prediction_set_id = ? ORDER BY pair_id""", [psid])
        nll = con.execute("""SELECT value FROM metrics WHERE prediction_set_id = ? AND scope = 'overall'
                             AND name = 'reference_nll'""", [psid]).fetchone()
    return rows, (nll[0] if nll else None)


@pytest.mark.parametrize("decode", ["generate", "labels"])
def test_predictions_on_ray_equal_the_local_engine(project, ray_runtime, monkeypatch, decode):
    """Greedy generation (and label scoring) on Ray actors gives the local engine's answers: the
    shards are runs of whole local batches; reference perplexity within 1e-4; shards removed."""
    from tests.errors_fixtures import INTENTS, add_intent_pairs, make_slice
    from tests.training_fixtures import tiny_model_dir
    from training import on_ray as predict_on_ray
    from training.predict import create_baseline, generation_config, predict_run

    with project.connect() as con:
        ids = add_intent_pairs(con, INTENTS)
        sl = make_slice(con, ids, ids[: len(ids) // 2 + 3])
    rid = create_baseline(project, sl.id, base_model=str(tiny_model_dir()))
    monkeypatch.setattr(predict_on_ray, "PREDICT_SHARD_ROWS", 3)  # several shards over 2 actors
    kw = dict(split="eval", max_new_tokens=5, batch_size=2, decode=decode)
    local = predict_run(project, rid, **kw)
    if decode == "generate":
        on = predict_run(project, rid, engine=LOCAL_RAY, **kw)
    else:  # the app's and the training loop's path: the project's engine setting
        from workflows.predict import predict_and_categorise

        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        with project.transaction() as con:
            settings_store.put(con, "engine", {"kind": "ray", "num_cpus": 2}, author="t")
        on = predict_and_categorise(project, rid, categorise=False, **kw).prediction_set_id
    (a, nll_a), (b, nll_b) = _predictions(project, local), _predictions(project, on)
    assert a.height == len(ids) // 2 + 3 and a.height > 2 * 3
    assert a.drop("label_logprob").equals(b.drop("label_logprob"))
    if decode == "labels":
        assert np.allclose(a["label_logprob"].to_numpy(), b["label_logprob"].to_numpy(), atol=1e-4)
    assert nll_a is not None and nll_b is not None and abs(nll_a - nll_b) <= 1e-4 * abs(nll_a)
    g = generation_config(project, on)
    assert g["engine"] == "ray (local, 2 CPUs)" and g["device"] == "cpu" and g["precision"] == "fp32"
    assert generation_config(project, local)["engine"] == "local"
    folder = project.cache_dir / "shards" / "predict"
    assert not folder.exists() or not any(folder.iterdir())


def test_actor_plan_one_actor_per_gpu_else_per_cpu_slot():
    from scale.engine import actor_plan

    assert actor_plan({"CPU": 2.0}, 10, per_gpu=True) == {"concurrency": 2, "num_cpus": 1}
    assert actor_plan({"CPU": 2.0}, 1, per_gpu=False) == {"concurrency": 1, "num_cpus": 1}
    assert actor_plan({"CPU": 64.0, "GPU": 4.0}, 10, per_gpu=True) == {"concurrency": 4, "num_cpus": 1, "num_gpus": 1}
    assert actor_plan({"CPU": 64.0, "GPU": 4.0}, 3, per_gpu=True) == {"concurrency": 3, "num_cpus": 1, "num_gpus": 1}
    assert actor_plan({"CPU": 64.0, "GPU": 4.0}, 10, per_gpu=False) == {"concurrency": 10, "num_cpus": 1}


def test_shard_plan_cuts_only_between_the_local_batches():
    from models.lm import generation_batches
    from training.on_ray import shard_plan

    lengths = [5, 9, 9, 3, 12, 7, 7, 7, 1, 30, 2]
    batches = generation_batches(lengths, max_new_tokens=4, batch_size=3)
    plan = shard_plan(lengths, max_new_tokens=4, batch_size=3, min_rows=4)
    assert [i for s in plan for i in s] == [i for b in batches for i in b]
    assert all(len(s) >= 4 for s in plan[:-1])
    for s in plan:  # each shard, planned alone, is batched as the whole set was
        sub = generation_batches([lengths[i] for i in s], max_new_tokens=4, batch_size=3)
        assert [[s[j] for j in b] for b in sub] == [b for b in batches if b[0] in s]


@pytest.mark.parametrize("n, rows, shards", [
    (30, 512, 1),              # a small stage: one shard, not 30 of one row
    (20_000, 512, 40),         # the bench's 20K: 40 shards over 2 actors, not 5 (3 of them on one actor)
    (100_000, 1563, 64),
    (1_000_000, 4096, 245),    # capped: a shard stays a few seconds of one slot's work
])
def test_embedding_shards_are_many_enough_to_balance_the_actors(n, rows, shards):
    assert on_ray.embed_shard_rows(n) == rows
    assert -(-n // rows) == shards


def test_ray_starts_in_a_process_that_loaded_the_search_index_first(tmp_path_factory):
    """usearch's static C++ runtime loaded before Ray's made ``ray.init`` abort the process
    (std::regex_error): the app or a CLI run that searched, then ran a stage on Ray, died."""
    import subprocess
    import sys
    from pathlib import Path

    session = _ray_tmp(tmp_path_factory)
    code = (
        "import analysis.ann, sys\n"
        "assert 'usearch' in sys.modules\n"
        "import ray\n"
        f"ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level='ERROR', _temp_dir={session!r})\n"
        "print(ray.get(ray.remote(lambda: 'ran on ray').remote()))\n"
        "ray.shutdown()\n"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ran on ray" in out.stdout


def test_ray_parse_tasks_keep_torch_out_and_leave_their_worker_to_other_stages(ray_runtime):
    """Parse tasks run in the cluster's ordinary workers, which other stages' tasks reuse: those
    must still import torch in the same process after a parse, which keeps it out (that the
    parsers load without it: ``test_a_batch_warms_its_ray_parse_workers_and_parses_on_them``)."""

    from ingest.ray_parse import _parse_on_worker, runtime_env
    from ingest.workers import ParseOptions

    assert runtime_env(ParseOptions()) == {}  # the idle workers Ray started already
    hi_res = runtime_env(ParseOptions(pdf_strategy="hi_res"))["env_vars"]  # keeps torch: a pool of its own
    assert hi_res["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")

    def parse_then_other_stage() -> tuple[str | None, str]:
        _parse_on_worker([], ParseOptions())
        import torch  # another stage's task in the same worker

        return os.environ.get("OPENBLAS_NUM_THREADS"), torch.__version__

    for _ in range(3):  # whichever worker Ray picks
        threads, version = ray_runtime.get(ray_runtime.remote(num_cpus=1)(parse_then_other_stage).remote())
        assert version and threads == os.environ.get("OPENBLAS_NUM_THREADS", "1")


def test_a_batch_warms_its_ray_parse_workers_and_parses_on_them(tmp_path_factory, tmp_path):
    """``ingest.ray_parse.prestart``: one worker per CPU slot loads the batch's parsers (the PDF
    path here) while the caller prepares the files; the parse tasks then run in those workers,
    which have the parsers loaded (a cold one would import them inside the first file's time),
    spaCy's without torch. A fresh 2-CPU runtime of its own: the shared one's workers ran
    earlier tests."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_ingest_files import make

    pdf = make(tmp_path, "pdf", "manual")
    code = f"""
import os, sys, ray
from ingest.ray_parse import _parse_on_worker, parse_all_ray, prestart, runtime_env
from ingest.workers import ParseOptions, Task
from scale.engine import Engine
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level='ERROR',
         _temp_dir={_ray_tmp(tmp_path_factory)!r})
opts = ParseOptions()
warmed = ray.get(prestart(ray, ["manual.pdf", "a.md", "b.md"], opts))
assert len(warmed) == 2 and all(ok for _, ok in warmed), warmed
pids = {{pid for pid, _ in warmed}}
assert len(pids) == 2, warmed  # one per slot, at once

def loaded():
    _parse_on_worker([], opts)  # sets the worker up; parses nothing
    from thinc.compat import has_torch  # what spaCy saw when the warm-up loaded it
    import torch  # and still there for other stages afterwards
    return os.getpid(), "unstructured.partition.pdf" in sys.modules, has_torch

probe = ray.remote(num_cpus=1, runtime_env=runtime_env(opts))(loaded)
seen = ray.get([probe.remote() for _ in range(4)])
assert {{pid for pid, _, _ in seen}} <= pids and all(pdf for _, pdf, _ in seen), (seen, pids)
assert not any(torch for _, _, torch in seen), seen  # spaCy loaded without torch
got = list(parse_all_ray([Task(1, {str(pdf)!r}, "manual.pdf", cost=1.0)], Engine("ray"), timeout_s=120, opts=opts))
assert [type(r).__name__ for _, r in got] == ["Parsed"], got
print("warm workers parsed")
ray.shutdown()
"""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "warm workers parsed" in out.stdout


def test_a_rerun_with_nothing_to_parse_starts_no_ray_runtime(tmp_path):
    """Re-running an ingest whose files are all stored parses nothing: with ``--engine ray`` and no
    cluster it must not start a local Ray runtime (~4 s) for it, nor import Ray."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_ingest_files import make

    doc = make(tmp_path, "md")
    code = f"""
import sys
from pathlib import Path
from ingest.documents import IngestConfig, ingest
from scale.engine import Engine
from store.db import Project
project = Project(Path({str(tmp_path / "proj")!r})).init()
first = ingest(project, [Path({str(doc)!r})], IngestConfig(workers=0))
again = ingest(project, [Path({str(doc)!r})], IngestConfig(workers=0, engine=Engine("ray")))
print([f.status for f in first.files], [f.status for f in again.files], "ray" in sys.modules)
"""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == "['new'] ['unchanged'] False"
