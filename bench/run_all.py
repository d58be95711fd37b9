"""Run every benchmark (each in its own process) and write bench/results/SUMMARY.md.

    make bench                      # full sizes: 100k overhead, 100k throughput, 110k incremental, 100k + 1M memory,
                                    # 100k MinHash (+ 1M growth), 1M end to end (hours on 2 cores)
    .venv/bin/python bench/run_all.py --quick   # 10x smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run(script: str, *args: str) -> None:
    print(f"== {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True, cwd=HERE)


def summary() -> str:
    def load(name):
        path = RESULTS / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    lines = ["# Benchmark results", "", "Machine: 2 cores, no GPU (see each JSON for the exact commit and date).", ""]
    if (o := load("overhead")):
        lines += ["## Overhead: Dagster graph vs bare datatrove", "",
                  f"{o['docs']:,} docs, tasks={o['tasks']} workers={o['workers']}, same run, alternating sides.", "",
                  "| run | bare datatrove (s) | through Dagster (s) | ratio |", "|---|---|---|---|"]
        lines += [f"| {i + 1} | {r['bare_s']} | {r['dagster_s']} | {r['ratio']} |" for i, r in enumerate(o["runs"])]
        lines += ["", f"Median ratio {o['ratio_median']} (target <= {o['target']}).", ""]
    if (m := load("memory")):
        lines += ["## Memory: peak RSS of the process tree", "", "| docs | corpus MB | peak RSS tree (MB) | largest process (MB) | wall (s) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['docs']:,} | {r['corpus_mb']} | {r['peak_rss_tree_mb']} | {r['peak_rss_single_process_mb']} | {r['wall_s']} |" for r in m["runs"]]
        lines += ["", f"Growth {m['growth']}x (target < {m['target_growth']}x).", ""]
    if (t := load("throughput")):
        lines += ["## Throughput of the default pipeline", "",
                  f"{t['docs']:,} docs in {t['wall_s']} s with {t['workers']} workers: {t['docs_per_s']} docs/s, "
                  f"**{t['docs_per_s_per_core']} docs/s per core**.", "", "| stage | in | kept | runtime (s) | fused with |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['n_in']:,} | {v['n_out']:,} | {v['runtime_s']} | {', '.join(v['fused_with'] or [])} |" for k, v in t["stages"].items()]
        lines.append("")
    if (i := load("incremental")):
        lines += ["## Incremental: one new partition vs a full re-run", "",
                  f"{i['docs']:,} docs landed as {i['partitions']} files (partitions), default pipeline.", "",
                  f"- full run of all partitions: {i['full_run_s']} s",
                  f"- one newly landed partition: {i['one_new_partition_s']} s ({i['new_vs_full']}x the full run)",
                  f"- re-run with nothing changed (every stage skips): {i['noop_rerun_s']} s", ""]
    if (c := load("judge_client")):
        lines += ["## Judge client: requests/s against a local server", "",
                  "| in flight | latency (ms) | requests/s | fraction of concurrency/latency | client CPU per request (ms) |", "|---|---|---|---|---|"]
        lines += [f"| {r['concurrency']} | {r['latency_ms']} | {r['requests_per_s']} | {r['fraction_of_ideal']} | {r['client_cpu_ms_per_request']} |"
                  for r in c["runs"]]
        lines += ["", "Target: >= 0.9 at 64 in flight and 50 ms.", ""]
    if (j := load("judge_cache")):
        lines += ["## Judge score cache: requests counted at the server", "", "| run | requests | seconds |", "|---|---|---|"]
        lines += [f"| {r['run']} | {r['requests']} | {r['seconds']} |" for r in j["runs"]]
        lines.append("")
    if (d := load("distill_throughput")):
        lines += ["## Distilled classifier: scoring throughput, one thread", "", "| model | docs/s per core | Spearman vs labels | F1 |", "|---|---|---|---|"]
        lines += [f"| {name} | {m['docs_per_s_per_core']:,} | {m['holdout']['spearman']:.3f} | {m['holdout']['f1']:.3f} |" for name, m in d["models"].items()]
        lines += ["", f"{d['docs']:,} docs; target >= {d['target_docs_per_s_per_core']:,} docs/s per core.", ""]
    if (g := load("cpu_judge")):
        lines += ["## CPU judge (SmolLM2-135M, transformers on CPU torch)", "",
                  f"- {g['docs']} docs of ~{g['words_per_doc']} words, {g['mean_tokens_in']} tokens in / {g['mean_tokens_out']} out each: "
                  f"**{g['batched_8_docs_per_s']} docs/s** batched by 8, {g['single_docs_per_s']} one at a time",
                  f"- model load {g['load_s']} s, RSS {g['rss_after_load_mb']} MB after load ({g['peak_rss_mb']} MB peak)",
                  f"- installing the extra: {g['install']['total_s']} s ({g['install']['pip_cache']})", ""]
    if (mx := load("mixture")):
        lines += ["## Mixtures: target loss at a fixed budget (synthetic bigram testbed)", "",
                  f"{mx['config']['seeds']} seeds, {mx['config']['steps']} steps x {mx['config']['batch']} tokens; mean ± sd.", "",
                  "| method | target loss | steps to uniform's final loss (per seed) | gap to grid optimum |", "|---|---|---|---|"]
        lines += [f"| {m} | {s['target_loss_mean']:.4f} ± {s['target_loss_std']:.4f} | {s['steps_to_uniform_final']} | {s['gap_to_grid_mean_pct']:+.2f}% |"
                  for m, s in mx["summary"].items()]
        lines += ["", f"Best adaptive: {mx['best_adaptive']} (targets: <= 0.6x steps, within 1% of grid: {mx['best_adaptive_meets']}).", ""]
    if (lp := load("mixture_loop")):
        lines += ["## Mixtures: feedback -> new mixture under a live daemon", "",
                  f"Sensor interval {lp['sensor_interval_s']} s: latencies {lp['latencies_s']} s (max {lp['max_s']} s, target <= 60 s).", ""]
    if (a := load("agent")):
        h, su = a["headline"], a["suite"]
        lines += ["## Agent: intent -> verified proposal (deterministic planner)", "",
                  f"One proposal on a {h['sample_docs']}-doc sample: {h['wall_s']} s, {h['status']} in {h['rounds']} round(s) "
                  f"(target <= {h['target_s']} s). First proposal verified for {su['first_proposal_verified_share']:.0%} of "
                  f"{su['intents']} intents (target >= {su['target_first_share']:.0%}); after repairs {su['verified_after_repairs_share']:.0%}.", "",
                  "| intent | status | rounds | first round verified | survival | s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['intent']} | {r['status']} | {r['rounds']} | {r['first_round_verified']} | {r['survival']} | {r['seconds']} |" for r in su["runs"]]
        lines.append("")
    if (op := load("overhead_production")):
        lines += ["## Production-mode overhead: launched like a deployed Dagster", "", op["launch"] + ".", "",
                  "| run | bare datatrove (s) | launched run (s) | ratio |", "|---|---|---|---|"]
        lines += [f"| {i + 1} | {r['bare_s']} | {r['production_s']} | {r['ratio']} |" for i, r in enumerate(op["runs"])]
        lines += ["", f"{op['docs']:,} docs; median ratio {op['ratio_median']} (target <= {op['target']}).", ""]
    if (sc := load("scaling")):
        lines += ["## Scaling: 1 vs 2 local workers, and Ray", "", f"{sc['docs']:,} docs, {sc['graph']}.", "",
                  "| executor | tasks | workers | s | docs/s |", "|---|---|---|---|---|"]
        lines += [f"| {r['executor']} | {r['tasks']} | {r['workers']} | {r['seconds']} | {r['docs_per_s']} |" for r in sc["runs"]]
        lines += ["", f"1 -> 2 workers {sc['speedup_1_to_2_workers']}x (target >= {sc['target_speedup']}x); Ray / local time "
                      f"{sc['ray_vs_local_2_workers']}x (target <= {sc['target_ray_ratio']}x).", ""]
    for mh in sorted(RESULTS.glob("minhash_dedup_*.json")):
        r = json.loads(mh.read_text())
        lines += [f"## Near dedup, {r['docs']:,} planted docs", "", "| contender | s | peak RSS (MB) | precision | recall |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {c['wall_s']} | {c['peak_rss_mb']} | {c['precision']} | {c['recall']} |" for name, c in r["contenders"].items()]
        if r.get("growth"):
            lines += ["", f"Memory growth through the index, {r['growth_corpus_docs']:,} docs in {len(r['growth'])} partitions: "
                          f"peak RSS first {r['growth'][0]['peak_rss_mb']} MB, last {r['growth'][-1]['peak_rss_mb']} MB "
                          f"({r['rss_growth_first_to_last']}x, target < 1.5x)."]
        lines.append("")
    if (mi := load("million")):
        lines += [f"## {mi['docs']:,} docs end to end", "", f"{mi['settings']}; {mi['files']} files, tasks={mi['tasks']} workers={mi['workers']}.", "",
                  f"- wall {mi['wall_s']} s ({mi['docs_per_s']} docs/s), peak RSS of the process tree {mi['peak_rss_mb']} MB",
                  f"- datasets on disk {mi['disk_mb']} MB for {mi['input_mb']} MB of input; kept {mi['kept']:,} of {mi['ingested']:,}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=["overhead", "throughput", "incremental", "memory", "judge_client", "judge_cache",
                                                   "distill_throughput", "cpu_judge", "mixture", "mixture_loop", "agent",
                                                   "overhead_production", "scaling", "minhash_dedup", "million"])
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    k = 10 if args.quick else 1
    if not args.summary_only:
        plan = {
            "overhead": ("overhead.py", "--docs", str(100_000 // k), "--repeats", "2"),
            "throughput": ("throughput.py", "--docs", str(100_000 // k)),
            "incremental": ("incremental.py", "--docs", str(110_000 // k), "--files", "11"),
            "memory": ("memory.py", "--sizes", str(100_000 // k), str(1_000_000 // k)),
            "judge_client": ("judge_client.py", "--requests", str(2000 // k)),
            "judge_cache": ("judge_cache.py", "--docs", str(500 // k)),
            "distill_throughput": ("distill_throughput.py", "--docs", str(50_000 // k)),
            "cpu_judge": ("cpu_judge.py", "--docs", str(max(8, 48 // k))),
            "mixture": ("mixture.py", "--seeds", "3"),
            "mixture_loop": ("mixture_loop.py", "--rounds", str(3 if k == 1 else 1)),
            "agent": ("agent.py", "--sample_docs", str(max(100, 1000 // k))),
            "overhead_production": ("overhead_production.py", "--docs", str(100_000 // k), "--repeats", "1"),
            "scaling": ("scaling.py", "--docs", str(20_000 // k)),
            "minhash_dedup": ("minhash_dedup.py", "--docs", str(100_000 // k), "--growth_partitions", "10"),
            "million": ("million.py", "--docs", str(1_000_000 // k), "--files", "10"),
        }
        for name in args.only:
            run(*plan[name])
    (RESULTS / "SUMMARY.md").write_text(summary())
    print((RESULTS / "SUMMARY.md").read_text())


if __name__ == "__main__":
    main()
