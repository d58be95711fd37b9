"""exact_dedup and minhash_dedup: within a partition and, through the stage's persistent index
(`dagster_llmdata.dedup.index`), against every partition that landed before it. First landed
keeps; a dropped duplicate records `kept_id` and `kept_partition` of the doc kept in its place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from dagster_llmdata.dedup.index import DedupIndex, IndexEntry, take_rows
from dagster_llmdata.dedup.minhash import MinhashScheme
from dagster_llmdata.dedup.near import entry_arrays, find_near_duplicates, signatures_of
from dagster_llmdata.dedup.shingles import Shingler
from dagster_llmdata.io.docsteps import row_to_document
from dagster_llmdata.io.parquet_store import iter_batches, list_parquet
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import Operator
from dagster_llmdata.config import OperatorParams

_SPACE = re.compile(r"\s+")
READ_BATCH = 1024


class DedupOperator(Operator):
    """A whole-dataset dedup: runs of its stage over different partitions never overlap (each
    must see what the one before it kept), and what it compared against is in its fingerprint."""

    serial = True
    index_kind: ClassVar[str]
    kinds = ("dedup",)

    def index(self, run: StageRun) -> DedupIndex | None:
        """The stage's index when the run has one (a pipeline stage) and the params want it."""
        stage_root = run.context.stage_root
        if stage_root is None or not self.params.across_partitions:
            return None
        return DedupIndex(Path(stage_root), self.index_kind, self.code_version, self.build_entry)

    def compared_state(self, run: StageRun) -> str:
        index = self.index(run)
        return index.compared_state(run.context.partition) if index is not None else ""

    def later_partitions(self, run: StageRun) -> list[str]:
        """Partitions that landed after this run's: the ones its result may change."""
        index = self.index(run)
        return index.later_partitions(run.context.partition) if index is not None else []

    def forget_partition(self, run: StageRun) -> None:
        index = self.index(run)
        if index is not None:
            index.forget(run.context.partition)

    def build_entry(self, kept_files: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def route(self, run: StageRun, schema: pa.Schema, kept: np.ndarray, kept_id: list, kept_partition: list,
              reason: str, add=None) -> None:
        """Second pass over the input: kept rows to the dataset, the others to rejected with the
        doc kept in their place. `add(row, ordinal)` fills the operator's own columns."""
        ordinal = 0
        with run.kept_writer(schema) as kept_out, self.drops(run, schema) as drops:
            for batch in iter_batches(run.input_files, READ_BATCH):
                for row in batch.to_pylist():
                    if add is not None:
                        add(row, ordinal)
                    if kept[ordinal]:
                        kept_out.write(row_to_document(row))
                    else:
                        drops.reject(row, reason, kept_id=kept_id[ordinal], kept_partition=kept_partition[ordinal])
                    ordinal += 1


def _texts(files: list[str]) -> list[list[str]]:
    return (batch.column("text").to_pylist() for batch in iter_batches(files, READ_BATCH, columns=["text"]))


def _none_to_empty(texts: list[str | None]) -> list[str]:
    return [t or "" for t in texts]


# -- exact ---------------------------------------------------------------------------------------


class ExactDedupParams(OperatorParams):
    lowercase: bool = Field(False, description="Compare texts case-insensitively.")
    collapse_whitespace: bool = Field(True, description="Compare texts with runs of whitespace collapsed to one space and the ends trimmed.")
    across_partitions: bool = Field(True, description="Also drop docs whose text was kept by a partition of this stage that landed earlier (first landed keeps).")


def content_hash(text: str, lowercase: bool, collapse_whitespace: bool) -> str:
    if collapse_whitespace:
        text = _SPACE.sub(" ", text).strip()
    if lowercase:
        text = text.lower()
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))


