"""Every spec kind as a Dagster Component, so a `dg` project declares pipelines, mixtures and the
agent in defs/<name>/defs.yaml instead of assets/ and sensors/.

A component's `attributes:` are the same YAML as the assets/*.yaml spec (or the sensors/*.yaml
`type: agent` entry), plus a few component-only keys (`project_root`, the sensors it adds, whether
it binds resources); each builds the same Dagster objects as `load_project` does for that spec.

Where files live: `project_root` is what `storage:`, landing folders and the agent's inbox are
relative to, as the project folder is for assets/ specs. Unset, it is the dg project's root (the
folder with pyproject.toml); a relative one is taken from there.

Which pipelines a mixture reads: the PipelineComponents of the same dg project (anywhere in its
defs folder), never assets/*.yaml, so a dg project is described by its defs folder alone. The
mixture and the pipelines it reads must share a `project_root` (they do by default): the mixture
finds their datasets under it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from dagster_llmdata.errors import SpecError
from dagster_llmdata.agent.inbox_sensor import build_agent
from dagster_llmdata.defs.assets import build_pipeline_assets, build_pipeline_job
from dagster_llmdata.components.scaffolders import AgentScaffolder, MixtureScaffolder, PipelineScaffolder
from dagster_llmdata.defs.landing_sensor import build_landing_sensor
from dagster_llmdata.defs.resources import default_resources
from dagster_llmdata.mixture.feedback_sensor import build_feedback_sensor
from dagster_llmdata.mixture.mixture_asset import build_mixture
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.spec.mixture import MixtureSpec
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.spec.pipeline_sources import resolve_pipeline_sources
from dagster_llmdata.spec.project import Project
from dagster_llmdata.spec.triggers import LandingSensorSpec, TrainingFeedbackSensorSpec

# keys a component accepts beyond its spec's, per component (the test holds the rest to the spec)
COMPONENT_ONLY_FIELDS = {"project_root", "landing_sensor", "training_feedback", "bind_resources"}


def _like(spec: type[BaseModel], name: str) -> Any:
    """A component field with the spec field's default and description. Its constraints stay with
    the spec, which validates the attributes in `to_spec`: dg derives a schema from component
    fields and refuses nested models with constrained fields, so nested specs are dicts here."""
    info = spec.model_fields[name]
    if info.is_required():
        return Field(description=info.description)
    if info.default_factory is not None:
        made = info.default_factory()
        return Field(default_factory=lambda: made.model_dump() if isinstance(made, BaseModel) else type(made)(made),
                     description=info.description)
    return Field(info.default, description=info.description)


class _SpecComponent(dg.Component, dg.Model, dg.Resolvable):
    """What the three components share: attributes validated by their spec model, a project root."""

    project_root: str | None = Field(
        None, description="What `storage:` and the other folders are relative to; default: the dg project's root "
                          "(a relative path is taken from there).")

    _spec: Any = PrivateAttr(None)

    @classmethod
    def spec_model(cls) -> type[BaseModel]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _valid_spec(self) -> Any:
        """Validated as the component loads, so an error names this component's defs.yaml (not a
        mixture that reads it). Only the keys written are passed: the spec's defaults apply."""
        model = self.spec_model()
        try:
            self._spec = model.model_validate(self.model_dump(include=set(model.model_fields), exclude_unset=True))
        except ValidationError as exc:
            raise ValueError(f"not a valid {model.__name__}: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())) from None
        return self

    def to_spec(self) -> Any:
        """The spec the same YAML in assets/ (or sensors/) gives."""
        return self._spec

    def root(self, context: dg.ComponentLoadContext) -> Path:
        base = Path(context.project_root)
        return (base / self.project_root).resolve() if self.project_root else base.resolve()


@lru_cache(maxsize=8)
def _resources_for(env: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return default_resources()


def shared_resources() -> dict[str, Any]:
    """The operators' runtime resources, one object per key for every component of a process:
    Definitions.merge refuses two different objects under one key. Re-made when $LLMDATA_* changes."""
    return _resources_for(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LLMDATA_"))))


def _with_resources(defs: dg.Definitions, bind: bool) -> dg.Definitions:
    return dg.Definitions.merge(defs, dg.Definitions(resources=shared_resources())) if bind else defs


_BIND = Field(True, description="Bind the operators' runtime resources (`judge`); false when the project binds its own.")


@dg.scaffold_with(PipelineScaffolder)
class PipelineComponent(_SpecComponent):
    """An llmdata pipeline (the YAML of an assets/*.yaml pipeline spec): its stage assets, ledger checks, job and landing sensor."""

    pipeline: str = _like(PipelineSpec, "pipeline")
    description: str = _like(PipelineSpec, "description")
    storage: str = _like(PipelineSpec, "storage")
    executor: dict[str, Any] = _like(PipelineSpec, "executor")
    sources: list[dict[str, Any]] = _like(PipelineSpec, "sources")
    source: dict[str, Any] | None = _like(PipelineSpec, "source")
    stages: list[dict[str, Any]] = _like(PipelineSpec, "stages")
    automation: dict[str, Any] | None = _like(PipelineSpec, "automation")
    landing_sensor: dict[str, Any] | None = Field(
        default_factory=dict, description="The landing sensor's settings (a sensors/ `type: landing` entry without "
                                          "`pipeline`); null for no sensor.")
    bind_resources: bool = _BIND

    @classmethod
    def spec_model(cls) -> type[BaseModel]:
        return PipelineSpec

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        spec, root = self.to_spec(), self.root(context)
        if spec.source is not None:
            self._resolve_source(spec, root, context)
        job = build_pipeline_job(spec)
        sensors = []
        # a pipeline reading another's stage has no landing folders: no sensor unless one is asked for (which says why not)
        if self.landing_sensor is not None and (spec.source is None or "landing_sensor" in self.model_fields_set):
            entry = LandingSensorSpec.model_validate({"pipeline": spec.pipeline, **self.landing_sensor})
            sensors.append(build_landing_sensor(entry, spec, root, job))
        defs = dg.Definitions(assets=build_pipeline_assets(spec, root), jobs=[job], sensors=sensors)
        return _with_resources(defs, self.bind_resources)

    def _resolve_source(self, spec: PipelineSpec, root: Path, context: dg.ComponentLoadContext) -> None:
        """`source:` names another PipelineComponent's stage of the same dg project (never assets/, as
        for a mixture): resolved across them as `read_project` resolves assets/ specs, and the upstream
        must share this `project_root` (its `storage:` is relative to it)."""
        pipelines: dict[str, PipelineSpec] = {}
        files: dict[str, Path] = {}
        upstream_root: Path | None = None
        for component in context.component_tree.get_all_components(of_type=PipelineComponent):
            other = component.to_spec()
            pipelines[other.pipeline] = other
            # where an error points: this component's defs.yaml; the others are named (their folders are dg's to know)
            files[other.pipeline] = (context.path / "defs.yaml") if component is self else Path(f"PipelineComponent {other.pipeline!r}")
            if other.pipeline == spec.source.pipeline:
                upstream_root = component.root(context)
        mixtures = {c.to_spec().mixture: "mixture" for c in context.component_tree.get_all_components(of_type=MixtureComponent)}
        problem = resolve_pipeline_sources(pipelines, files, mixtures).get(spec.pipeline)
        if problem:
            raise SpecError(problem)
        if upstream_root is not None and upstream_root != root:
            raise SpecError(f"pipeline {spec.pipeline!r} (project_root {root}) reads {spec.source.dataset} of a pipeline with "
                            f"project_root {upstream_root}; give them the same project_root")


@dg.scaffold_with(MixtureScaffolder)
class MixtureComponent(_SpecComponent):
    """An llmdata training mixture (the YAML of an assets/*.yaml mixture spec) over the project's PipelineComponents: its manifest asset, check and training-run asset."""

    mixture: str = _like(MixtureSpec, "mixture")
    description: str = _like(MixtureSpec, "description")
    storage: str = _like(MixtureSpec, "storage")
    inputs: list[dict[str, Any]] = _like(MixtureSpec, "inputs")
    token_budget: int = _like(MixtureSpec, "token_budget")
    algorithm: dict[str, Any] = _like(MixtureSpec, "algorithm")
    weights: dict[str, float] = _like(MixtureSpec, "weights")
    domains: list[str] | None = _like(MixtureSpec, "domains")
    seed: int = _like(MixtureSpec, "seed")
    epoch_cap: int | None = _like(MixtureSpec, "epoch_cap")
    feedback_store: str = _like(MixtureSpec, "feedback_store")
    training_feedback: dict[str, Any] | None = Field(
        None, description="Add the training-feedback sensor with these settings (a sensors/ `type: training_feedback` "
                          "entry without `type` and `mixture`); null for none.")

    @classmethod
    def spec_model(cls) -> type[BaseModel]:
        return MixtureSpec

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        spec, root = self.to_spec(), self.root(context)
        project = Project(root=root, specs={"pipeline": self._pipelines_read(spec, root, context), "mixture": {spec.mixture: spec}})
        parts = [build_mixture(spec, project)]
        if self.training_feedback is not None:
            entry = TrainingFeedbackSensorSpec.model_validate(
                {**self.training_feedback, "type": "training_feedback", "mixture": spec.mixture})
            parts.append(build_feedback_sensor(entry, project, {}))
        return dg.Definitions.merge(*parts)

    @staticmethod
    def _pipelines_read(spec: MixtureSpec, root: Path, context: dg.ComponentLoadContext) -> dict[str, PipelineSpec]:
        """The specs of the project's PipelineComponents; those the mixture reads must share its root."""
        pipelines: dict[str, PipelineSpec] = {}
        elsewhere: list[str] = []
        wanted = {i.dataset.split("/")[0] for i in spec.inputs}
        for component in context.component_tree.get_all_components(of_type=PipelineComponent):
            pipeline = component.to_spec()
            pipelines[pipeline.pipeline] = pipeline
            if pipeline.pipeline in wanted and component.root(context) != root:
                elsewhere.append(f"{pipeline.pipeline} (project_root {component.root(context)})")
        if elsewhere:
            raise SpecError(f"mixture {spec.mixture!r} (project_root {root}) reads pipelines with another project_root: "
                            f"{', '.join(elsewhere)}; give them the same project_root")
        return pipelines


@dg.scaffold_with(AgentScaffolder)
class AgentComponent(_SpecComponent):
    """The llmdata agent (the YAML of a sensors/*.yaml `type: agent` entry): intents dropped in its inbox become verified pipeline proposals.

    As with the sensors/ entry, a proposal run re-reads its settings from the project root's
    sensors/*.yaml (agent/inbox_sensor.config_for), and approved proposals go to assets/: these
    attributes set the sensor (name, inbox, landing_root, interval, status) and the job."""

    type: Literal["agent"] = _like(AgentConfig, "type")
    name: str = _like(AgentConfig, "name")
    inbox: str = _like(AgentConfig, "inbox")
    landing_root: str | None = _like(AgentConfig, "landing_root")
    default_goal: str = _like(AgentConfig, "default_goal")
    planner: dict[str, Any] = _like(AgentConfig, "planner")
    sample_docs: int = _like(AgentConfig, "sample_docs")
    max_repair_rounds: int = _like(AgentConfig, "max_repair_rounds")
    bounds: dict[str, Any] = _like(AgentConfig, "bounds")
    allowed_roots: list[str] = _like(AgentConfig, "allowed_roots")
    auto_approve: bool = _like(AgentConfig, "auto_approve")
    add_landing_sensor: bool = _like(AgentConfig, "add_landing_sensor")
    webserver_url: str = _like(AgentConfig, "webserver_url")
    location_name: str = _like(AgentConfig, "location_name")
    minimum_interval_seconds: int = _like(AgentConfig, "minimum_interval_seconds")
    default_status: Literal["running", "stopped"] = _like(AgentConfig, "default_status")
    bind_resources: bool = _BIND

    @classmethod
    def spec_model(cls) -> type[BaseModel]:
        return AgentConfig

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        defs = build_agent(self.to_spec(), Project(root=self.root(context)), {})
        return _with_resources(defs, self.bind_resources)
