"""Layer 2, the versioned sample store on LanceDB: curated documents with embeddings (lance_table),
semantic dedup's accepted set, search, tagged versions. Heavy parts (the
embedding models) come with the `embed` extra and load lazily."""

from __future__ import annotations

from dagster_llmdata.store.embed import DIMENSIONS, MODELS, Embedder, get_embedder
from dagster_llmdata.store.lance_store import SampleStore, WriteResult
from dagster_llmdata.store.search import Hit, search_samples

__all__ = [
    "DIMENSIONS", "MODELS", "Embedder", "Hit", "SampleStore", "WriteResult",
    "get_embedder", "search_samples",
]
