"""Running a datatrove pipeline on a Ray cluster through datatrove's RayPipelineExecutor.

datatrove's Ray executor resubmits a task whose worker died (up to 3 times) but, when a task still
fails, only logs "Only k/n tasks completed" and returns: here an incomplete run is an error that
names the failed ranks and their logs, so a partition is never recorded from part of its input.
Its run() returns nothing; the merged stats are read back from the logging dir."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import RayRunIncomplete

RAY_ADDRESS_ENV = "RAY_ADDRESS"


def connect(address: str | None, num_cpus: float) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); with neither, start a local one in this
    process sized for the stage. A process joins once; later stages reuse the connection."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor kind 'ray' needs Ray: pip install 'dagster-llmdata[ray]'") from None
    if ray.is_initialized():
        return
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # a cluster of this machine alone: on loopback, not on the machine's network address
            ray.init(num_cpus=max(1, int(num_cpus)), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    except ConnectionError as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def run_on_ray(pipeline: list, tasks: int, workers: int, logging_dir: Path, config: Any) -> Any:
    """Run `pipeline` as `tasks` Ray tasks (at most `workers` at once); returns datatrove's
    PipelineStats merged over every task."""
    from datatrove.executor import RayPipelineExecutor
    from datatrove.utils.stats import PipelineStats

    connect(config.address, workers * config.cpus_per_task)
    executor = RayPipelineExecutor(
        pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir),
        cpus_per_task=config.cpus_per_task,
        mem_per_cpu_gb=config.memory_per_task_gb / config.cpus_per_task,
        time=config.task_timeout_s,
        # the pipeline's own modules must import on the workers: a cluster started from this
        # environment has them; runtime_env settings pass through for one that does not
        ray_remote_kwargs={"runtime_env": config.runtime_env} if config.runtime_env else None,
    )
    failure = None
    try:
        executor.run()
    except Exception as exc:  # its bookkeeping can fail after it killed a task (a KeyError once `time` ran out)
        failure = exc
    incomplete = executor.get_incomplete_ranks(range(tasks))
    if incomplete:
        raise RayRunIncomplete(
            f"{len(incomplete)} of {tasks} Ray tasks did not complete (ranks {incomplete[:10]}) after datatrove's "
            f"resubmissions{' or its task time limit' if config.task_timeout_s else ''}; their logs are in {logging_dir}/logs"
        ) from failure
    if failure is not None:
        raise failure
    return PipelineStats.from_json(json.loads((logging_dir / "stats.json").read_text()))
