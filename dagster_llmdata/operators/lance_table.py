"""lance_table: a stage's curated documents into a versioned LanceDB table (vectors, search,
versions), passed through unchanged to its own Parquet dataset for whatever comes downstream."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from dagster_llmdata.io.parquet_store import iter_batches
from dagster_llmdata.operators.metadata import Table
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import Operator
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.errors import EmbeddingModelMissing, StageFailed, StoreError
from dagster_llmdata.operators.semantic_dedup import EMBEDDING_MODEL_KEY
from dagster_llmdata.store.embed import DIMENSIONS, get_embedder
from dagster_llmdata.store.lance_store import SampleStore, sample_rows, sample_schema, score_columns


class LanceTableParams(OperatorParams):
    uri: str | None = Field(None, description="LanceDB location: a local folder or any object-store URI LanceDB supports (s3://, gs://, az://). "
                                              "None: <storage>/<pipeline>/lance beside the pipeline's datasets (standalone: ./lance).")
    table: str | None = Field(None, description="Table name; None: the stage's name.")
    model: str = Field("minilm-l6-static", description="Embedding model for the vector column (see `llmdata ops semantic_dedup`); "
                                                     "an upstream `embedding` column from the same model is reused instead.")
    max_tokens: int = Field(128, ge=8, le=512, description="Tokens embedded per document (longer ones are truncated); ignored by the static model.")
    storage_options: dict[str, str] = Field(default_factory=dict, description="LanceDB storage options for an object store (endpoint, region, ...).")
    batch_size: int = Field(256, ge=1, le=65536, description="Documents embedded per call.")
    index_min_rows: int = Field(100_000, ge=256, description="Build an ANN index (IVF-PQ, cosine) on the vector column once the table holds this many rows; a full-text index on `text` is kept from the first write.")
    diff_rows: int = Field(5, ge=0, le=100, description="Rows added / removed shown as the diff sample in the asset metadata.")


def _default_uri(run: StageRun) -> str:
    stage_root = run.context.stage_root
    return str(Path(stage_root).parent / "lance") if stage_root else str(Path.cwd() / "lance")


def partition_of(run: StageRun) -> str:
    return run.context.partition or (Path(run.input_files[0]).name if run.input_files else "all")


class LanceTable(Operator):
    name = "lance_table"
    version = "1"
    description = (
        "Write the stage's documents into a LanceDB table (id, text, domain, lang, source, scores, an embedding `vector`, "
        "partition, stage, lineage, run id): one commit per partition that replaces that partition's rows, tagged with the "
        "run id; metadata gives the Lance version and rows added/updated/removed with a diff sample. Rows pass through "
        "unchanged; a repeated id is rejected (the id is the table's key). Search it with `llmdata search`."
    )
    Params = LanceTableParams
    kinds = ("lancedb",)
    non_data_params = frozenset({"batch_size", "uri", "storage_options", "diff_rows", "index_min_rows"})

    def run(self, run: StageRun) -> dict[str, Any]:
        p = self.params
        uri = p.uri or _default_uri(run)
        table = p.table or run.stage
        partition = partition_of(run)
        run_id = run.context.dagster_run_id or f"local-{uuid.uuid4().hex[:12]}"
        lineage = list(run.context.lineage) or [run.stage]
        dim = DIMENSIONS.get(p.model)
        if dim is None:
            raise StageFailed(f"lance_table: unknown embedding model {p.model!r}")
        schema = sample_schema(dim, score_columns(run.input_schema), p.model)
        kept_batches, vectors, seen = [], [], set()
        rejected_rows: list[dict] = []
        reuse = _embedding_model(run.input_schema) == p.model
        embedder = None
        for batch in iter_batches(run.input_files, batch_size=p.batch_size):
            keep_mask = []
            for doc_id in batch.column("id").to_pylist():
                dup = doc_id in seen
                keep_mask.append(not dup)
                seen.add(doc_id)
            batch_table = pa.Table.from_batches([batch])
            if not all(keep_mask):
                rejected_rows += batch_table.filter(pc.invert(pa.array(keep_mask))).to_pylist()
                batch_table = batch_table.filter(pa.array(keep_mask))
            if not batch_table.num_rows:
                continue
            column = batch_table.column("embedding").combine_chunks() if reuse else None
            if column is not None and column.null_count == 0:
                vecs = np.asarray(column.flatten(), dtype=np.float32).reshape(-1, dim)  # flatten() honours a slice's offset
            else:
                embedder = embedder or self._embedder(get_embedder)
                vecs = embedder.embed([t or "" for t in batch_table.column("text").to_pylist()], batch_size=p.batch_size)
            batches = batch_table.to_batches()
            kept_batches.extend(batches)
            vectors.extend(_split(vecs, [b.num_rows for b in batches]))
        data = sample_rows(iter(kept_batches), iter(vectors), partition, run.stage, lineage, run_id, schema)
        store = SampleStore(uri, table, p.storage_options)
        try:
            result = store.write_partition(data, partition, run_id, diff_rows=p.diff_rows)
            indexes = store.ensure_indexes(p.index_min_rows)
        except StoreError as exc:
            raise StageFailed(f"lance_table {table!r}: {exc}") from None
        self._pass_through(run, kept_batches, rejected_rows)
        meta = {**result.metadata(uri, table), **indexes}
        meta["lance/diff_sample"] = Table(["change", "id", "text"], result.diff_sample)
        if result.dropped_columns:
            meta["lance/columns_not_in_table"] = ", ".join(result.dropped_columns)
        return meta

    def forget_partition(self, run: StageRun) -> dict[str, Any] | None:
        """A takedown: the partition's rows leave the table in a new version tagged
        `removed-<partition>`; earlier versions (and a manifest's tagged pins) keep them as evidence."""
        p = self.params
        uri, table = p.uri or _default_uri(run), p.table or run.stage
        store = SampleStore(uri, table, p.storage_options)
        partition = partition_of(run)
        try:
            if not store.exists():
                return None
            removed = store.remove_partition(partition, f"removed-{partition}")
        except StoreError as exc:
            raise StoreError(f"lance_table {table!r} at {uri}: removing partition {partition!r}: {exc}") from None
        return {"lance": removed} if removed else None

    def _embedder(self, get_embedder):
        try:
            return get_embedder(self.params.model, self.params.max_tokens)
        except EmbeddingModelMissing as exc:
            raise StageFailed(f"lance_table: {exc}") from None

    def _pass_through(self, run: StageRun, kept: list[pa.RecordBatch], rejected: list[dict]) -> None:
        if len(kept) and not rejected:
            for i, f in enumerate(run.input_files):  # unchanged: copy the files as they are
                shutil.copyfile(f, run.output_dir / f"part-{i:05d}.parquet")
        elif kept:
            pq.write_table(pa.Table.from_batches(kept, schema=kept[0].schema), run.output_dir / "part-00000.parquet")
        if rejected:
            with self.drops(run, run.output_schema({})) as drops:
                for row in rejected:  # the kept row has the same id
                    drops.reject(row, "duplicate_id", kept_id=str(row["id"]))


def _embedding_model(schema: pa.Schema) -> str | None:
    """The model that made an upstream `embedding` column (semantic_dedup records it), if any."""
    idx = schema.get_field_index("embedding")
    meta = schema.field(idx).metadata or {} if idx >= 0 else {}
    return meta.get(EMBEDDING_MODEL_KEY.encode(), b"").decode() or None


def _split(vecs, sizes: list[int]) -> list:
    out, start = [], 0
    for n in sizes:
        out.append(vecs[start : start + n])
        start += n
    return out
