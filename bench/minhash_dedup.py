"""Near-dedup at 100k docs, side by side in one run: minhash_dedup (ours, default params) vs
datatrove's MinHash with its defaults (four stages, LocalPipelineExecutor, 2 workers) vs
datasketch's in-memory MinHashLSH, on a planted set from real text (25% of docs are copies with
1-8% of words substituted). Wall time, peak RSS, precision / recall of each.

Then memory growth with the corpus: the corpus is cut into partitions of --partition docs, deduped
one after another through the persistent index; peak RSS of the last partition's run vs the first.

    .venv/bin/python bench/minhash_dedup.py --docs 100000 --growth_partitions 10
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, bench_args, save  # noqa: E402

OURS = {}  # default params
DATATROVE_DEFAULT = {"shingle": "word", "n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8, "verify_threshold": 0.0}


def peak_rss_mb() -> dict:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak over fork + exec) and
    the largest of its finished child processes (datatrove's workers)."""
    status = Path("/proc/self/status").read_text()
    own = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_children_mb": round(children, 1)}


def planted(n_docs: int) -> Path:
    """The planted corpus as one Parquet file (row groups of 5,000) + its ground truth, cached."""
    folder = WORK / f"planted-{n_docs}"
    data = folder / "docs.parquet"
    if data.exists():
        return folder
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dagster_llmdata.demo.planted_duplicates import planted_corpus

    # a quarter of the docs are planted copies: the machine holds ~79k distinct real texts, not 90k
    docs = planted_corpus(n_docs, copy_share=0.25)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [d.id for d in docs], "text": [d.text for d in docs]})
    pq.write_table(table, data, row_group_size=5000)
    (folder / "groups.json").write_text(json.dumps({d.id: d.group for d in docs}))
    return folder


def scores(folder: Path, dropped: dict[str, str | None]) -> dict:
    from dagster_llmdata.demo.planted_duplicates import PlantedDoc, precision_recall

    groups = json.loads((folder / "groups.json").read_text())
    docs = [PlantedDoc(i, "", g) for i, g in groups.items()]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in precision_recall(docs, dropped).items()}


# -- the three contenders, each run in its own process ---------------------------------------------


def run_ours(folder: Path, out: Path, params: dict, workers: int) -> dict[str, str | None]:
    import pyarrow.parquet as pq

    from dagster_llmdata.engine.execute import run_stage
    from dagster_llmdata.io.parquet_store import list_parquet
    from dagster_llmdata.operators import get_operator
    from dagster_llmdata.config import ExecutorConfig
    from dagster_llmdata.io.stage_run import StageRun

    run = StageRun(stage="near", input_files=[str(folder / "docs.parquet")], output_dir=out / "data", rejected_dir=out / "rejected",
                   quarantine_dir=out / "quarantine", work_dir=out / "work",
                   executor=ExecutorConfig(tasks=workers, workers=workers, start_method="fork"))
    outcome = run_stage(get_operator("minhash_dedup")(params), run)
    assert outcome.ledger.balanced
    return {r["id"]: r["kept_id"] for f in list_parquet(out / "rejected") for r in pq.read_table(f, columns=["id", "kept_id"]).to_pylist()}


