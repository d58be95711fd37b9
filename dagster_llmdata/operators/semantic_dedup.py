"""semantic_dedup: near-duplicates by meaning. Documents are embedded in batches, each batch is
queried against the accepted set (everything kept so far, in this partition and, through a
LanceDB table that persists, in the stage's other partitions), and a document within the cosine
bound of an accepted one is dropped with the `kept_id` it duplicates: the first of each group is
kept."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from dagster_llmdata.io.parquet_store import iter_batches
from dagster_llmdata.operators.metadata import Table
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import Operator
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.errors import EmbeddingModelMissing, StageFailed, StoreError
from dagster_llmdata.store.accepted_set import AcceptedSet
from dagster_llmdata.store.accepted_set import GrowingMatrix
from dagster_llmdata.store.embed import DIMENSIONS, get_embedder

DIM = 384
EMBEDDING_MODEL_KEY = "llmdata.embedding_model"
# per model, the bound at which the planted near-duplicate benchmark (bench/semantic_dedup.py)
# reaches precision >= 0.99 and recall >= 0.95
DEFAULT_BOUNDS = {"minilm-l6-static": 0.03, "minilm-l6-int8": 0.10, "minilm-l6": 0.10}


class SemanticDedupParams(OperatorParams):
    model: str = Field("minilm-l6-static", description=(
        "Embedding model, shipped inside a PyPI package (the `embed` extra), run on CPU: `minilm-l6-static` (static token "
        "vectors distilled from all-MiniLM-L6-v2; ~100x faster), `minilm-l6-int8` (MiniLM, int8, onnxruntime), `minilm-l6` "
        "(MiniLM fp32, CPU torch)."))
    max_cosine_distance: float | None = Field(None, ge=0.0, le=1.0, description=(
        "A document whose cosine distance (1 - cosine similarity) to an accepted one is at most this is a duplicate. None: the "
        "model's calibrated bound (0.03 static, 0.10 MiniLM)."))
    max_tokens: int = Field(128, ge=8, le=512, description="Tokens embedded per document by the MiniLM models (the rest is cut); the static model reads every token.")
    across_partitions: bool = Field(True, description="Also drop documents that duplicate one kept in another partition of the stage (the accepted set persists in LanceDB).")
    index_uri: str | None = Field(None, description=(
        "Where the accepted set lives (a LanceDB folder or object-store URI). None: <stage folder>/semantic_index in a pipeline; "
        "standalone, only the input file itself is deduplicated unless this is given."))
    index_min_rows: int = Field(100_000, ge=256, description="Build an ANN index (IVF-PQ, cosine, re-ranked exactly) on the accepted set once it holds this many vectors; below it, search is exact.")
    batch_size: int = Field(512, ge=1, le=65536, description="Documents embedded and queried per batch.")


class SemanticDedup(Operator):
    name = "semantic_dedup"
    version = "1"
    description = (
        "Near-duplicates by meaning: embed every document on CPU (a model shipped in a PyPI package, nothing downloaded), "
        "query the accepted set with a cosine-distance bound, keep the first of each group. Dropped documents record the "
        "`kept_id` they duplicate and their distance (value) against the bound (threshold). The accepted set persists in "
        "LanceDB across partitions and gets an ANN index once large. Adds `embedding` and `semantic_nn_distance`."
    )
    Params = SemanticDedupParams
    produces = {"embedding": pa.list_(pa.float32(), DIM), "semantic_nn_distance": pa.float32()}
    kinds = ("lancedb", "dedup")
    non_data_params = frozenset({"batch_size", "index_uri"})
    # partitions of the stage run one at a time (a stage-wide lock): two at once would each miss
    # the other's documents. The first materialised keeps; a later re-run of an earlier partition
    # does not re-open the partitions that already compared against it
    serial = True

    def later_partitions(self, run: StageRun) -> list[str]:
        return []

    def forget_partition(self, run: StageRun) -> None:
        if self.params.across_partitions and run.context.stage_root:
            self._accepted_set(run)  # opening it for the partition clears the partition's rows

    @property
    def bound(self) -> float:
        p = self.params
        return p.max_cosine_distance if p.max_cosine_distance is not None else DEFAULT_BOUNDS.get(p.model, 0.1)

    def run(self, run: StageRun) -> dict[str, Any]:
        p = self.params
        if DIMENSIONS.get(p.model) != DIM:
            raise StageFailed(f"semantic_dedup: unknown embedding model {p.model!r}; known: {', '.join(DIMENSIONS)}")
        try:
            embedder = get_embedder(p.model, p.max_tokens)
        except EmbeddingModelMissing as exc:
            raise StageFailed(f"semantic_dedup: {exc}") from None
        try:
            accepted = self._accepted_set(run)
        except StoreError as exc:
            raise StageFailed(f"semantic_dedup: {exc}") from None

        own = GrowingMatrix(DIM)
        schema = run.output_schema(self.produced_columns())
        # the vectors say which model made them, so a lance_table downstream can reuse them
        idx = schema.get_field_index("embedding")
        schema = schema.set(idx, schema.field(idx).with_metadata({EMBEDDING_MODEL_KEY: p.model}))
        examples: list[dict] = []
        n_dup = 0
        tmp = run.output_dir / f".part-00000.{os.getpid()}.tmp"
        with pq.ParquetWriter(tmp, schema, compression="zstd") as kept_writer, self.drops(run, schema) as drops:
            for batch in iter_batches(run.input_files, batch_size=p.batch_size):
                table = pa.Table.from_batches([batch])
                try:
                    vecs = embedder.embed([t or "" for t in table.column("text").to_pylist()], batch_size=min(p.batch_size, 256))
                except Exception as exc:  # a batch the model cannot take is quarantined, not fatal
                    for r in table.to_pylist():
                        drops.quarantine_error(r, exc)
                    continue
                ids = table.column("id").to_pylist()
                dist, nearest = self._nearest(vecs, ids, accepted, own)
                dup = dist <= self.bound
                table = _with_columns(table, schema, vecs, dist)
                keep = ~dup
                if keep.any():
                    own.add(vecs[keep], [i for i, k in zip(ids, keep) if k])
                    kept_writer.write_table(table.filter(pa.array(keep)))
                for i in np.flatnonzero(dup):
                    n_dup += 1
                    row = table.slice(int(i), 1).to_pylist()[0]
                    if len(examples) < 5:
                        examples.append({"dropped_id": ids[i], "kept_id": nearest[i], "distance": round(float(dist[i]), 4),
                                         "text": _snippet(row.get("text"))})
                    drops.reject(row, "semantic_duplicate", kept_id=str(nearest[i]), value=float(dist[i]), threshold=self.bound)
        tmp.replace(run.output_dir / "part-00000.parquet")
        meta: dict[str, Any] = {"semantic_model": p.model, "semantic_bound": self.bound, "semantic_duplicates": n_dup,
                                "semantic_examples": Table(["dropped_id", "kept_id", "distance", "text"], examples)}
        if accepted is not None:
            meta["accepted_from_other_partitions"] = accepted.rows
            try:
                meta.update(accepted.commit(own.data[: len(own)], own.ids))
            except StoreError as exc:
                raise StageFailed(f"semantic_dedup: {exc}") from None
        return meta

    def _nearest(self, vecs: np.ndarray, ids: list[str], accepted, own) -> tuple[np.ndarray, list[str | None]]:
        """Each document's cosine distance to, and id of, its nearest accepted document: in other
        partitions, in this partition's earlier batches, or earlier in this batch if that one is
        kept itself (greedy keep-first, in input order)."""
        dist, nearest = accepted.nearest(vecs) if accepted is not None else (np.full(len(ids), np.inf, dtype=np.float32), [None] * len(ids))
        own_d, own_ids = own.nearest(vecs)
        better = own_d < dist
        dist = np.where(better, own_d, dist)
        nearest = [o if b else n for n, o, b in zip(nearest, own_ids, better)]
        sims = vecs @ vecs.T
        kept: list[int] = []
        for i in range(len(ids)):
            if kept:
                j = kept[int(sims[i, kept].argmax())]
                d = 1.0 - float(sims[i, j])
                if d < dist[i]:
                    dist[i], nearest[i] = d, ids[j]
            if not dist[i] <= self.bound:
                kept.append(i)
        return np.maximum(dist, 0.0), nearest  # float rounding: an exact copy may come out at -1e-7

    def _accepted_set(self, run: StageRun):
        """The persisted accepted set of other partitions, or None when there is nowhere to keep one."""
        p = self.params
        if not p.across_partitions:
            return None
        uri = p.index_uri or (str(Path(run.context.stage_root) / "semantic_index") if run.context.stage_root else None)
        if uri is None:
            return None
        partition = run.context.partition or (Path(run.input_files[0]).name if run.input_files else f"run-{uuid.uuid4().hex[:8]}")
        table = f"accepted_{run.stage}".replace("/", "_")
        return AcceptedSet(uri, table, DIM, partition, p.index_min_rows)


def _with_columns(table: pa.Table, schema: pa.Schema, vecs: np.ndarray, dist: np.ndarray) -> pa.Table:
    """The batch with its `embedding` and `semantic_nn_distance` (null where nothing was accepted yet), in `schema`."""
    produced = {
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), DIM),
        "semantic_nn_distance": pa.array(np.where(np.isfinite(dist), dist, 0.0), pa.float32(), mask=~np.isfinite(dist)),
    }
    columns = [produced[f.name] if f.name in produced else table.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _snippet(text: str | None, n: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
