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

from pydantic import BaseModel, ConfigDict, Field

from dagster_llmdata.defs.translator import asset_key, partitions_def_for
from dagster_llmdata.engine.materialise import partition_is_current, pipeline_context
from dagster_llmdata.defs.landing_sensor import scan_landing
from dagster_llmdata.spec.pipeline import CRON, PipelineSpec

NAME_PATTERN = r"^[A-Za-z0-9_]+$"



class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["schedule"] = Field(description="A cron schedule that re-materialises a pipeline.")
    name: str | None = Field(None, min_length=1, max_length=200, pattern=NAME_PATTERN,
                             description="Schedule name in Dagster; default `<pipeline>_schedule`.")
    pipeline: str = Field(min_length=1, description="The pipeline (its `pipeline:` name) to re-materialise.")
    cron: str = Field(pattern=CRON, description="When to run, as a five-field cron string (`0 2 * * *`: nightly at 02:00).")
    timezone: str = Field("UTC", min_length=1, description="Timezone of the cron string.")
    partitions: Literal["stale", "all"] = Field(
        "stale",
        description="`stale`: request only partitions whose files or stage code changed since they were "
        "materialised (and new ones); `all`: every partition (stages that are up to date still skip).",
    )
    default_status: Literal["running", "stopped"] = Field("stopped", description="Whether the schedule runs as soon as the code location loads.")


class FreshnessSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["freshness"] = Field(description="Flag a pipeline that has not materialised for a while.")
    pipeline: str = Field(min_length=1, description="The pipeline whose stages are checked.")
    max_age_hours: float = Field(gt=0, le=24 * 366, description="A stage is overdue once its last materialisation is older than this.")
    stages: list[str] | None = Field(None, description="Stages to check; default every stage.")
    minimum_interval_seconds: int = Field(300, ge=10, le=86_400, description="How often the sensor evaluates the checks.")
    default_status: Literal["running", "stopped"] = Field("running", description="Whether the freshness sensor runs as soon as the code location loads.")

    @property
    def max_age(self) -> dt.timedelta:
        return dt.timedelta(hours=self.max_age_hours)


def _status(value: str):
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED


def partitions_to_run(spec: PipelineSpec, root: Path, which: Literal["stale", "all"] = "stale") -> list[str]:
    """The landing entries a re-materialisation should request, in key order."""
    keys = sorted(scan_landing(spec, root).entries)
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
        keys = partitions_to_run(spec, root, entry.partitions)
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