def run_datatrove(folder: Path, out: Path, params: dict, workers: int) -> dict[str, str | None]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    config = MinhashConfig()  # word 5-grams, 14 buckets x 8 hashes

    def execute(pipeline, name, tasks):
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(out / "logs" / name),
                              start_method="fork").run()

    # the reader splits work by file: the corpus in `workers` files so every worker has work
    import pyarrow.parquet as pq

    src = out / "input"
    src.mkdir(parents=True)
    table = pq.read_table(folder / "docs.parquet")
    step = -(-len(table) // workers)
    for i in range(workers):
        pq.write_table(table.slice(i * step, step), src / f"part-{i}.parquet")
    del table
    reader = ParquetReader(str(src), glob_pattern="*.parquet")
    execute([reader, MinhashDedupSignature(str(out / "sigs"), config=config)], "sigs", workers)
    execute([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)], "buckets", config.num_buckets)
    execute([MinhashDedupCluster(str(out / "buckets"), str(out / "clusters"), config=config, save_cluster_id=True)], "clusters", 1)
    execute([reader, MinhashDedupFilter(str(out / "clusters"), exclusion_writer=ParquetWriter(str(out / "removed")),
                                        load_cluster_ids=True), ParquetWriter(str(out / "kept"))], "filter", workers)
    def rows(name):
        for f in sorted((out / name).glob("*.parquet")):
            yield from pq.read_table(f, columns=["id", "metadata"]).to_pylist()

    kept_by_cluster: dict[int, str] = {}
    for row in rows("kept"):
        cid = (row["metadata"] or {}).get("minhash_cluster_id")
        if cid is not None and cid >= 0:
            kept_by_cluster.setdefault(cid, row["id"])
    return {row["id"]: kept_by_cluster.get((row["metadata"] or {}).get("minhash_cluster_id")) for row in rows("removed")}


def run_datasketch(folder: Path, out: Path, params: dict, workers: int) -> dict[str, str | None]:
    """datasketch's MinHash (128 permutations) + in-memory MinHashLSH on the same word 3-gram
    shingles and Jaccard 0.5 as ours; the first doc inserted in a cluster keeps."""
    import numpy as np
    import pyarrow.parquet as pq
    from datasketch import MinHash, MinHashLSH

    from dagster_llmdata.dedup.shingles import Shingler

    shingler = Shingler("word", 3)
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    dropped: dict[str, str | None] = {}
    kept_of: dict[str, str] = {}
    for batch in pq.ParquetFile(folder / "docs.parquet").iter_batches(batch_size=2000, columns=["id", "text"]):
        ids, texts = batch.column(0).to_pylist(), batch.column(1).to_pylist()
        for doc_id, shingles in zip(ids, shingler.sets(texts)):
            m = MinHash(num_perm=128)
            m.update_batch(np.ascontiguousarray(shingles).view(np.uint8).reshape(-1, 8))
            hits = lsh.query(m)
            if hits:
                first = min(hits, key=lambda h: kept_of.get(h, h))
                dropped[doc_id] = kept_of.get(first, first)
            else:
                lsh.insert(doc_id, m)
    return dropped


CONTENDERS = {"ours": (run_ours, OURS), "ours_datatrove_params": (run_ours, DATATROVE_DEFAULT),
              "datatrove_default": (run_datatrove, {}), "datasketch_lsh": (run_datasketch, {})}


def child(name: str, folder: Path, workers: int) -> None:
    fn, params = CONTENDERS[name]
    out = WORK / f"minhash-{name}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    dropped = fn(folder, out, params, workers)
    wall = time.perf_counter() - start
    result = json.dumps({"wall_s": round(wall, 2), **peak_rss_mb(), **scores(folder, dropped)})
    (folder / f"result-{name}.json").write_text(result)  # kept, so a later --reuse run needs not redo it
    print(result)
    shutil.rmtree(out, ignore_errors=True)


