"""Overhead: the heuristic-filter + MinHash graph materialised through Dagster vs the same
datatrove steps run bare (datatrove's own Parquet reader/writers, same tasks/workers, same corpus,
same run). Target: Dagster / bare <= 1.15 wall time.

    .venv/bin/python bench/overhead.py --docs 100000 --repeats 2
"""

from __future__ import annotations

import shutil
import time

from common import (
    WORK,
    bench_args,
    corpus_files,
    make_project,
    materialize,
    quiet_stderr,
    save,
)

STAGES = """\
- {name: raw, op: ingest}
- {name: repetition_filtered, op: gopher_repetition}
- {name: quality_filtered, op: gopher_quality}
- {name: web_filtered, op: fineweb_quality}
- {name: near_deduplicated, op: minhash_dedup}
"""
TIMED = ["repetition_filtered", "quality_filtered", "web_filtered", "near_deduplicated"]


def bare_datatrove(raw_dir: str, out: str, tasks: int, workers: int) -> float:
    """What a user writes by hand with datatrove: one filter pipeline, then MinHash's four stages."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import (
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    shutil.rmtree(out, ignore_errors=True)
    config = MinhashConfig()

    def run(pipeline, name, n_tasks=tasks):
        LocalPipelineExecutor(pipeline, tasks=n_tasks, workers=min(workers, n_tasks), logging_dir=f"{out}/logs/{name}").run()

    start = time.perf_counter()
    run([
        ParquetReader(raw_dir, glob_pattern="*.parquet"),
        GopherRepetitionFilter(exclusion_writer=ParquetWriter(f"{out}/rejected/repetition")),
        GopherQualityFilter(exclusion_writer=ParquetWriter(f"{out}/rejected/quality")),
        FineWebQualityFilter(exclusion_writer=ParquetWriter(f"{out}/rejected/fineweb")),
        ParquetWriter(f"{out}/filtered"),
    ], "filters")
    run([ParquetReader(f"{out}/filtered"), MinhashDedupSignature(f"{out}/sigs", config=config)], "sigs")
    run([MinhashDedupBuckets(f"{out}/sigs", f"{out}/buckets", config=config)], "buckets", config.num_buckets)
    run([MinhashDedupCluster(f"{out}/buckets", f"{out}/clusters", config=config, save_cluster_id=True)], "clusters", 1)
    run([
        ParquetReader(f"{out}/filtered"),
        MinhashDedupFilter(f"{out}/clusters", exclusion_writer=ParquetWriter(f"{out}/rejected/minhash"), load_cluster_ids=True),
        ParquetWriter(f"{out}/deduplicated"),
    ], "filter")
    return time.perf_counter() - start


def main() -> None:
    args = bench_args(docs=100_000, repeats=2).parse_args()
    # one partition of `tasks` files, so bare datatrove (which splits work by file) gets the same parallelism
    files = corpus_files(args.docs, args.tasks)
    root = make_project("overhead", STAGES, {"batch": files}, args.tasks, args.workers)
    partition = "src/batch"
    log = WORK / "overhead.log"
    with quiet_stderr(log):
        materialize(root, [partition], ["raw"])  # ingest once, untimed: both sides read its Parquet
    raw_dir = str(root / "data/overhead/raw/data" / partition)
    runs = []
    for _ in range(args.repeats):  # alternate the two sides so drift hits both
        with quiet_stderr(log):
            bare = bare_datatrove(raw_dir, str(WORK / "overhead-bare"), args.tasks, args.workers)
            shutil.rmtree(root / "data/overhead/repetition_filtered", ignore_errors=True)  # force real work
            dagster = materialize(root, [partition], TIMED)
        runs.append({"bare_s": round(bare, 2), "dagster_s": round(dagster, 2), "ratio": round(dagster / bare, 3)})
        print(runs[-1], flush=True)
    best = min(r["ratio"] for r in runs)
    save("overhead", {"docs": args.docs, "tasks": args.tasks, "workers": args.workers, "runs": runs,
                      "ratio_median": sorted(r["ratio"] for r in runs)[len(runs) // 2], "ratio_best": best, "target": 1.15})


if __name__ == "__main__":
    main()
