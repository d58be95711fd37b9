"""A pipeline spec as a Dagster Component: `dg` users put the same YAML as assets/*.yaml under
`attributes:` of a defs.yaml (type: dagster_llmdata.PipelineComponent)."""

from pathlib import Path
from typing import Any

import dagster as dg

from dagster_llmdata.defs.assets import build_pipeline_assets, build_pipeline_job
from dagster_llmdata.defs.resources import default_resources
from dagster_llmdata.defs.landing_sensor import build_landing_sensor
from dagster_llmdata.spec.triggers import LandingSensorSpec
from dagster_llmdata.spec.pipeline import PipelineSpec


class PipelineComponent(dg.Component, dg.Model, dg.Resolvable):
    """One llmdata pipeline: its stage assets, ledger checks, job and landing sensor."""

    pipeline: str
    description: str = ""
    storage: str = "data"
    executor: dict[str, Any] = {}
    sources: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    # where `storage` and the landing folders are relative to; default: the component's folder
    project_root: str | None = None
    landing_sensor: dict[str, Any] | None = {}  # LandingSensorSpec fields; null for no sensor

    def to_spec(self) -> PipelineSpec:
        return PipelineSpec.model_validate(self.model_dump(exclude={"project_root", "landing_sensor"}))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        spec = self.to_spec()
        root = Path(self.project_root) if self.project_root else Path(context.path)
        job = build_pipeline_job(spec)
        sensors = []
        if self.landing_sensor is not None:
            sensor_spec = LandingSensorSpec.model_validate({"pipeline": spec.pipeline, **self.landing_sensor})
            sensors.append(build_landing_sensor(sensor_spec, spec, root, job))
        return dg.Definitions(assets=build_pipeline_assets(spec, root), jobs=[job], sensors=sensors, resources=default_resources())
