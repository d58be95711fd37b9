"""Memory: peak RSS of the heuristic-filter + MinHash graph (ingest included) at two corpus sizes,
summed over the whole process tree (Dagster run + datatrove workers). Target: growth < 1.5x from
100k to 1M docs, i.e. streaming, not loading the corpus.

    .venv/bin/python bench/memory.py --sizes 100000 1000000
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common import REPO, WORK, bench_args, corpus_files, make_project, save
from overhead import STAGES

CHILD = """
import sys
sys.path.insert(0, {bench!r})
from common import materialize, quiet_stderr
from pathlib import Path
if __name__ == "__main__":
    with quiet_stderr(Path({log!r})):
        print(materialize(Path({root!r}), ["src/batch"]))
"""


def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """(sum of RSS over pid and all its descendants, largest single RSS), in kB, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as fh:
                rss[int(entry)] = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, largest, stack = 0, 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        largest = max(largest, rss.get(p, 0))
        stack.extend(children.get(p, []))
    return total, largest


def measure(n_docs: int, tasks: int, workers: int) -> dict:
    files = corpus_files(n_docs, tasks)
    root = make_project(f"memory_{n_docs}", STAGES, {"batch": files}, tasks, workers)
    script = CHILD.format(bench=str(REPO / "bench"), log=str(WORK / f"memory-{n_docs}.log"), root=str(root))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    peak_total = peak_single = 0
    while proc.poll() is None:
        total, single = _tree_rss_kb(proc.pid)
        peak_total, peak_single = max(peak_total, total), max(peak_single, single)
        time.sleep(0.25)
    out = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(f"materialisation of {n_docs} docs failed (see {WORK}/memory-{n_docs}.log)")
    corpus_mb = sum(f.stat().st_size for f in files) / 2**20
    return {"docs": n_docs, "corpus_mb": round(corpus_mb, 1), "wall_s": round(time.perf_counter() - start, 1),
            "materialize_s": round(float(out.strip().splitlines()[-1]), 1),
            "peak_rss_tree_mb": round(peak_total / 1024, 1), "peak_rss_single_process_mb": round(peak_single / 1024, 1)}


def main() -> None:
    ap = bench_args()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = ap.parse_args()
    runs = []
    for n in args.sizes:
        runs.append(measure(n, args.tasks, args.workers))
        print(runs[-1], flush=True)
    growth = runs[-1]["peak_rss_tree_mb"] / runs[0]["peak_rss_tree_mb"] if len(runs) > 1 else None
    save("memory", {"tasks": args.tasks, "workers": args.workers, "runs": runs,
                    "growth": round(growth, 3) if growth else None, "target_growth": 1.5})


if __name__ == "__main__":
    main()
