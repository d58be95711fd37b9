"""Search over a LanceDB sample table of 100k rows of real text: queries/s by meaning without and
with the ANN index (and the index's recall@10 against the exact answer), by words (BM25) and
hybrid; plus the write of the table itself (embed + commit).

    .venv/bin/python bench/search.py              # 100,000 rows, 200 queries per mode
    .venv/bin/python bench/search.py --rows 20000
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("LLMDATA_EMBED_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, bench_args, save  # noqa: E402


def texts(n: int) -> list[str]:
    """n distinct real texts: windows of 3 sentences over the paragraphs Python ships."""
    from dagster_llmdata.demo.sample_corpus import _stdlib_files, docstrings_and_code, python_docs

    sources = [d["text"] for d in python_docs()] + [d["text"] for d in docstrings_and_code(_stdlib_files())[0]]
    sentences = [s for src in sources for s in re.split(r"(?<=[.!?])\s+", " ".join(src.split())) if len(s.split()) >= 4]
    out, seen = [], set()
    for width in (3, 2, 4, 5, 1, 6, 7, 8):
        for i in range(len(sentences) - width + 1):
            t = " ".join(sentences[i : i + width])
            if t not in seen:
                seen.add(t)
                out.append(t)
            if len(out) >= n:
                return out
    return out


def main() -> None:
    args = bench_args(rows=100_000, queries=100).parse_args()
    import numpy as np
    import pyarrow as pa

    from dagster_llmdata.store import SampleStore, get_embedder, search_samples
    from dagster_llmdata.store.lance_store import sample_rows, sample_schema
    from dagster_llmdata.store.lance_store import ensure_fts_index

    work = WORK / "search"
    shutil.rmtree(work, ignore_errors=True)
    docs = texts(args.rows + args.queries)
    queries, rows = docs[: args.queries], docs[args.queries :]
    assert len(queries) == args.queries and len(rows) == args.rows, (len(queries), len(rows))
    model = "minilm-l6-static"
    embedder = get_embedder(model)
    t0 = time.perf_counter()
    vecs = embedder.embed(rows)
    embed_s = time.perf_counter() - t0
    schema = sample_schema(embedder.dim, {}, model)
    batch = pa.record_batch({"id": [f"r{i}" for i in range(len(rows))], "text": rows,
                             "domain": [["docs", "code", "prose"][i % 3] for i in range(len(rows))]})
    table = sample_rows(iter([batch]), iter([vecs]), "all", "bench", ["bench/raw", "bench/store"], "bench", schema)
    store = SampleStore(str(work / "lance"), "samples")
    t0 = time.perf_counter()
    store.write_partition(table, "all", "bench")
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ensure_fts_index(store.table())
    fts_index_s = time.perf_counter() - t0
    uri = str(work / "lance")

    def rate(mode: str, use_index: bool = True, where: str | None = None) -> tuple[float, list]:
        answers = []
        t = time.perf_counter()
        for q in queries:
            answers.append([h.id for h in search_samples(q, uri, "samples", mode=mode, k=10, use_index=use_index, where=where)])
        return round(len(queries) / (time.perf_counter() - t), 1), answers

    results = {}
    results["vector_exact_qps"], exact = rate("vector", use_index=False)
    results["fts_qps"], _ = rate("fts")
    results["hybrid_qps"], _ = rate("hybrid")
    results["vector_filtered_exact_qps"], _ = rate("vector", use_index=False, where="domain = 'code'")
    t0 = time.perf_counter()
    store.ensure_indexes(0)
    results["vector_index_build_s"] = round(time.perf_counter() - t0, 1)
    results["vector_ann_qps"], ann = rate("vector", use_index=True)
    results["ann_recall_at_10"] = round(float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ann, exact)])), 4)
    results["vector_filtered_ann_qps"], _ = rate("vector", use_index=True, where="domain = 'code'")
    save("search", {"rows": len(rows), "queries": len(queries), "k": 10, "model": model, "embed_docs_per_s": round(len(rows) / embed_s, 1),
                    "write_s": round(write_s, 1), "fts_index_s": round(fts_index_s, 1), "load_average": os.getloadavg(), **results})


if __name__ == "__main__":
    main()
