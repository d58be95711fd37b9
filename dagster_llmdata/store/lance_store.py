"""A versioned sample store: one LanceDB table of curated documents (id, text, domain, lang,
source, scores, an embedding vector, and the lineage of the stage that wrote them).

Each partition of a stage owns its rows (`partition` column). Writing a partition is ONE Lance
commit (a merge-insert keyed on id that also deletes the partition's rows that are gone), so a
reader sees the old partition or the new one, never half of each. Every write is tagged (the
Dagster run id), and reports rows added / updated / removed against the previous version plus a
small sample of what changed. Tagged versions survive `cleanup` (Lance never prunes a tagged
version), which is what lets a mixture manifest pin them."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dagster_llmdata.errors import StoreError

# written by every materialisation; numeric columns of the stage are copied beside them
SAMPLE_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("lang", pa.string()),
    pa.field("source", pa.string()),
    pa.field("scores", pa.string()),  # JSON object of the stage's numeric columns, for display
    pa.field("partition", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("lineage", pa.string()),  # JSON list: pipeline stages from the source to this one
    pa.field("run_id", pa.string()),
]
VECTOR = "vector"
MODEL_KEY = b"llmdata.embedding_model"  # schema metadata: the model the vectors came from
# columns of a stage that are not scores even when numeric
NOT_SCORES = {"value", "threshold", "n_tokens", "minhash_cluster_id", "embedding"}
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CONFLICT_WORDS = ("conflict", "retryable", "concurrent", "commit")


def sample_schema(dim: int, score_columns: dict[str, pa.DataType] | None = None, model: str | None = None) -> pa.Schema:
    fields = list(SAMPLE_FIELDS)
    fields += [pa.field(name, pa.float64()) for name in sorted(score_columns or {})]
    fields.append(pa.field(VECTOR, pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata={MODEL_KEY: model.encode()} if model else None)


def score_columns(schema: pa.Schema) -> dict[str, pa.DataType]:
    """A stage's numeric columns: its scores (quality_score, lang_score, ...)."""
    return {
        f.name: f.type for f in schema
        if (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)) and f.name not in NOT_SCORES
    }


def tag_name(text: str) -> str:
    """A Lance tag name (letters, digits, '.', '-', '_') for a run id or manifest name."""
    return _TAG_UNSAFE.sub("_", text)[:200]


@dataclass
class WriteResult:
    version: int
    previous_version: int
    tag: str
    rows_added: int
    rows_updated: int
    rows_removed: int
    rows_total: int
    attempts: int
    diff_sample: list[dict[str, Any]] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)

    def metadata(self, uri: str, table: str) -> dict[str, Any]:
        return {
            "lance/uri": uri, "lance/table": table, "lance/version": self.version,
            "lance/previous_version": self.previous_version, "lance/tag": self.tag,
            "lance/rows_added": self.rows_added, "lance/rows_updated": self.rows_updated,
            "lance/rows_removed": self.rows_removed, "lance/rows_total": self.rows_total,
            "lance/commit_attempts": self.attempts,
        }


def connect(uri: str, storage_options: dict[str, str] | None = None):
    import lancedb

    try:
        return lancedb.connect(uri, storage_options=storage_options or None)
    except Exception as exc:  # a bad scheme or unreachable bucket: say which URI
        raise StoreError(f"cannot open LanceDB at {uri!r}: {exc}") from None


def open_table(uri: str, table: str, storage_options: dict[str, str] | None = None, version: int | str | None = None):
    """An existing table (at `version`, a number or a tag, if given), with a clear error when it is not there."""
    db = connect(uri, storage_options)
    try:
        tbl = db.open_table(table)
    except (FileNotFoundError, ValueError) as exc:
        known = _table_names(db)
        raise StoreError(f"no LanceDB table {table!r} at {uri} (tables there: {', '.join(known) or 'none'})") from exc
    if version is not None:
        try:
            tbl.checkout(version)
        except Exception as exc:
            raise StoreError(f"table {table!r} at {uri} has no version {version!r} (was it cleaned up?): {exc}") from None
    return tbl