def growth_child(folder: Path, partitions: int, size: int) -> None:
    """Dedup partitions 0..partitions-1 (each `size` docs) through the persistent index, each in a
    fresh process; prints each run's peak RSS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dagster_llmdata.demo.planted_duplicates import substitute_words

    root = WORK / "minhash-growth"
    shutil.rmtree(root, ignore_errors=True)
    base = pq.read_table(folder / "docs.parquet", columns=["text"]).column(0).to_pylist()
    rng = random.Random(1)
    vocabulary = [w for t in base[:2000] for w in t.split()]
    for p in range(partitions):
        # partition 0 is the planted corpus itself; later ones are its texts with 50% of words replaced
        # (real words, new documents: no longer near anything)
        texts = base[:size] if p == 0 else [substitute_words(t, 0.5, vocabulary, rng) for t in base[:size]]
        src = root / "input" / f"p{p:03d}.parquet"
        src.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [f"p{p}-{i}" for i in range(len(texts))], "text": texts}), src, row_group_size=5000)
        proc = subprocess.run([sys.executable, __file__, "--growth_step", str(p), "--corpus", str(src)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        print(proc.stdout.strip().splitlines()[-1], flush=True)


def growth_step(p: int, src: Path) -> None:
    from dagster_llmdata.engine.execute import run_stage
    from dagster_llmdata.io.ledger import save_record
    from dagster_llmdata.operators import get_operator
    from dagster_llmdata.io.stage_run import StageContext, StageRun

    stage_root = WORK / "minhash-growth" / "near"
    part = f"p{p:03d}"
    run = StageRun(stage="near", input_files=[str(src)], output_dir=stage_root / "data" / part, rejected_dir=stage_root / "rejected" / part,
                   quarantine_dir=stage_root / "quarantine" / part, work_dir=stage_root / "work" / part,
                   context=StageContext(partition=part, stage_root=stage_root))
    start = time.perf_counter()
    outcome = run_stage(get_operator("minhash_dedup")(), run)
    save_record(run.output_dir, {"ledger": outcome.ledger.to_dict()})  # complete: later partitions compare against it
    print(json.dumps({"partition": p, "wall_s": round(time.perf_counter() - start, 2), **peak_rss_mb(),
                      "partitions_compared": outcome.metadata["partitions_compared"], "n_out": outcome.ledger.n_out}))


def main() -> None:
    ap = bench_args(docs=100_000, growth_partitions=10, skip="")
    ap.add_argument("--reuse", action="store_true", help="take contenders' results from an earlier run of the same corpus")
    ap.add_argument("--child")
    ap.add_argument("--growth_step", type=int)
    ap.add_argument("--corpus")
    args = ap.parse_args()
    if args.growth_step is not None:
        return growth_step(args.growth_step, Path(args.corpus))
    folder = planted(args.docs)
    if args.child:
        return child(args.child, folder, args.workers)
    results = {}
    for name in CONTENDERS:
        if name in args.skip.split(","):
            continue
        if args.reuse and (folder / f"result-{name}.json").exists():
            results[name] = json.loads((folder / f"result-{name}.json").read_text())
            continue
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--docs", str(args.docs), "--workers", str(args.workers)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    growth = []
    if args.growth_partitions > 1:
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                                 f"import minhash_dedup as m; m.growth_child(m.Path({str(folder)!r}), {args.growth_partitions}, {args.docs})"],
                                stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            growth.append(json.loads(line))
            print(growth[-1], flush=True)
        if proc.wait():
            raise SystemExit("growth run failed")
    summary = {
        "docs": args.docs, "workers": args.workers, "contenders": results,
        "ours_vs_datatrove_time": round(results["ours"]["wall_s"] / results["datatrove_default"]["wall_s"], 3)
        if "ours" in results and "datatrove_default" in results else None,
        "growth": growth,
        "rss_growth_first_to_last": round(growth[-1]["peak_rss_mb"] / growth[0]["peak_rss_mb"], 3) if growth else None,
        # partition 0 holds the planted copies (verification work the later, copy-free ones do not
        # have): from partition 1 on, the runs differ only in how much index they compare against
        "rss_growth_second_to_last": round(growth[-1]["peak_rss_mb"] / growth[1]["peak_rss_mb"], 3) if len(growth) > 1 else None,
        "growth_corpus_docs": args.docs * len(growth),
        "note": "contenders one after another, each in a fresh process; growth: partitions of --docs deduplicated in turn through "
                "the persistent index, each in a fresh process",
    }
    save(f"minhash_dedup_{args.docs}", summary)


if __name__ == "__main__":
    main()
