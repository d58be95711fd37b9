"""Feedback -> new mixture latency under a live `dagster dev` (webserver + daemon).

A throwaway project (a pipeline whose `shards` stage holds three domains, an ODM mixture over it,
and a training-feedback sensor at a 30 s interval) runs under `dagster dev`. Each round reports
one step of per-domain losses that moves the weights and times how long until the daemon's run
has written the new manifest. Target: <= 60 s at a 30 s sensor interval.

    .venv/bin/python bench/mixture_loop.py --rounds 3
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, WORK, bench_args, save  # noqa: E402
from dagster_llmdata.io.layout import PipelineLayout  # noqa: E402
from dagster_llmdata.io.ledger import save_record  # noqa: E402
from dagster_llmdata.mixture.feedback import FeedbackStore  # noqa: E402
from dagster_llmdata.demo.dagster_dev import dagster_dev  # noqa: E402
from dagster_llmdata.mixture.manifest import read_manifest  # noqa: E402
from dagster_llmdata.mixture.plan import plan  # noqa: E402
from dagster_llmdata.spec.mixture import load_mixture_spec  # noqa: E402

PIPELINE = """\
pipeline: corpus
storage: data/pipelines
sources: [{name: web, landing: landing/web}]
stages:
  - {name: raw, op: ingest}
  - {name: shards, op: export_shards}
"""
MIXTURE = """\
mixture: loop
inputs: [{dataset: corpus/shards}]
token_budget: 50000
algorithm: {name: odm}
"""
SENSOR = """\
sensors:
  - type: training_feedback
    mixture: loop
    warmup_step: 0
    update_step: 10
    min_weight_change: 0.001
    minimum_interval_seconds: {interval}
"""


def make_project(interval: int) -> Path:
    root = WORK / "mixture_loop"
    shutil.rmtree(root, ignore_errors=True)
    (root / "assets").mkdir(parents=True)
    (root / "sensors").mkdir()
    (root / "assets" / "corpus.yaml").write_text(PIPELINE)
    (root / "assets" / "loop.yaml").write_text(MIXTURE)
    (root / "sensors" / "fb.yaml").write_text(SENSOR.format(interval=interval))
    # the shards stage as a materialisation leaves it (Parquet + ledger record)
    folder = PipelineLayout(root / "data" / "pipelines", "corpus").data_dir("shards", "web/part-0.jsonl")
    folder.mkdir(parents=True)
    rows = [{"id": f"{d}-{i}", "text": f"{d} text {i}", "domain": d, "n_tokens": 50} for d in ("a", "b", "c") for i in range(200)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "shard-00000.parquet")
    save_record(folder, {"data_version": "bench", "ledger": {}, "fingerprint": "bench"})
    plan(load_mixture_spec(root / "assets" / "loop.yaml"), root)  # the first manifest
    return root


def main() -> None:
    args = bench_args(rounds=3, interval=30, timeout=180).parse_args()
    root = make_project(args.interval)
    store = FeedbackStore(root / "data/feedback/feedback.sqlite")
    latest = root / "data/mixtures/loop/manifests/latest.json"
    latencies = []
    started = time.perf_counter()
    with dagster_dev(root, root / ".dagster_home", root / "dagster_dev.log", workspace=REPO / "workspace.yaml") as port:
        startup = time.perf_counter() - started
        print(f"dagster dev up in {startup:.0f}s on port {port}", flush=True)
        for r in range(args.rounds):
            before = read_manifest(latest).version
            hard = "abc"[r % 3]
            losses = {d: (6.0 if d == hard else 1.0) for d in "abc"}
            t0 = time.perf_counter()
            store.report("bench-run", 100 * (r + 1), losses, mixture="loop")
            while time.perf_counter() - t0 < args.timeout:
                if read_manifest(latest).version != before:
                    break
                time.sleep(0.25)
            else:
                latencies.append(None)
                print(f"round {r}: no new manifest in {args.timeout}s", flush=True)
                continue
            latencies.append(round(time.perf_counter() - t0, 2))
            m = read_manifest(latest)
            print(f"round {r}: new mixture {m.version} after {latencies[-1]}s (feedback step {m.feedback['step']}, "
                  f"weights {', '.join(f'{d}={w:.3f}' for d, w in m.weights.items())})", flush=True)
    done = [x for x in latencies if x is not None]
    save("mixture_loop", {
        "sensor_interval_s": args.interval, "rounds": args.rounds, "latencies_s": latencies,
        "mean_s": round(statistics.mean(done), 2) if done else None, "max_s": max(done) if done else None,
        "dagster_dev_startup_s": round(startup, 1), "target_max_s": 60, "meets": bool(done) and len(done) == len(latencies) and max(done) <= 60,
    })


if __name__ == "__main__":
    main()
