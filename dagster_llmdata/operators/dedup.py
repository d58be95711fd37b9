"""exact_dedup and minhash_dedup. A dropped duplicate records the id of the doc kept in its place."""

from __future__ import annotations

import re
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from ..io.docsteps import DatasetWriter, mark_dropped, row_to_document
from ..io.parquet_store import iter_batches, list_parquet
from ..stage_run import StageRun
from .base import DatatroveLanguage, Operator, OperatorParams

_SPACE = re.compile(r"\s+")


class ExactDedupParams(OperatorParams):
    lowercase: bool = Field(False, description="Compare texts case-insensitively.")
    collapse_whitespace: bool = Field(True, description="Compare texts with runs of whitespace collapsed to one space and the ends trimmed.")
    across_partitions: bool = Field(True, description="Also drop docs whose text was already kept in another partition of this stage.")


def content_hash(text: str, lowercase: bool, collapse_whitespace: bool) -> str:
    if collapse_whitespace:
        text = _SPACE.sub(" ", text).strip()
    if lowercase:
        text = text.lower()
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))


class ExactDedupStep(PipelineStep):
    """Keeps the first doc of each content hash; later copies go to the rejected dataset."""

    name = "🫂 exact dedup"
    type = "🫂 - DEDUP"

    def __init__(self, stage: str, params: ExactDedupParams, seen: dict[str, str], rejected: DatasetWriter):
        super().__init__()
        self.stage, self.params, self.seen, self.rejected = stage, params, seen, rejected

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.rejected as rejected:
            for doc in data:
                self.stat_update("total")
                h = content_hash(doc.text, self.params.lowercase, self.params.collapse_whitespace)
                doc.metadata["content_hash"] = h
                kept = self.seen.get(h)
                if kept is None:
                    self.seen[h] = doc.id
                    self.stat_update("forwarded")
                    yield doc
                else:
                    self.stat_update("dropped_exact_duplicate")
                    rejected.write(mark_dropped(doc, self.stage, "exact_duplicate", kept_id=kept), rank)


class ExactDedup(Operator):
    name = "exact_dedup"
    version = "1"
    description = (
        "Drop docs whose text (whitespace-collapsed, optionally lowercased) is identical to an earlier doc, "
        "within the partition and against docs already kept in the stage's other partitions. Adds "
        "`content_hash`; each dropped copy records `kept_id`."
    )
    Params = ExactDedupParams
    produces = {"content_hash": pa.string()}
    kinds = ("datatrove", "dedup")

    def run(self, run: StageRun) -> dict[str, Any]:
        seen: dict[str, str] = {}
        if self.params.across_partitions:
            for folder in run.context.get("peer_output_dirs", []):
                files = [f for f in list_parquet(folder) if "content_hash" in pq.read_schema(f).names]
                for batch in iter_batches(files, batch_size=65536, columns=["content_hash", "id"]):
                    seen.update(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()))
        n_peer = len(seen)
        schema = run.output_schema(self.produced_columns())
        step = ExactDedupStep(run.stage, self.params, seen, run.rejected_writer(schema))
        # one global view of hashes: a single task
        run.execute([run.reader(), step, run.kept_writer(schema)], tasks=1)
        return {"hashes_from_other_partitions": n_peer}


class MinhashParams(OperatorParams):
    n_grams: int = Field(5, ge=1, description="Size, in words, of the shingles whose sets are compared.")
    num_buckets: int = Field(14, ge=1, description="LSH bands: docs sharing all hashes of any one band become duplicate candidates. More bands catch less similar pairs.")
    hashes_per_bucket: int = Field(8, ge=1, description="MinHash values per band. More per band demand more similarity.")
    seed: int = Field(1, description="Seed of the MinHash permutations; the same seed gives the same signatures.")
    hash_precision: Literal[32, 64] = Field(64, description="Bits per MinHash value; 32 halves signature storage at a small risk of false collisions.")
    language: DatatroveLanguage = "eng"


class MinhashDedup(Operator):
    name = "minhash_dedup"
    version = "1"
    description = (
        "Near-duplicate removal with datatrove's four MinHash stages (signatures, LSH buckets, union-find "
        "clusters, filter). One doc per cluster is kept; each dropped doc records `kept_id`. Params: n_grams, "
        "num_buckets, hashes_per_bucket (threshold ~ (1/num_buckets)^(1/hashes_per_bucket)), seed."
    )
    Params = MinhashParams
    produces = {"minhash_cluster_id": pa.int64()}
    kinds = ("datatrove", "dedup")

    def run(self, run: StageRun) -> dict[str, Any]:
        from datatrove.pipeline.dedup import (
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )
        from datatrove.pipeline.dedup.minhash import MinhashConfig
        from datatrove.utils.hashing import HashConfig

        p = self.params
        config = MinhashConfig(
            n_grams=p.n_grams,
            num_buckets=p.num_buckets,
            hashes_per_bucket=p.hashes_per_bucket,
            seed=p.seed,
            hash_config=HashConfig(precision=p.hash_precision),
        )
        work = run.work_dir
        sigs, buckets, clusters = (str(work / d) for d in ("signatures", "buckets", "clusters"))
        tasks = run.tasks
        run.execute([run.reader(), MinhashDedupSignature(sigs, config=config, language=p.language)], tasks=tasks, name="signatures")
        run.execute([MinhashDedupBuckets(sigs, buckets, config=config)], tasks=p.num_buckets, name="buckets")
        run.execute([MinhashDedupCluster(buckets, clusters, config=config, save_cluster_id=True)], tasks=1, name="clusters")

        schema = run.output_schema(self.produced_columns())
        # removed docs go to a scratch folder first: their kept_id is only known once the kept
        # member of each cluster has been written
        scratch = work / "removed"
        removed_writer = DatasetWriter(str(scratch), schema)
        run.execute(
            [run.reader(), MinhashDedupFilter(clusters, exclusion_writer=removed_writer, load_cluster_ids=True), run.kept_writer(schema)],
            tasks=tasks,
            name="filter",
        )
        return {"duplicate_clusters": self._write_rejected_with_kept_ids(run, scratch, schema)}

    def _write_rejected_with_kept_ids(self, run: StageRun, scratch, schema: pa.Schema) -> int:
        """Routes the removed docs to the rejected dataset; returns how many clusters they came from."""
        kept_by_cluster: dict[int, str] = {}
        for batch in iter_batches(list_parquet(run.output_dir), batch_size=65536, columns=["minhash_cluster_id", "id"]):
            for cid, doc_id in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                if cid is not None and cid >= 0:
                    kept_by_cluster.setdefault(cid, doc_id)
        clusters: set[int] = set()
        with run.rejected_writer(schema) as rejected:
            for batch in iter_batches(list_parquet(scratch), batch_size=1024):
                for row in batch.to_pylist():
                    clusters.add(row["minhash_cluster_id"])
                    kept_id = kept_by_cluster.get(row["minhash_cluster_id"])
                    rejected.write(mark_dropped(row_to_document(row), run.stage, "near_duplicate", kept_id=kept_id))
        return len(clusters)