def _table_names(db) -> list[str]:
    try:
        return list(db.list_tables().tables)
    except Exception:
        return list(db.table_names())


def is_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in _CONFLICT_WORDS)


def with_retries(fn, what: str, attempts: int = 8, base_delay_s: float = 0.05):
    """Run a commit; a concurrent writer's conflict is retried with backoff, then reported."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(), attempt
        except Exception as exc:
            if not is_conflict(exc) or attempt == attempts:
                if is_conflict(exc):
                    raise StoreError(f"{what}: another writer kept committing to the same table; gave up after {attempts} attempts ({exc})") from None
                raise
            time.sleep(base_delay_s * (2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class SampleStore:
    """One LanceDB table of samples at `uri` (a local path, or any object-store URI LanceDB
    supports: s3://, gs://, az://, with `storage_options` for credentials/endpoints)."""

    def __init__(self, uri: str, table: str, storage_options: dict[str, str] | None = None):
        self.uri, self.table_name, self.storage_options = str(uri), table, storage_options or None

    def exists(self) -> bool:
        return self.table_name in _table_names(connect(self.uri, self.storage_options))

    def table(self, version: int | str | None = None):
        return open_table(self.uri, self.table_name, self.storage_options, version)

    def _create_or_open(self, schema: pa.Schema):
        db = connect(self.uri, self.storage_options)
        try:
            tbl = db.create_table(self.table_name, schema=schema, exist_ok=True)
        except Exception as exc:  # two first writers at once: the loser opens the winner's table
            if "exist" not in str(exc).lower():
                raise
            tbl = db.open_table(self.table_name)
        dim = vector_dim(tbl.schema)
        want = vector_dim(schema)
        if dim != want:
            raise StoreError(f"table {self.table_name!r} at {self.uri} holds {dim}-dimensional vectors; these are {want}-dimensional "
                             "(another embedding model?): write to a new table")
        return tbl

    def write_partition(self, data: pa.Table, partition: str, run_id: str, diff_rows: int = 5) -> WriteResult:
        """Replace `partition`'s rows with `data` (sample_schema rows) in one commit; tag it."""
        if data.num_rows and pc.any(pc.is_null(data.column("id"))).as_py():
            raise StoreError("rows without an id cannot be stored (the id is the table's key)")
        tbl = self._create_or_open(data.schema)
        data, dropped = conform(data, tbl.schema)
        where = f"partition = {sql_str(partition)}"
        old_ids = set(_column(tbl.search().where(where).select(["id"]).limit(None).to_arrow(), "id")) if tbl.count_rows() else set()
        new_ids = set(data.column("id").to_pylist())
        removed_ids = sorted(old_ids - new_ids)[:diff_rows]
        removed_rows = _rows_by_id(tbl, removed_ids)
        previous = tbl.version

        def commit():
            tbl.checkout_latest()
            builder = tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
            return builder.when_not_matched_by_source_delete(where).execute(data)

        result, attempts = with_retries(commit, f"writing partition {partition!r} to {self.table_name!r}")
        version = result.version
        tag = self._tag(tbl, f"run-{run_id}", version)
        added = [r for r in data.select(["id", "text"]).to_pylist() if r["id"] not in old_ids][:diff_rows]
        sample = [{"change": "added", "id": r["id"], "text": _snippet(r["text"])} for r in added]
        sample += [{"change": "removed", "id": r["id"], "text": _snippet(r["text"])} for r in removed_rows]
        return WriteResult(
            version=version, previous_version=previous, tag=tag,
            rows_added=result.num_inserted_rows, rows_updated=result.num_updated_rows, rows_removed=result.num_deleted_rows,
            rows_total=tbl.count_rows(), attempts=max(attempts, getattr(result, "num_attempts", 1)),
            diff_sample=sample, dropped_columns=dropped,
        )

    def remove_partition(self, partition: str, tag: str) -> dict[str, Any] | None:
        """Delete `partition`'s rows in one commit and tag the new version `tag` (a takedown: the
        versions before it stay, tagged ones survive cleanup, as evidence of what was there).
        None when the table holds no rows of it (no empty version is written)."""
        tbl = self.table()
        where = f"partition = {sql_str(partition)}"
        n = tbl.count_rows(where)
        if not n:
            return None
        previous = tbl.version

        def commit():
            tbl.checkout_latest()
            return tbl.delete(where)

        result, _ = with_retries(commit, f"removing partition {partition!r} from {self.table_name!r}")
        version = getattr(result, "version", None) or tbl.version
        return {"uri": self.uri, "table": self.table_name, "version": version, "previous_version": previous,
                "tag": self._tag(tbl, tag, version), "rows_removed": getattr(result, "num_deleted_rows", n),
                "rows_total": tbl.count_rows()}

    def partition_rows(self, partition: str, version: int | str | None = None) -> int:
        """Rows of `partition` in the table (at `version`, a number or tag)."""
        return self.table(version).count_rows(f"partition = {sql_str(partition)}")

    def ensure_indexes(self, vector_min_rows: int) -> dict[str, Any]:
        """A full-text index on `text` always; an ANN index (IVF-PQ, cosine) on the vectors once
        the table holds `vector_min_rows` rows. Index commits come after the tagged data version."""
        tbl = self.table()
        with_retries(lambda: ensure_fts_index(tbl), f"indexing {self.table_name!r} for full-text search")
        rows = tbl.count_rows()
        built = False
        if rows >= vector_min_rows and not has_vector_index(tbl):
            dim = vector_dim(tbl.schema) or 8
            # k-means on a sample (64 vectors a partition, 25 iterations): training cost stays minutes, not tens of
            with_retries(lambda: tbl.create_index(metric="cosine", index_type="IVF_PQ", vector_column_name=VECTOR,
                                                  num_partitions=max(1, min(4096, int(rows ** 0.5))), num_sub_vectors=max(1, dim // 8),
                                                  sample_rate=64, max_iterations=25),
                         f"building the vector index of {self.table_name!r}")
            built = True
        return {"lance/fts_index": True, "lance/vector_index": built or has_vector_index(tbl)}

    def _tag(self, tbl, name: str, version: int) -> str:
        """Tag `version`; a run that writes several partitions gets run-<id>, run-<id>.2, ..."""
        base = tag_name(name)
        for n in range(1, 10_000):
            candidate = base if n == 1 else f"{base}.{n}"
            try:
                tbl.tags.create(candidate, version)
                return candidate
            except Exception as exc:
                if "exist" not in str(exc).lower() and "conflict" not in str(exc).lower():
                    raise
        raise StoreError(f"could not tag version {version} of {self.table_name!r} as {base}")

    def tag(self, name: str, version: int) -> str:
        """Tag a version under a name of your own (a manifest pins its versions this way)."""
        tbl = self.table()
        tag = tag_name(name)
        existing = tbl.tags.list().get(tag)
        if existing is not None:
            if existing["version"] != version:
                raise StoreError(f"tag {tag!r} of {self.table_name!r} already points at version {existing['version']}, not {version}")
            return tag
        tbl.tags.create(tag, version)
        return tag

    def tags(self) -> dict[str, int]:
        return {name: info["version"] for name, info in self.table().tags.list().items()}

    def versions(self) -> list[dict[str, Any]]:
        tags_by_version: dict[int, list[str]] = {}
        for name, version in self.tags().items():
            tags_by_version.setdefault(version, []).append(name)
        return [{"version": v["version"], "timestamp": str(v["timestamp"]), "rows": int(v["metadata"].get("total_rows", 0) or 0),
                 "tags": sorted(tags_by_version.get(v["version"], []))} for v in self.table().list_versions()]

    def cleanup(self, older_than: timedelta, protect: Iterable[int] = ()) -> dict[str, Any]:
        """Delete versions older than `older_than`, except tagged ones (Lance keeps every tagged
        version) and `protect` (versions a manifest pins: refused unless they are tagged)."""
        tagged = set(self.tags().values())
        unprotected = sorted(set(protect) - tagged)
        if unprotected:
            raise StoreError(f"versions {unprotected} of {self.table_name!r} are pinned by a manifest but not tagged; "
                             "tag them (`SampleStore.tag`) before cleaning up")
        # pylance's cleanup skips tagged versions (lancedb's own refuses to run while any exist)
        stats = self.table().to_lance().cleanup_old_versions(older_than=older_than, error_if_tagged_old_versions=False)
        return {"bytes_removed": stats.bytes_removed, "old_versions_removed": stats.old_versions, "kept_tagged_versions": sorted(tagged)}


def vector_dim(schema: pa.Schema) -> int | None:
    idx = schema.get_field_index(VECTOR)
    if idx < 0:
        return None
    dtype = schema.field(idx).type
    return dtype.list_size if pa.types.is_fixed_size_list(dtype) else None


def conform(data: pa.Table, schema: pa.Schema) -> tuple[pa.Table, list[str]]:
    """`data` in the table's schema: a column the table lacks is dropped (and named), one the
    data lacks is null."""
    dropped = [n for n in data.column_names if schema.get_field_index(n) < 0]
    columns = []
    for f in schema:
        if f.name in data.column_names:
            columns.append(data.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(data.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema), dropped


def sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if table.num_rows else []


def _rows_by_id(tbl, ids: list[str]) -> list[dict]:
    if not ids:
        return []
    where = "id IN (" + ", ".join(sql_str(i) for i in ids) + ")"
    return tbl.search().where(where).select(["id", "text"]).limit(len(ids)).to_arrow().to_pylist()


def _snippet(text: str | None, n: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def sample_rows(batches: Iterator[pa.RecordBatch], vectors: Iterator, partition: str, stage: str, lineage: list[str], run_id: str,
                schema: pa.Schema) -> pa.Table:
    """Stage rows (+ their vectors, one array per batch) -> a table in the store's `schema`."""
    scores = [f.name for f in schema if f.name not in {x.name for x in SAMPLE_FIELDS} and f.name != VECTOR]
    dim = vector_dim(schema)
    parts = []
    for batch, vecs in zip(batches, vectors):
        n = batch.num_rows
        names = batch.schema.names
        cols: dict[str, Any] = {}
        for f in SAMPLE_FIELDS:
            if f.name in names:
                cols[f.name] = batch.column(f.name).cast(f.type)
        score_values = {s: batch.column(s).to_pylist() for s in scores if s in names}
        cols["scores"] = pa.array([json.dumps({k: v[i] for k, v in score_values.items()}) for i in range(n)], pa.string())
        cols["partition"] = pa.array([partition] * n, pa.string())
        cols["stage"] = pa.array([stage] * n, pa.string())
        cols["lineage"] = pa.array([json.dumps(lineage)] * n, pa.string())
        cols["run_id"] = pa.array([run_id] * n, pa.string())
        for s in scores:
            cols[s] = batch.column(s).cast(pa.float64()) if s in names else pa.nulls(n, pa.float64())
        cols[VECTOR] = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)
        parts.append(pa.Table.from_arrays([cols.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


__all__ = ["SampleStore", "WriteResult", "connect", "open_table", "sample_schema", "score_columns", "tag_name"]


def has_fts_index(tbl) -> bool:
    return any(ix.index_type == "FTS" for ix in tbl.list_indices())


def has_vector_index(tbl) -> bool:
    return any(ix.index_type.startswith("IVF") for ix in tbl.list_indices())


def ensure_fts_index(tbl) -> None:
    from lancedb.index import FTS

    if not has_fts_index(tbl):
        tbl.create_index("text", config=FTS())
