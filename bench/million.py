"""End to end at scale: the default pipeline's processing stages (ingest -> extraction -> cleaning
-> language ID -> exact and MinHash dedup -> Gopher/FineWeb filters -> PII -> export shards) over a
corpus landed as several files, run with `llmdata materialize` as a user would (registers the
files, one Dagster run per partition). Records wall time, the peak RSS of the whole process tree
(sampled), and the disk the pipeline's datasets take.

    .venv/bin/python bench/million.py --docs 1000000 --files 10
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from common import REPO, WORK, bench_args, corpus_files, save

BIN = Path(sys.executable).parent
JUDGE_STAGES = {"edu_scored", "edu_selected"}  # a CPU judge over a million docs is not what this measures


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    args = bench_args(docs=1_000_000, files=10).parse_args()
    files = corpus_files(args.docs, args.files)
    root = WORK / "million"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    (root / "assets").mkdir(parents=True)
    spec = yaml.safe_load((REPO / "assets/sample.yaml").read_text())
    spec["pipeline"], spec["storage"] = "million", "data"
    spec["executor"] = {"kind": "local", "tasks": args.tasks, "workers": args.workers}
    spec["sources"] = [{"name": "src", "landing": "landing"}]
    # the judge branch goes; a stage that read from it (the LanceDB store) reads what the branch read
    inputs = {s["name"]: s.get("input") for s in spec["stages"]}
    for s in spec["stages"]:
        while s.get("input") in JUDGE_STAGES:
            s["input"] = inputs[s["input"]]
    spec["stages"] = [s for s in spec["stages"] if s["name"] not in JUDGE_STAGES]
    (root / "assets/million.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (root / "landing").mkdir()
    for f in files:
        os.link(f, root / "landing" / f.name)

    env = {**os.environ, "DAGSTER_HOME": str(root / ".dagster_home")}
    peak = [0.0]
    log = open(WORK / "million.log", "w")
    start = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "llmdata"), "materialize", "million", "--project", str(root)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    wall = time.perf_counter() - start
    sampler.join()
    assert proc.returncode == 0, (WORK / "million.log").read_text()[-3000:]
    report = subprocess.run([str(BIN / "llmdata"), "report", "million", "--json", "--project", str(root)],
                            env=env, capture_output=True, text=True, check=True)
    import json

    stages = json.loads(report.stdout)["stages"]
    assert all(s["ledger_balanced"] for s in stages)
    save("million", {
        "docs": args.docs, "files": args.files, "tasks": args.tasks, "workers": args.workers,
        "stages": [s["stage"] for s in stages], "wall_s": round(wall, 1), "docs_per_s": round(args.docs / wall, 1),
        "peak_rss_mb": round(peak[0], 1), "disk_mb": round(disk_mb(root / "data"), 1),
        "input_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
        "kept": stages[-1]["n_out"], "ingested": stages[0]["n_in"],
        "settings": "assets/sample.yaml without the judge branch (the LanceDB store stage reads `redacted` instead); llmdata materialize (one Dagster run per landed file)",
        "note": "quiet 2-core machine (nothing else running)",
    })


if __name__ == "__main__":
    main()
