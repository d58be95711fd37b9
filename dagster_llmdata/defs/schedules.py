"""Time-based entries of sensors/*.yaml. `schedule`: a cron schedule that re-materialises a
pipeline (registering what landed since, like the landing sensor). `freshness`: Dagster freshness
checks that flag a pipeline whose stages have not materialised for a configured time, and the
sensor that evaluates them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import dagster as dg
import warnings


from dagster_llmdata.defs.translator import asset_key, partitions_def_for
from dagster_llmdata.engine.materialise import partition_is_current, pipeline_context
from dagster_llmdata.defs.landing_sensor import scan_landing
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.spec.triggers import FreshnessSpec, ScheduleSpec








def _status(value: str):
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED


def source_partitions(spec: PipelineSpec, root: Path, instance: dg.DagsterInstance | None = None) -> tuple[list[str], list[str]]:
    """(ready, waiting), in key order: the partitions `spec`'s first stage can read now, and those it
    cannot yet. Landing folders: every entry is ready. Another pipeline's stage: the shared
    partitions (from `instance`) whose upstream partition is materialised are ready, the rest wait."""
    if spec.source is None:
        return sorted(scan_landing(spec, root).entries), []
    if instance is None:
        raise ValueError(f"pipeline {spec.pipeline!r} reads {spec.source.dataset}: its partitions are known to the Dagster instance only")
    upstream = pipeline_context(spec, root).upstream
    keys = sorted(instance.get_dynamic_partitions(partitions_def_for(spec).name))
    return [k for k in keys if upstream.is_complete(k)], [k for k in keys if not upstream.is_complete(k)]


def partitions_to_run(spec: PipelineSpec, root: Path, which: Literal["stale", "all"] = "stale",
                      instance: dg.DagsterInstance | None = None) -> list[str]:
    """The partitions a re-materialisation should request, in key order (landing entries, or for a
    pipeline reading another's stage, the materialised upstream partitions: `instance` needed)."""
    keys, _ = source_partitions(spec, root, instance)
    if which == "all":
        return keys
    ctx = pipeline_context(spec, root)
    return [k for k in keys if not partition_is_current(ctx, k)]


def register_landed(spec: PipelineSpec, root: Path, instance: dg.DagsterInstance) -> list[str]:
    """Add every landing entry not yet a partition to the instance; returns the new keys."""
    name = partitions_def_for(spec).name
    known = set(instance.get_dynamic_partitions(name))
    new = [k for k in sorted(scan_landing(spec, root).entries) if k not in known]
    if new:
        instance.add_dynamic_partitions(name, new)
    return new


def build_schedule(entry: ScheduleSpec, spec: PipelineSpec, root: Path, job) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=entry.name or f"{spec.pipeline}_schedule",
        cron_schedule=entry.cron,
        execution_timezone=entry.timezone,
        job=job,
        default_status=_status(entry.default_status),
        description=f"Re-materialise the {entry.partitions} partitions of {spec.pipeline!r} at `{entry.cron}` ({entry.timezone}).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        new = register_landed(spec, root, context.instance)
        if new:
            context.log.info(f"registered {len(new)} landed partitions: {', '.join(new)}")
        keys = partitions_to_run(spec, root, entry.partitions, context.instance)
        if not keys:
            return dg.SkipReason(f"every partition of {spec.pipeline!r} is up to date")
        tick = context.scheduled_execution_time.isoformat()
        return [dg.RunRequest(run_key=f"{k}@{tick}", partition_key=k, tags={"llmdata/schedule": tick}) for k in keys]

    return _schedule


def build_freshness(entry: FreshnessSpec, spec: PipelineSpec) -> tuple[list, dg.SensorDefinition]:
    stages = entry.stages or [s.name for s in spec.stages]
    unknown = [s for s in stages if s not in {st.name for st in spec.stages}]
    if unknown:
        raise ValueError(f"freshness names unknown stages {unknown} of pipeline {spec.pipeline!r}")
    # Dagster suggests FreshnessPolicy instead; its evaluation needs a daemon feature that is off by
    # default in OSS, while these checks run anywhere (UI, sensor, tests)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        checks = dg.build_last_update_freshness_checks(
            assets=[asset_key(spec, s) for s in stages], lower_bound_delta=entry.max_age, severity=dg.AssetCheckSeverity.WARN,
        )
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name=f"{spec.pipeline}_freshness", minimum_interval_seconds=entry.minimum_interval_seconds,
            default_status=dg.DefaultSensorStatus.RUNNING if entry.default_status == "running" else dg.DefaultSensorStatus.STOPPED,
        )
    return checks, sensor


def overdue(last_materialised: float | None, max_age: dt.timedelta, now: float) -> bool:
    """The rule the freshness checks apply, for views outside Dagster (`llmdata status`)."""
    return last_materialised is None or now - last_materialised > max_age.total_seconds()
