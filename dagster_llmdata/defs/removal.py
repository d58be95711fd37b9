"""Removing a partition from a pipeline (a landed file withdrawn, e.g. for a takedown): its data in
every stage goes, its dedup index entries go, the Dagster partition goes, and each partition that
landed after it and was deduplicated against it shows stale in Dagster (a copy it dropped because
the removed partition held the original is now the first of its kind, so a re-run keeps it)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from dagster_llmdata.defs.events import compared_with_events, later_partition_keys
from dagster_llmdata.defs.translator import partitions_def_for
from dagster_llmdata.engine.locks import partition_lock, stage_lock
from dagster_llmdata.engine.materialise import pipeline_context, stage_run_for
from dagster_llmdata.spec.pipeline import PipelineSpec


@dataclass
class Removal:
    partition: str
    stages_cleared: list[str] = field(default_factory=list)  # stages that held something of it
    stale: dict[str, list[str]] = field(default_factory=dict)  # serial stage -> partitions now stale


def remove_partition(spec: PipelineSpec, root: Path, partition: str, instance: dg.DagsterInstance,
                     why: str = "removed", lock_timeout: float | None = None) -> Removal:
    """Remove `partition` from `spec`'s pipeline. Holds the same locks as a run of its stages, so a
    run in progress finishes first (waiting up to `lock_timeout`, default $LLMDATA_LOCK_TIMEOUT_S,
    then raising PartitionLocked with nothing removed). Returns what was cleared and which
    partitions went stale."""
    ctx = pipeline_context(spec, Path(root))
    partitions = partitions_def_for(spec)
    keys = list(instance.get_dynamic_partitions(partitions.name))
    serial = [s for s in ctx.stages.values() if s.serial]
    removal = Removal(partition)
    with stage_lock(ctx.layout, [s.name for s in serial], lock_timeout), \
            partition_lock(ctx.layout, list(ctx.stages), partition, lock_timeout):
        # who compared against it: read before its data (and so its place in the order) is gone
        later = {s.name: later_partition_keys(ctx, s, partition, keys) for s in serial}
        for stage in ctx.stages.values():
            dirs = [d for d in ctx.layout.partition_dirs(stage.name, partition) if d.exists()]
            for d in dirs:
                shutil.rmtree(d)
            if dirs:
                removal.stages_cleared.append(stage.name)
        events = []
        for stage in serial:
            run, op = stage_run_for(ctx, stage, partition, require_input=False)
            op.forget_partition(run)
            removal.stale[stage.name] = later[stage.name]
            events += compared_with_events(ctx, stage, later[stage.name], f"partition {partition} that landed before it was {why}")
    for event in events:
        instance.report_runless_asset_event(event)
    if partition in keys:
        instance.delete_dynamic_partition(partitions.name, partition)
    return removal
