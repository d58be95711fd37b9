"""Semantic dedup on real paragraphs with planted near-duplicates (word substitutions, reordered
sentences, paraphrase-like edits): precision / recall of the removed set per embedding model at
its default bound, against minhash_dedup on the same set, and the throughput of embed + dedup on
CPU (docs/s, the operator's own time, LLMDATA_EMBED_THREADS=2).

    .venv/bin/python bench/semantic_dedup.py                 # 1,800 paragraphs, 300 planted copies
    .venv/bin/python bench/semantic_dedup.py --docs 600       # smaller
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LLMDATA_EMBED_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, bench_args, quiet_stderr, save  # noqa: E402


def main() -> None:
    ap = bench_args(docs=1800, prefix_docs=300)
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dagster_llmdata import ExecutorConfig, apply_operator
    from dagster_llmdata.demo.planted_store import planted_set

    work = WORK / "semantic_dedup"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    planted = planted_set(args.docs)
    build_s = time.perf_counter() - started
    src = work / f"planted-{args.docs}.parquet"
    pq.write_table(pa.table({"id": [d["id"] for d in planted.docs], "text": [d["text"] for d in planted.docs],
                             "domain": [d["kind"] for d in planted.docs]}), src)
    kinds = {d["id"]: d["kind"] for d in planted.docs}

    def score(out: Path) -> dict:
        removed = set(pq.read_table(out.with_name(out.stem + ".rejected.parquet"), columns=["id"]).column("id").to_pylist())
        s = planted.score(removed)
        for kind in ("substitution", "reorder", "paraphrase"):
            planted_kind = {c for c in planted.copies if kinds[c] == kind}
            s[f"recall_{kind}"] = round(len(removed & planted_kind) / len(planted_kind), 4) if planted_kind else None
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}

    runs = []
    # (params, on the whole set: precision/recall too; else throughput on the first prefix_docs only)
    configs = [
        ({"model": "minilm-l6-static"}, True),  # the default
        ({"model": "minilm-l6-int8", "max_tokens": 128}, True),
        ({"model": "minilm-l6-int8", "max_tokens": 256}, False),
        ({"model": "minilm-l6", "max_tokens": 256}, False),
    ]
    executor = ExecutorConfig(tasks=1, workers=1)
    for params, whole in configs:
        from dagster_llmdata.store.embed import get_embedder

        t0 = time.perf_counter()
        get_embedder(params["model"], params.get("max_tokens", 128))  # load (and distil once) outside the timing
        load_s = time.perf_counter() - t0
        inp = src
        if not whole:  # the slowest models on a prefix, for throughput only (the machine is shared)
            inp = work / f"prefix-{args.prefix_docs}.parquet"
            pq.write_table(pq.read_table(src).slice(0, args.prefix_docs), inp)
        out = work / f"kept-{params['model']}-{params.get('max_tokens', 0)}.parquet"
        with quiet_stderr(work / "log.txt"):
            outcome = apply_operator("semantic_dedup", inp, out, params, executor=executor)
        row = {"operator": "semantic_dedup", **params, "bound": outcome.metadata["semantic_bound"], "docs": outcome.ledger.n_in,
               "seconds": round(outcome.seconds, 2), "docs_per_s": round(outcome.ledger.n_in / outcome.seconds, 1),
               "model_load_s": round(load_s, 1)}
        if inp == src:
            row.update(score(out))
        runs.append(row)
        print(row, flush=True)
    out = work / "kept-minhash.parquet"
    with quiet_stderr(work / "log.txt"):
        outcome = apply_operator("minhash_dedup", src, out, {}, executor=executor)
    runs.append({"operator": "minhash_dedup", "params": "defaults (5-grams, 14x8)", "docs": outcome.ledger.n_in,
                 "seconds": round(outcome.seconds, 2), "docs_per_s": round(outcome.ledger.n_in / outcome.seconds, 1), **score(out)})
    print(runs[-1], flush=True)
    save("semantic_dedup", {"docs": args.docs, "planted_copies": len(planted.copies), "set_build_s": round(build_s, 1),
                            "embed_threads": int(os.environ["LLMDATA_EMBED_THREADS"]), "load_average": os.getloadavg(),
                            "targets": {"precision": 0.99, "recall": 0.95, "docs_per_s": 300}, "runs": runs})


if __name__ == "__main__":
    main()
