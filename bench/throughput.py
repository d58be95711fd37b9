"""Throughput: docs/s per core of the default pipeline (assets/sample.yaml's stages) on the
sample corpus, materialised through Dagster. Per-stage docs/s come from each stage's metadata.

    .venv/bin/python bench/throughput.py --docs 100000
"""

from __future__ import annotations

import yaml
from common import (
    REPO,
    WORK,
    bench_args,
    corpus_files,
    make_project,
    quiet_stderr,
    save,
)


def default_stages_yaml() -> str:
    spec = yaml.safe_load((REPO / "assets" / "sample.yaml").read_text())
    return yaml.safe_dump(spec["stages"], sort_keys=False)


def main() -> None:
    import time

    import dagster as dg

    from dagster_llmdata import load_project

    args = bench_args(docs=100_000).parse_args()
    files = corpus_files(args.docs, args.tasks)
    root = make_project("throughput", default_stages_yaml(), {"batch": files}, args.tasks, args.workers)
    defs = load_project(root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("throughput_files", ["src/batch"])
    start = time.perf_counter()
    with quiet_stderr(WORK / "throughput.log"):
        result = dg.materialize(list(defs.assets), partition_key="src/batch", instance=instance)
    wall = time.perf_counter() - start
    stages = {}
    for event in result.get_asset_materialization_events():
        md = event.materialization.metadata
        stages[event.materialization.asset_key.path[-1]] = {
            "n_in": md["n_in"].value, "n_out": md["n_out"].value, "runtime_s": md["runtime_s"].value,
            "fused_with": md["llmdata/fused_with"].value if "llmdata/fused_with" in md else None,
        }
    n_in = stages["raw"]["n_in"]
    save("throughput", {"docs": n_in, "workers": args.workers, "wall_s": round(wall, 1),
                        "docs_per_s": round(n_in / wall, 1), "docs_per_s_per_core": round(n_in / wall / args.workers, 1),
                        "stages": stages})


if __name__ == "__main__":
    main()
