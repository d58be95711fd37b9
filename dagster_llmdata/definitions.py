"""The one place that assembles `dg.Definitions` from a project (assets/*.yaml + sensors/*.yaml).

The project model (`spec.project.read_project`) says what loaded and what did not; here each spec
kind and each sensor type has a builder returning its own `dg.Definitions`, and the parts are
merged. A spec that validates but cannot become Dagster objects joins the project's problems, so
the `specs` asset reports it and every other spec still loads.

That tolerance is right for the UI and the agent, wrong for CI: with $LLMDATA_STRICT=1 (and under
`llmdata check`) any problem makes loading fail with every file:line, so `dagster definitions
validate` fails too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from dagster_llmdata.errors import SpecError
from dagster_llmdata.agent.inbox_sensor import build_agent
from dagster_llmdata.defs.assets import build_pipeline_assets, build_pipeline_job
from dagster_llmdata.defs.landing_sensor import build_landing_sensor
from dagster_llmdata.defs.resources import default_resources
from dagster_llmdata.defs.schedules import build_freshness, build_schedule
from dagster_llmdata.defs.specs_asset import build_specs_asset
from dagster_llmdata.mixture.feedback_sensor import build_feedback_sensor
from dagster_llmdata.mixture.mixture_asset import build_mixture
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.spec.project import PROJECT_ENV, SPEC_KINDS, Project, SpecProblem, read_project

STRICT_ENV = "LLMDATA_STRICT"

Jobs = dict[str, dg.JobDefinition]  # pipeline name -> its job, for the sensors that run it


def _build_pipeline(spec: PipelineSpec, project: Project) -> dg.Definitions:
    return dg.Definitions(assets=build_pipeline_assets(spec, project.root), jobs=[build_pipeline_job(spec)])


def _build_landing(entry, project: Project, jobs: Jobs) -> dg.Definitions:
    spec = project.pipeline(entry.pipeline)
    return dg.Definitions(sensors=[build_landing_sensor(entry, spec, project.root, jobs[spec.pipeline])])


def _build_schedule(entry, project: Project, jobs: Jobs) -> dg.Definitions:
    spec = project.pipeline(entry.pipeline)
    return dg.Definitions(schedules=[build_schedule(entry, spec, project.root, jobs[spec.pipeline])])


def _build_freshness(entry, project: Project, jobs: Jobs) -> dg.Definitions:
    checks, sensor = build_freshness(entry, project.pipeline(entry.pipeline))
    return dg.Definitions(asset_checks=list(checks), sensors=[sensor])


# spec kind (its top-level key) -> builder; sensor type -> builder
SPEC_BUILDERS: dict[str, Callable[[Any, Project], dg.Definitions]] = {
    "pipeline": _build_pipeline,
    "mixture": build_mixture,
}
SENSOR_BUILDERS: dict[str, Callable[[Any, Project, Jobs], dg.Definitions]] = {
    "landing": _build_landing,
    "training_feedback": build_feedback_sensor,
    "schedule": _build_schedule,
    "freshness": _build_freshness,
    "agent": build_agent,
}


def build_definitions(project: Project, strict: bool = False) -> dg.Definitions:
    """Every spec that builds, every sensor whose targets exist, and (while anything is broken)
    the `specs` asset that reports the rest; `strict`: raise SpecError listing the problems instead."""
    parts: list[dg.Definitions] = []
    jobs: Jobs = {}
    for kind_name, kind in sorted(SPEC_KINDS.items(), key=lambda kv: kv[1].order):
        for name, spec in list(project.specs.get(kind_name, {}).items()):
            try:
                part = SPEC_BUILDERS[kind_name](spec, project)
            except Exception as exc:  # a spec that validates but cannot become Dagster objects
                project.problems.append(SpecProblem(project.files[name], f"cannot build {kind_name} {name!r}: {exc}"))
                del project.specs[kind_name][name]
                continue
            parts.append(part)
            if kind_name == "pipeline":
                jobs[name] = next(iter(part.jobs or []))
    for path, entry in project.sensors:
        try:
            parts.append(SENSOR_BUILDERS[entry.type](entry, project, jobs))
        except (SpecError, KeyError, ValueError, dg.DagsterInvalidDefinitionError) as exc:
            project.problems.append(SpecProblem(path, f"{path}: sensor {getattr(entry, 'name', None) or entry.type!r}: {exc.args[0]}"))
    if project.problems and strict:
        raise SpecError(f"{len(project.problems)} broken spec(s) in {project.root} ({STRICT_ENV}=1 / llmdata check):\n"
                        + "\n".join(str(p) for p in project.problems))
    if project.problems:  # shown only while something is broken, so a clean project's graph is its pipelines
        parts.append(dg.Definitions(assets=[build_specs_asset(project)]))
    return dg.Definitions.merge(*parts, dg.Definitions(resources=default_resources()))


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def load_project(root: str | Path | None = None, strict: bool | None = None) -> dg.Definitions:
    """The Definitions of the project at `root` (default $LLMDATA_PROJECT, else the working
    directory); `strict` (default $LLMDATA_STRICT) fails on any broken spec or sensor entry."""
    project = read_project(root or os.environ.get(PROJECT_ENV) or os.getcwd())
    return build_definitions(project, strict=strict_from_env() if strict is None else strict)
