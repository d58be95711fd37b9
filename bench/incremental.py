"""Incremental: the default pipeline over a corpus landed as N files (N partitions). Cost of
materialising one newly landed partition vs re-running everything, and of a re-run with nothing
changed (every stage skips).

    .venv/bin/python bench/incremental.py --docs 110000 --files 11
"""

from __future__ import annotations

import shutil

from common import (
    WORK,
    bench_args,
    corpus_files,
    make_project,
    materialize,
    quiet_stderr,
    save,
)
from throughput import default_stages_yaml


def main() -> None:
    import dagster as dg

    args = bench_args(docs=110_000, files=11).parse_args()
    files = corpus_files(args.docs, args.files)
    root = make_project("incremental", default_stages_yaml(), {f.stem: [f] for f in files}, args.tasks, args.workers)
    partitions = [f"src/{f.stem}" for f in files]
    old, new = partitions[:-1], partitions[-1]
    instance = dg.DagsterInstance.ephemeral()
    with quiet_stderr(WORK / "incremental.log"):
        first_full = materialize(root, old, instance=instance)
        one_new = materialize(root, [new], instance=instance)
        noop = materialize(root, partitions, instance=instance)
        shutil.rmtree(root / "data")  # a full re-run from scratch of all partitions, new one included
        full = materialize(root, partitions, instance=instance)
    save("incremental", {
        "docs": args.docs, "partitions": len(partitions), "workers": args.workers,
        "full_run_s": round(full, 1), "first_run_without_new_s": round(first_full, 1),
        "one_new_partition_s": round(one_new, 1), "noop_rerun_s": round(noop, 1),
        "new_vs_full": round(one_new / full, 3),
    })


if __name__ == "__main__":
    main()
