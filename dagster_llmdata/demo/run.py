"""`make demo`: sample corpus -> landing folder -> the landing sensor's partitions -> every stage
materialised through Dagster into the project's instance (so `make ui` shows it)."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from dagster_llmdata.definitions import load_project
from dagster_llmdata.spec.project import read_project
from dagster_llmdata.io.logs import stderr_to
from dagster_llmdata.mixture.materialise import materialise_mixtures
from dagster_llmdata.engine.report import stage_table
from dagster_llmdata.demo.sample_corpus import DEFAULT_DOCS, build_sample_corpus, write_bad_input
from dagster_llmdata.defs.landing_sensor import landing_entries


def run_demo(root: Path, n_docs: int | None = None, pipeline: str = "sample") -> int:
    project = read_project(root)
    for problem in project.problems:
        print(f"broken spec (not loaded): {problem}")
    if pipeline not in project.pipelines:
        print(f"no pipeline {pipeline!r} in {root / 'assets'} (loaded: {sorted(project.pipelines)})")
        return 2
    spec = project.pipelines[pipeline]
    landing = root / spec.sources[0].landing
    if n_docs is not None or not landing.exists() or not any(landing.iterdir()):
        print(f"building the sample corpus in {landing} ...")
        counts = build_sample_corpus(landing, n_docs or DEFAULT_DOCS)
        write_bad_input(landing)
        print("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    defs = load_project(root)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(f"{pipeline}_job")
    partitions_name = f"{pipeline}_files"
    keys = sorted(landing_entries(spec, root))
    instance.add_dynamic_partitions(partitions_name, [k for k in keys if not instance.has_dynamic_partition(partitions_name, k)])
    start = time.perf_counter()
    failed = []
    log_path = root / "data" / "demo.log"
    print(f"(datatrove and Dagster logs go to {log_path})")
    for key in keys:
        print(f"materialising partition {key} ...", flush=True)
        with stderr_to(log_path):
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        if not result.success:
            failed.append(key)
    print()
    print(stage_table(spec, root))
    print(f"\n{len(keys)} partitions in {time.perf_counter() - start:.0f}s; failed: {failed or 'none'}")
    mixture_lines, mixtures_failed = materialise_mixtures(defs, sorted(project.mixtures), instance, log_path)
    for line in mixture_lines:
        print(line)
    print(f"Rejected docs (with text, stage, reason): {root / spec.storage / spec.pipeline}/<stage>/rejected/")
    print("Open the Dagster UI on this instance: make ui   (http://127.0.0.1:3000)")
    return 1 if failed or mixtures_failed else 0
