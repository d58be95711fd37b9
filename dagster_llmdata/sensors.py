"""Sensors built from sensors/*.yaml. `landing`: every new (or changed) file or folder in a
source's landing folder becomes a dynamic partition, and only that partition is materialised."""


import json
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

from .factory import partitions_def_for
from .layout import INVALID_KEY_PARTS
from .spec import PipelineSpec


class LandingSensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["landing"] = "landing"
    name: str | None = None
    pipeline: str
    minimum_interval_seconds: int = Field(30, ge=1)
    default_status: Literal["running", "stopped"] = "running"


class SensorsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sensors: list[LandingSensorSpec] = Field(default_factory=list)


def landing_entries(spec: PipelineSpec, root: Path, unusable: list[str] | None = None) -> dict[str, str]:
    """{partition key: change stamp} for everything in the pipeline's landing folders. Names Dagster
    cannot take as a partition key (a newline, "...") are listed in `unusable` instead."""
    entries: dict[str, str] = {}
    for source in spec.sources:
        folder = root / source.landing
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith((".", "_")) or entry.name.endswith((".tmp", ".part")):
                continue  # hidden files and files still being written
            key = f"{source.name}/{entry.name}"
            if any(bad in key for bad in INVALID_KEY_PARTS):
                if unusable is not None:
                    unusable.append(str(entry))
                continue
            files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
            stamp = max((p.stat().st_mtime_ns for p in files), default=0)
            size = sum(p.stat().st_size for p in files)
            entries[key] = f"{size}-{stamp}"
    return entries


def build_landing_sensor(sensor_spec: LandingSensorSpec, spec: PipelineSpec, root: Path, job) -> dg.SensorDefinition:
    partitions = partitions_def_for(spec)

    @dg.sensor(
        name=sensor_spec.name or f"{spec.pipeline}_landing",
        job=job,
        minimum_interval_seconds=sensor_spec.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if sensor_spec.default_status == "running" else dg.DefaultSensorStatus.STOPPED,
        description=f"New or changed files in the landing folders of {spec.pipeline!r} -> one partition run each.",
    )
    def _landing(context: dg.SensorEvaluationContext):
        unusable: list[str] = []
        entries = landing_entries(spec, root, unusable)
        for path in unusable:
            context.log.warning(f"landing entry {path!r} cannot be a Dagster partition key; rename it to process it")
        # cursor: the change stamp last requested per partition, so an unchanged file is never
        # requested twice and a rewritten one is requested again
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        changed = sorted(k for k, stamp in entries.items() if seen.get(k) != stamp)
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [k for k in changed if k not in known]
        if not changed:
            return dg.SkipReason(f"no new or changed files in {len(entries)} landing entries")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{k}@{entries[k]}", partition_key=k) for k in changed],
            dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=json.dumps({**seen, **{k: entries[k] for k in changed}}, sort_keys=True),
        )

    return _landing
