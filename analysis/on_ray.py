"""The analysis stages on Ray (``--engine ray``): embeddings and MinHash signatures.

Both read numbered Parquet input shards and write an output shard per input shard
(``scale.engine.Shards``), so a failed job resumes where it stopped; the caller stores the
outputs in one transaction. The results equal the local engine's: embeddings to within 1e-5
(the same model and precision, batched differently) and MinHash signatures exactly (the same
permutations of the same shingles).

- Embeddings: one actor per CPU slot, each loading the model once (one torch thread per slot).
  ``precision="auto"`` is decided once, by a task on a sample, so every actor uses the same one.
- Signatures: a task per shard of documents' shingle hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from scale.engine import Engine, Shards, content_key, map_shards, runtime

EMBED_SHARD_ROWS = 4096
SIGNATURE_SHARD_DOCS = 50_000


class _EmbedShard:
    """A Ray actor's work: the bundled encoder, loaded once, over one input shard per call."""

    def __init__(self, shards: Shards, precision: str, batch_size: int):
        from models.embeddings import Encoder, EncoderConfig

        self.shards = shards
        self.enc = Encoder(EncoderConfig(precision=precision, threads=1, batch_size=batch_size))
        if precision == "bf16":
            self.enc.calibrate(["bf16"])  # a fixed precision: only switches the model

    def __call__(self, k: int) -> int:
        from models.embeddings import DIM

        t = self.shards.read_input(k)
        vec = self.enc.encode(t["text"].to_pylist())
        self.shards.write_output(k, pa.table({
            "id": t["id"], "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), DIM)}))
        return t.num_rows


def _calibrated_precision(texts: list[str], batch_size: int) -> dict[str, Any]:
    from models.embeddings import Encoder, EncoderConfig

    enc = Encoder(EncoderConfig(precision="auto", threads=1, batch_size=batch_size))
    enc.calibrate(texts)
    return dict(enc.info)


def embed(engine: Engine, project: Any, ids: Sequence[str], texts: Sequence[str], *, precision: str, batch_size: int,
          progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, dict[str, Any], Shards]:
    """(vectors in ``ids`` order, encoder info, the shards to remove once stored)."""
    from models.embeddings import DIM, model_id

    shards = Shards.of(project, "embed", content_key([model_id(), precision, str(batch_size)], ids, texts))
    n = shards.write_inputs(pa.table({"id": list(ids[s:s + EMBED_SHARD_ROWS]), "text": list(texts[s:s + EMBED_SHARD_ROWS])})
                            for s in range(0, len(ids), EMBED_SHARD_ROWS))
    with runtime(engine) as ray:
        info: dict[str, Any] = {"precision": precision, "min_cosine_vs_fp32": 1.0 if precision == "fp32" else "n/a"}
        if precision == "auto":
            from models.embeddings import EncoderConfig

            size = EncoderConfig().calibration_size
            order = np.argsort([-len(t) for t in texts], kind="stable")
            sample = [texts[i] for i in np.unique(np.concatenate([order[:size // 2], order[::max(1, len(texts) // max(1, size // 2))][:size // 2]]))]
            info = ray.get(ray.remote(num_cpus=1)(_calibrated_precision).remote(sample, batch_size))
        map_shards(ray, shards, n, actor=_EmbedShard, kwargs={"precision": info["precision"], "batch_size": batch_size},
                   progress=progress)
    out = shards.outputs(n)
    if out["id"].to_pylist() != list(ids):
        raise RuntimeError(f"the embedding shards under {shards.dir} do not match their input; remove the folder and run again")
    vec = out["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, DIM).astype(np.float32)
    return vec, {**info, "engine": engine.describe()}, shards


def _signature_shard(shards: Shards, k: int, *, num_perm: int, seed: int) -> int:
    from analysis.dedupe import MinHashParams, _signatures_from_shingles

    t = shards.read_input(k)
    n_docs = int(t.schema.metadata[b"n_docs"])
    docs = t["doc"].to_numpy()
    x = t["x"].to_numpy()
    sig = _signatures_from_shingles(n_docs, docs, x, MinHashParams(num_perm=num_perm, seed=seed))
    shards.write_output(k, pa.table({"sig": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), num_perm)}))
    return n_docs


def signatures(engine: Engine, project: Any, n_docs: int, docs: np.ndarray, x: np.ndarray, *, num_perm: int, seed: int,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n_docs, num_perm) uint32 MinHash signatures of documents' shingle hashes (``docs`` sorted),
    computed on Ray in shards of documents; equal to ``dedupe._signatures_from_shingles``."""
    if n_docs == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    starts = list(range(0, n_docs, SIGNATURE_SHARD_DOCS))
    bounds = np.searchsorted(docs, np.array([*starts, n_docs]))
    digest = content_key([str(n_docs), str(num_perm), str(seed)], [docs.tobytes(), x.tobytes()])
    shards = Shards.of(project, "minhash", digest)

    def inputs():
        for i, lo in enumerate(starts):
            hi = min(lo + SIGNATURE_SHARD_DOCS, n_docs)
            a, b = bounds[i], bounds[i + 1]
            t = pa.table({"doc": pa.array(docs[a:b] - lo), "x": pa.array(x[a:b])})
            yield t.replace_schema_metadata({"n_docs": str(hi - lo)})

    n = shards.write_inputs(inputs())
    with runtime(engine) as ray:
        map_shards(ray, shards, n, fn=_signature_shard, kwargs={"num_perm": num_perm, "seed": seed}, progress=progress)
    out = shards.outputs(n)
    sig = out["sig"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    sig = sig.reshape(n_docs, num_perm).astype(np.uint32, copy=False)
    shards.remove()  # complete: a failed job above leaves its shards for the re-run
    return sig