def _split_hashes(hexes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """128-bit hex digests -> (high, low) uint64 halves."""
    hi = np.fromiter((int(h[:16], 16) for h in hexes), dtype=np.uint64, count=len(hexes))
    lo = np.fromiter((int(h[16:], 16) for h in hexes), dtype=np.uint64, count=len(hexes))
    return hi, lo


def _sorted_hash_arrays(hi: np.ndarray, lo: np.ndarray) -> dict[str, np.ndarray]:
    order = np.lexsort((lo, hi))
    return {"hi": hi[order], "lo": lo[order], "row": order.astype(np.int64)}


class ExactDedup(DedupOperator):
    name = "exact_dedup"
    version = "2"
    description = (
        "Drop docs whose text (whitespace-collapsed, optionally lowercased) equals an earlier doc's: within the "
        "partition and against the docs kept by partitions of this stage that landed before it (an on-disk "
        "index of sorted 128-bit hashes; memory grows with the partition, not the corpus). First landed keeps. "
        "Adds `content_hash`; each dropped copy records `kept_id` and `kept_partition`."
    )
    Params = ExactDedupParams
    produces = {"content_hash": pa.string()}
    index_kind = "exact"

    def _hash(self, text: str | None) -> str:
        return content_hash(text or "", self.params.lowercase, self.params.collapse_whitespace)

    def build_entry(self, kept_files: list[str]) -> dict[str, np.ndarray]:
        hexes = [self._hash(t) for texts in _texts(kept_files) for t in texts]
        return _sorted_hash_arrays(*_split_hashes(hexes))

    def run(self, run: StageRun) -> dict[str, Any]:
        ids: list[str] = []
        hexes: list[str] = []
        for batch in iter_batches(run.input_files, 8192, columns=["id", "text"]):
            ids += [str(i) for i in batch.column(0).to_pylist()]
            hexes += [self._hash(t) for t in batch.column(1).to_pylist()]
        n = len(ids)
        hi, lo = _split_hashes(hexes)
        kept = np.ones(n, dtype=bool)
        kept_id: list[str | None] = [None] * n
        kept_partition: list[str | None] = [None] * n
        partition = run.context.partition
        # within the partition: the first row of each hash keeps
        order = np.lexsort((np.arange(n), lo, hi))
        same = np.zeros(n, dtype=bool)  # sorted position holds the same hash as the one before
        same[1:] = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
        first_of = np.maximum.accumulate(np.where(same, 0, np.arange(n)))  # position of the run's first row
        for pos in np.flatnonzero(same):
            row, first = order[pos], order[first_of[pos]]
            kept[row], kept_id[row], kept_partition[row] = False, ids[first], partition
        # against earlier partitions (oldest first): a first row found there is dropped, with its copies
        index = self.index(run)
        found: dict[int, tuple[str, str]] = {}  # first row -> (kept id, its partition)
        firsts = order[~same]
        n_peer = compared = 0
        for entry in index.entries_before(partition) if index is not None else []:
            compared += 1
            n_peer += len(entry.array("hi"))
            found.update(_seen_in(entry, firsts[[f not in found for f in firsts.tolist()]], hi, lo))
        if found:
            rows_first = order[first_of]  # for each sorted position, the first row of its hash
            for p in np.flatnonzero(np.isin(rows_first, list(found))):
                row = order[p]
                kept[row] = False
                kept_id[row], kept_partition[row] = found[int(rows_first[p])]
        self.route(run, run.output_schema(self.produced_columns()), kept, kept_id, kept_partition, "exact_duplicate",
                   add=lambda row, i: row.__setitem__("content_hash", hexes[i]))
        if index is not None:
            keep = np.flatnonzero(kept)
            index.commit(partition, list_parquet(run.output_dir), _sorted_hash_arrays(hi[keep], lo[keep]))
        return {"hashes_from_other_partitions": n_peer, "partitions_compared": compared}


def _seen_in(entry: IndexEntry, rows: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> dict[int, tuple[str, str]]:
    """Rows whose hash the entry holds -> (id of the entry's kept doc, its partition)."""
    ehi, elo, erow = entry.array("hi"), entry.array("lo"), entry.array("row")
    if len(ehi) == 0 or len(rows) == 0:
        return {}
    pos = np.minimum(np.searchsorted(ehi, hi[rows]), len(ehi) - 1)
    hit = (ehi[pos] == hi[rows]) & (elo[pos] == lo[rows])
    if not hit.any():
        return {}
    kept_ids = entry.take(np.asarray(erow[pos[hit]]), ["id"])["id"]
    return {int(r): (str(k), entry.partition) for r, k in zip(rows[hit], kept_ids)}


# -- near (MinHash) ------------------------------------------------------------------------------


class MinhashParams(OperatorParams):
    shingle: Literal["word", "char"] = Field(
        "word", description="Shingles compared: word n-grams (lowercased words, punctuation dropped) or character n-grams (for text without spaces between words)."
    )
    n_grams: int = Field(3, ge=1, le=32, description="Size of a shingle, in words or characters.")
    num_buckets: int = Field(20, ge=1, le=512, description="LSH bands: docs sharing all hashes of any one band become candidates. More bands catch less similar pairs.")
    hashes_per_bucket: int = Field(3, ge=1, le=64, description="MinHash values per band. More per band demand more similarity before two docs become candidates.")
    verify_threshold: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Exact Jaccard similarity of the shingle sets a candidate pair must reach to count as duplicates; 0 takes every LSH candidate (datatrove's behaviour).",
    )
    seed: int = Field(1, description="Seed of the MinHash hash functions; the same seed gives the same signatures.")
    across_partitions: bool = Field(True, description="Also drop near copies of docs kept by partitions of this stage that landed earlier (first landed keeps).")


class MinhashDedup(DedupOperator):
    name = "minhash_dedup"
    version = "2"
    description = (
        "Near-duplicate removal: MinHash signatures computed with NumPy over whole batches, LSH bands, every "
        "candidate pair checked by exact Jaccard (verify_threshold), clusters keep their earliest doc. Within the "
        "partition and against the docs kept by partitions that landed before it (a persistent on-disk LSH "
        "index). Each dropped doc records `kept_id` and `kept_partition`. Defaults (word 3-grams, 20 bands x 3, "
        "Jaccard >= 0.5) catch copies with up to ~10% of words changed; datatrove's defaults are shingle=word, "
        "n_grams=5, num_buckets=14, hashes_per_bucket=8, verify_threshold=0."
    )
    Params = MinhashParams
    index_kind = "minhash"

    @property
    def scheme(self) -> MinhashScheme:
        p = self.params
        return MinhashScheme(Shingler(p.shingle, p.n_grams), p.num_buckets, p.hashes_per_bucket, p.seed)

    def build_entry(self, kept_files: list[str]) -> dict[str, np.ndarray]:
        scheme = self.scheme
        return entry_arrays(scheme, signatures_of(scheme, map(_none_to_empty, _texts(kept_files))))

    def run(self, run: StageRun) -> dict[str, Any]:
        scheme = self.scheme
        ids = [str(i) for batch in iter_batches(run.input_files, 65536, columns=["id"]) for i in batch.column(0).to_pylist()]
        sig = signatures_of(scheme, map(_none_to_empty, _texts(run.input_files)))
        partition = run.context.partition
        index = self.index(run)
        earlier = list(index.entries_before(partition)) if index is not None else []
        found = find_near_duplicates(
            scheme, self.params.verify_threshold, sig, ids,
            lambda ordinals: _none_to_empty(take_rows(run.input_files, ordinals, ["text"])["text"]), earlier,
        )
        kept_partition = [p if p is not None or k else partition for p, k in zip(found.kept_partition, found.kept)]
        self.route(run, run.output_schema(self.produced_columns()), found.kept, found.kept_id, kept_partition, "near_duplicate")
        if index is not None:
            index.commit(partition, list_parquet(run.output_dir), entry_arrays(scheme, sig[found.kept]))
        return {
            "duplicate_clusters": found.stats["clusters"],
            "candidate_pairs": found.stats["candidate_pairs"],
            "verified_pairs": found.stats["verified_pairs"],
            "partitions_compared": len(earlier),
            "dropped_for_earlier_partitions": sum(1 for p in found.kept_partition if p is not None),
        }
