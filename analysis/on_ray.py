"""The analysis stages on Ray (``--engine ray``): embeddings and MinHash signatures.

Embeddings read numbered Parquet input shards and write an output shard per input shard
(``scale.engine.Shards``), so a failed job resumes where it stopped; the caller stores the
outputs in one transaction. Signatures go through Ray's object store (see ``signatures``). The results equal the local engine's: embeddings to within 1e-5
(the same model and precision, batched differently) and MinHash signatures exactly (the same
permutations of the same shingles).

- Embeddings: one actor per GPU of the cluster (without GPUs, per CPU slot: one torch thread
  each), each loading the model once.
  ``precision="auto"`` is decided once, by a task on a sample, so every actor uses the same one.
- Signatures: a task per range of documents' shingle hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from scale.engine import Engine, Shards, content_key, map_shards, runtime, slots

EMBED_SHARD_ROWS = 4096  # a shard's most rows
EMBED_MIN_ROWS = 512  # ... and fewest (fewer: a shard's Parquet and Ray round trip shows)
EMBED_SHARDS = 64  # shards a stage is cut into, within those bounds
SIGNATURE_MIN_DOCS = 10_000  # a signature task's fewest documents (more: a task's overhead shows)


class _EmbedShard:
    """A Ray actor's work: the bundled encoder, loaded once, over one input shard per call."""

    def __init__(self, shards: Shards, precision: str, batch_size: int):
        from models.embeddings import Encoder, EncoderConfig
        from models.lm import pick_device

        self.shards = shards
        device = pick_device(None)  # Ray hides the GPUs an actor was not given (CUDA_VISIBLE_DEVICES)
        self.enc = Encoder(EncoderConfig(precision=precision, threads=1, batch_size=batch_size, device=device))
        if precision == "bf16":
            self.enc.calibrate(["bf16"])  # a fixed precision: only switches the model

    def __call__(self, k: int) -> int:
        from models.embeddings import DIM

        t = self.shards.read_input(k)
        vec = self.enc.encode(t["text"].to_pylist())
        self.shards.write_output(k, pa.table({
            "id": t["id"], "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), DIM)}))
        return t.num_rows


def embed_shard_rows(n: int) -> int:
    """Rows per embedding shard for ``n`` texts: ``n / EMBED_SHARDS`` within the bounds above.

    Actors take shards one at a time, so the last shard runs alone: with 5 shards of 4096 rows
    (20,000 texts) over 2 actors one did 3 and the stage took 60 % of the work's time, not 50 %
    (0.93x the local engine). 64 shards keep that tail under 1/32 of a slot's share on up to 2
    slots and small on 16. The count depends on ``n`` only, not on the cluster, so a re-run on
    another cluster resumes from the same shards."""
    return min(EMBED_SHARD_ROWS, max(EMBED_MIN_ROWS, -(-n // EMBED_SHARDS)))


def _calibrated_precision(texts: list[str], batch_size: int) -> dict[str, Any]:
    from models.embeddings import Encoder, EncoderConfig

    enc = Encoder(EncoderConfig(precision="auto", threads=1, batch_size=batch_size))
    enc.calibrate(texts)
    return dict(enc.info)


def embed(engine: Engine, project: Any, ids: Sequence[str], texts: Sequence[str], *, precision: str, batch_size: int,
          progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, dict[str, Any], Shards]:
    """(vectors in ``ids`` order, encoder info, the shards to remove once stored)."""
    from models.embeddings import DIM, model_id

    rows = embed_shard_rows(len(ids))
    shards = Shards.of(project, "embed", content_key([model_id(), precision, str(batch_size), str(rows)], ids, texts))
    n = shards.write_inputs(pa.table({"id": list(ids[s:s + rows]), "text": list(texts[s:s + rows])})
                            for s in range(0, len(ids), rows))
    with runtime(engine) as ray:
        info: dict[str, Any] = {"precision": precision, "min_cosine_vs_fp32": 1.0 if precision == "fp32" else "n/a"}
        if precision == "auto":
            from models.embeddings import EncoderConfig

            size = EncoderConfig().calibration_size
            order = np.argsort([-len(t) for t in texts], kind="stable")
            sample = [texts[i] for i in np.unique(np.concatenate([order[:size // 2], order[::max(1, len(texts) // max(1, size // 2))][:size // 2]]))]
            info = ray.get(ray.remote(num_cpus=1)(_calibrated_precision).remote(sample, batch_size))
        map_shards(ray, shards, n, actor=_EmbedShard, kwargs={"precision": info["precision"], "batch_size": batch_size},
                   per_gpu=True, progress=progress)
    out = shards.outputs(n)
    if out["id"].to_pylist() != list(ids):
        raise RuntimeError(f"the embedding shards under {shards.dir} do not match their input; remove the folder and run again")
    vec = out["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, DIM).astype(np.float32)
    return vec, {**info, "engine": engine.describe()}, shards


def _signature_range(docs: np.ndarray, x: np.ndarray, a: int, b: int, lo: int, hi: int, num_perm: int,
                     seed: int) -> np.ndarray:
    from analysis.dedupe import MinHashParams, _signatures_from_shingles

    return _signatures_from_shingles(hi - lo, docs[a:b] - lo, x[a:b], MinHashParams(num_perm=num_perm, seed=seed))


def signatures(engine: Engine, n_docs: int, docs: np.ndarray, x: np.ndarray, *, num_perm: int, seed: int,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n_docs, num_perm) uint32 MinHash signatures of documents' shingle hashes (``docs`` sorted),
    computed on Ray, a task per range of documents; equal to ``dedupe._signatures_from_shingles``.

    The shingles go to the cluster once through Ray's object store (shared memory on a node, no
    copy per task) rather than as Parquet shards: signatures take seconds to recompute, so a
    resumable shard per range would cost more (writing ~16 bytes per shingle) than it saves."""
    if n_docs == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    with runtime(engine) as ray:
        per = max(SIGNATURE_MIN_DOCS, -(-n_docs // (4 * slots(ray))))
        starts = list(range(0, n_docs, per))
        bounds = np.searchsorted(docs, np.array([*starts, n_docs]))
        task = ray.remote(num_cpus=1)(_signature_range)
        d_ref, x_ref = ray.put(docs), ray.put(x)
        refs = [task.remote(d_ref, x_ref, int(bounds[i]), int(bounds[i + 1]), lo, min(lo + per, n_docs), num_perm, seed)
                for i, lo in enumerate(starts)]
        order = {r: i for i, r in enumerate(refs)}
        parts: list[np.ndarray | None] = [None] * len(refs)
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for r in ready:
                parts[order[r]] = ray.get(r)
                if progress:
                    progress(len(parts[order[r]]))  # type: ignore[arg-type]
    return np.concatenate([p for p in parts if p is not None]).astype(np.uint32, copy=False)
