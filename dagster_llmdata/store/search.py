"""Search a sample table: by meaning (vector), by words (full text, BM25), or both (hybrid,
reciprocal-rank fusion), with an optional SQL filter, at the latest version or a pinned one.
What `llmdata search` prints and what the agent reads to look at examples."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from dagster_llmdata.errors import StoreError
from dagster_llmdata.store.lance_store import MODEL_KEY, VECTOR, has_fts_index, open_table, vector_dim
from dagster_llmdata.store.embed import get_embedder

SearchMode = Literal["vector", "fts", "hybrid"]
DEFAULT_MODEL = "minilm-l6-static"
SHOWN = ["id", "text", "domain", "lang", "source", "scores", "partition", "stage", "lineage", "run_id"]


@dataclass
class Hit:
    id: str
    score: float  # higher is better: cosine similarity, BM25, or fused relevance
    text: str
    domain: str | None = None
    lang: str | None = None
    source: str | None = None
    partition: str | None = None
    stage: str | None = None
    run_id: str | None = None
    lineage: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_model(tbl) -> str:
    """The embedding model the table's vectors came from (kept in the table's schema metadata)."""
    meta = tbl.schema.metadata or {}
    return meta.get(MODEL_KEY, DEFAULT_MODEL.encode()).decode()








def search_samples(
    query: str | np.ndarray | list[float],
    uri: str,
    table: str,
    mode: SearchMode = "vector",
    where: str | None = None,
    k: int = 10,
    version: int | str | None = None,
    storage_options: dict[str, str] | None = None,
    use_index: bool = True,
) -> list[Hit]:
    """Top `k` samples of `table` for `query` (text; or a vector for mode='vector'). `where` is a
    SQL filter over the table's columns (`domain = 'code' AND quality_score > 0.5`)."""
    if k < 1:
        raise StoreError("k (-n) must be at least 1")
    tbl = open_table(uri, table, storage_options, version)
    if tbl.count_rows() == 0:
        raise StoreError(f"table {table!r} at {uri} is empty (version {tbl.version}): nothing to search")
    if mode in ("fts", "hybrid") and not has_fts_index(tbl):
        raise StoreError(f"table {table!r} has no full-text index; it is built when a lance_table stage writes the table "
                         "(or call dagster_llmdata.store.search.ensure_fts_index on it)")
    if mode not in ("vector", "fts", "hybrid"):
        raise StoreError(f"unknown search mode {mode!r}; use vector, fts or hybrid")
    vec = None
    if mode != "fts":
        vec = _query_vector(query, tbl)
    try:
        if mode == "hybrid":  # reciprocal-rank fusion of the two rankings, each over more candidates than k
            depth = max(2 * k, 20)
            ranked = [_query(tbl, m, query, vec, where, depth, use_index) for m in ("vector", "fts")]
            return _fuse(ranked, k)
        return _query(tbl, mode, query, vec, where, k, use_index)
    except ValueError as exc:  # lance reports a bad filter (and other bad input) as ValueError
        text = str(exc).lower()
        if where and any(w in text for w in ("parse", "sql", "field", "column", "schema")):
            raise StoreError(f"bad --where filter {where!r}: {_first_line(exc)}") from None
        raise StoreError(f"search failed: {_first_line(exc)}") from None


def _query(tbl, mode: str, query, vec, where: str | None, k: int, use_index: bool) -> list[Hit]:
    if mode == "vector":
        q = tbl.search(vec, vector_column_name=VECTOR).distance_type("cosine")
        if not use_index:
            q = q.bypass_vector_index()
    else:
        q = tbl.search(str(query), query_type="fts")
    if where:
        q = q.where(where, prefilter=True)
    scoring = ["_distance"] if mode == "vector" else ["_score"]
    return [_hit(row, mode) for row in q.select(SHOWN + scoring).limit(k).to_arrow().to_pylist()]


RRF_K = 60


def _fuse(rankings: list[list[Hit]], k: int) -> list[Hit]:
    """Reciprocal-rank fusion: score = sum over rankings of 1 / (60 + rank)."""
    fused: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda i: (-fused[i], i))[:k]
    return [dataclasses.replace(hits[i], score=round(fused[i], 6)) for i in order]


def _query_vector(query, tbl) -> np.ndarray:
    dim = vector_dim(tbl.schema)
    if isinstance(query, str):

        vec = get_embedder(table_model(tbl), 128).embed([query])[0]
    else:
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim:
        raise StoreError(f"query vector has {vec.shape[0]} dimensions; the table's vectors have {dim}")
    return vec


def _hit(row: dict, mode: str) -> Hit:
    if mode == "vector":
        score = 1.0 - float(row.get("_distance", 1.0))
    else:
        score = float(row.get("_score", 0.0))
    return Hit(
        id=row["id"], score=round(score, 6), text=row.get("text") or "", domain=row.get("domain"), lang=row.get("lang"),
        source=row.get("source"), partition=row.get("partition"), stage=row.get("stage"), run_id=row.get("run_id"),
        lineage=json.loads(row["lineage"]) if row.get("lineage") else [], scores=json.loads(row["scores"]) if row.get("scores") else {},
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


__all__ = ["Hit", "SearchMode", "ensure_fts_index", "search_samples"]
