"""Scaling: docs/s of the heuristic-filter + MinHash graph through Dagster with 1 and 2 local
workers, and with datatrove's Ray executor at the same parallelism (a local Ray of 2 CPUs on
loopback, started before the clock: a cluster is up before runs arrive). Targets: >= 1.6x from 1
to 2 local workers; Ray within 1.25x of local at 2 workers.

    .venv/bin/python bench/scaling.py --docs 20000
"""

from __future__ import annotations

import os
import shutil

# a one-machine Ray stays on loopback (read when ray is imported)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from common import WORK, bench_args, corpus_files, make_project, materialize, quiet_stderr, save  # noqa: E402
from overhead import STAGES, TIMED  # noqa: E402

CONFIGS = [("local", 1, 1), ("local", 2, 2), ("ray", 2, 2)]


def main() -> None:
    args = bench_args(docs=20_000, repeats=1).parse_args()
    files = corpus_files(args.docs, 2)
    log = WORK / "scaling.log"
    results = []
    for kind, tasks, workers in CONFIGS:
        name = "scaling"
        root = make_project(name, STAGES, {"batch": files}, tasks, workers)
        spec = root / "assets" / f"{name}.yaml"
        spec.write_text(spec.read_text().replace("kind: local", f"kind: {kind}"))
        if kind == "ray":
            from dagster_llmdata.io.ray_executor import connect

            connect(None, workers)
        best = None
        for _ in range(args.repeats):
            with quiet_stderr(log):
                materialize(root, ["src/batch"], ["raw"])  # untimed ingest
                seconds = materialize(root, ["src/batch"], TIMED)
            best = seconds if best is None else min(best, seconds)
            shutil.rmtree(root / "data" / name, ignore_errors=True)
        results.append({"executor": kind, "tasks": tasks, "workers": workers, "seconds": round(best, 2),
                        "docs_per_s": round(args.docs / best, 1)})
        print(results[-1], flush=True)
    local1, local2, ray2 = results
    save("scaling", {
        "docs": args.docs, "graph": "gopher_repetition + gopher_quality + fineweb_quality (fused) + minhash_dedup, through Dagster",
        "runs": results,
        "speedup_1_to_2_workers": round(local1["seconds"] / local2["seconds"], 3), "target_speedup": 1.6,
        "ray_vs_local_2_workers": round(ray2["seconds"] / local2["seconds"], 3), "target_ray_ratio": 1.25,
        "note": "quiet 2-core machine (nothing else running); the Ray cluster is started before the clock",
    })


if __name__ == "__main__":
    main()
