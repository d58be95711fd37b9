"""The accepted set of a semantic dedup: the vectors of every document kept so far, across the
partitions of a stage, in a LanceDB table (id, partition, vector). Small sets are searched
exactly in memory; once the table is large enough it gets an ANN index (IVF-PQ over cosine,
results re-ranked on the exact vectors) and is searched through LanceDB."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dagster_llmdata.errors import StoreError
from dagster_llmdata.store.lance_store import connect, sql_str, with_retries

ANN_NPROBES = 32
ANN_REFINE = 20


def accepted_schema(dim: int) -> pa.Schema:
    return pa.schema([pa.field("id", pa.string()), pa.field("partition", pa.string()), pa.field("vector", pa.list_(pa.float32(), dim))])


class GrowingMatrix:
    """Unit rows appended in blocks; `nearest(V)` gives each row of V its most similar row."""

    def __init__(self, dim: int):
        self.data = np.zeros((1024, dim), dtype=np.float32)
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, vecs: np.ndarray, ids: list[str]) -> None:
        need = len(self.ids) + len(ids)
        if need > len(self.data):
            grown = np.zeros((max(need, 2 * len(self.data)), self.data.shape[1]), dtype=np.float32)
            grown[: len(self.ids)] = self.data[: len(self.ids)]
            self.data = grown
        self.data[len(self.ids) : need] = vecs
        self.ids.extend(ids)

    def nearest(self, vecs: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """(cosine distance, id) of each row's nearest accepted vector (inf, None when empty)."""
        if not self.ids:
            return np.full(len(vecs), np.inf, dtype=np.float32), [None] * len(vecs)
        best_sim = np.full(len(vecs), -np.inf, dtype=np.float32)
        best_idx = np.zeros(len(vecs), dtype=np.int64)
        for start in range(0, len(self.ids), 65536):  # bounded memory for the similarity block
            block = vecs @ self.data[start : min(start + 65536, len(self.ids))].T
            idx = block.argmax(axis=1)
            sim = block[np.arange(len(vecs)), idx]
            better = sim > best_sim
            best_sim[better], best_idx[better] = sim[better], idx[better] + start
        return (1.0 - best_sim).astype(np.float32), [self.ids[i] for i in best_idx]


class AcceptedSet:
    """The persisted accepted set of one stage (`uri`/`table`) minus `partition`'s own rows,
    which a re-materialisation of that partition replaces."""

    def __init__(self, uri: str, table: str, dim: int, partition: str, index_min_rows: int, storage_options: dict | None = None):
        self.uri, self.table_name, self.dim, self.partition = uri, table, dim, partition
        self.index_min_rows = index_min_rows
        db = connect(uri, storage_options)
        try:
            self.table = db.create_table(table, schema=accepted_schema(dim), exist_ok=True)
        except Exception as exc:
            if "exist" not in str(exc).lower():
                raise
            self.table = db.open_table(table)
        have = self.table.schema.field("vector").type.list_size
        if have != dim:
            raise StoreError(f"semantic dedup index {table!r} at {uri} holds {have}-dimensional vectors, the model gives {dim}: "
                             "use another index_uri or the model that built it")
        where = f"partition = {sql_str(partition)}"
        with_retries(lambda: self.table.delete(where), f"clearing partition {partition!r} from {table!r}")
        self.rows = self.table.count_rows()
        self.indexed = any(ix.index_type.startswith("IVF") for ix in self.table.list_indices()) if self.rows else False
        self.memory: GrowingMatrix | None = None
        if not self.indexed:  # small: exact search in memory
            self.memory = GrowingMatrix(dim)
            if self.rows:
                data = self.table.search().select(["id", "vector"]).limit(None).to_arrow()
                vecs = np.asarray(data.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(-1, dim)
                self.memory.add(vecs, data.column("id").to_pylist())

    def nearest(self, vecs: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        if self.memory is not None:
            return self.memory.nearest(vecs)
        dist = np.full(len(vecs), np.inf, dtype=np.float32)
        ids: list[str | None] = [None] * len(vecs)
        query = (self.table.search([v for v in vecs]).distance_type("cosine").limit(1).nprobes(ANN_NPROBES)
                 .refine_factor(ANN_REFINE).select(["id"]))
        hits = query.to_arrow()
        for qi, doc_id, d in zip(hits.column("query_index").to_pylist(), hits.column("id").to_pylist(), hits.column("_distance").to_pylist()):
            if d < dist[qi]:
                dist[qi], ids[qi] = d, doc_id
        return dist, ids

    def commit(self, vecs: np.ndarray, ids: list[str]) -> dict:
        """Add this partition's kept vectors (one commit) and index the table once it is large enough."""
        if ids:
            data = pa.table({"id": ids, "partition": [self.partition] * len(ids),
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), self.dim)},
                            schema=accepted_schema(self.dim))
            with_retries(lambda: self.table.add(data), f"adding kept vectors to {self.table_name!r}")
        total = self.table.count_rows()
        built = False
        if total >= self.index_min_rows and not self.indexed:
            partitions = max(1, min(4096, int(np.sqrt(total))))
            with_retries(lambda: self.table.create_index(metric="cosine", index_type="IVF_PQ", num_partitions=partitions,
                                                         num_sub_vectors=self.dim // 8), f"indexing {self.table_name!r}")
            built = True
        elif self.indexed and ids:
            self.table.optimize()  # folds the new rows into the index
        return {"semantic_index_rows": total, "semantic_index_ann": self.indexed or built, "semantic_index_built_now": built}
