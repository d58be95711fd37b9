"""Sensors built from sensors/*.yaml. `landing`: every new (or changed) file or folder in a
source's landing folder becomes a dynamic partition, and only that partition is materialised."""


from pathlib import Path
from typing import Literal

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import BaseModel, ConfigDict, Field

from .factory import partitions_def_for
from .layout import partition_folder
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


def landing_entries(spec: PipelineSpec, root: Path) -> dict[str, str]:
    """{partition key: change stamp} for everything in the pipeline's landing folders."""
    entries: dict[str, str] = {}
    for source in spec.sources:
        folder = root / source.landing
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith((".", "_")) or entry.name.endswith((".tmp", ".part")):
                continue  # hidden files and files still being written
            key = f"{source.name}/{entry.name}"
            if partition_folder(key) != key:
                continue  # names that can't be a safe partition folder are skipped (and logged by the sensor)
            files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
            stamp = max((p.stat().st_mtime_ns for p in files), default=0)
            size = sum(p.stat().st_size for p in files)
            entries[key] = f"{size}-{stamp}"
    return entries


def build_landing_sensor(sensor_spec: LandingSensorSpec, spec: PipelineSpec, root: Path, job: "UnresolvedAssetJobDefinition") -> dg.SensorDefinition:
    partitions = partitions_def_for(spec)

    @dg.sensor(
        name=sensor_spec.name or f"{spec.pipeline}_landing",
        job=job,
        minimum_interval_seconds=sensor_spec.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if sensor_spec.default_status == "running" else dg.DefaultSensorStatus.STOPPED,
        description=f"New or changed files in the landing folders of {spec.pipeline!r} -> one partition run each.",
    )
    def _landing(context: dg.SensorEvaluationContext):
        entries = landing_entries(spec, root)
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = sorted(k for k in entries if k not in known)
        # run_key includes the change stamp: a rewritten file is processed again, an unchanged one never
        requests = [dg.RunRequest(run_key=f"{k}@{entries[k]}", partition_key=k) for k in sorted(entries)]
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
        )

    return _landing
