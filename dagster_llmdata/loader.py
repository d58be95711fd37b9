"""A project = assets/*.yaml (pipelines) + sensors/*.yaml; this turns one into Definitions."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml
from pydantic import ValidationError

from .factory import build_pipeline_assets, build_pipeline_job
from .resources import default_resources
from .sensors import SensorsFile, build_landing_sensor
from .spec import PipelineSpec, SpecError, load_pipeline_spec

PROJECT_ENV = "LLMDATA_PROJECT"


def load_pipeline_specs(root: Path) -> list[PipelineSpec]:
    specs = [load_pipeline_spec(p) for p in sorted((root / "assets").glob("*.yaml"))]
    names = [s.pipeline for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SpecError(f"{root / 'assets'}: pipeline names used twice: {sorted(dupes)}")
    return specs


def load_sensor_specs(root: Path) -> list[tuple[Path, SensorsFile]]:
    out = []
    for path in sorted((root / "sensors").glob("*.yaml")):
        try:
            out.append((path, SensorsFile.model_validate(yaml.safe_load(path.read_text()) or {})))
        except (ValidationError, yaml.YAMLError) as exc:
            raise SpecError(f"{path}: {exc}") from None
    return out


def load_project(root: str | Path | None = None) -> dg.Definitions:
    root = Path(root or os.environ.get(PROJECT_ENV) or os.getcwd()).resolve()
    specs = {s.pipeline: s for s in load_pipeline_specs(root)}
    assets, jobs, sensors = [], {}, []
    for spec in specs.values():
        assets.extend(build_pipeline_assets(spec, root))
        jobs[spec.pipeline] = build_pipeline_job(spec)
    for path, sensors_file in load_sensor_specs(root):
        for s in sensors_file.sensors:
            if s.pipeline not in specs:
                raise SpecError(f"{path}: sensor for unknown pipeline {s.pipeline!r} (known: {sorted(specs)})")
            sensors.append(build_landing_sensor(s, specs[s.pipeline], root, jobs[s.pipeline]))
    return dg.Definitions(assets=assets, jobs=list(jobs.values()), sensors=sensors, resources=default_resources())
