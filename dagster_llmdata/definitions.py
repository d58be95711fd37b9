"""A project = assets/*.yaml (specs) + sensors/*.yaml; this turns one into Definitions.

Each file is loaded on its own: a broken spec (bad YAML, unknown operator, a name used twice, a
sensor naming an unknown pipeline) becomes a `SpecProblem` with its file:line, shown by the
`specs` asset and `llmdata status`, and every other pipeline still loads. An agent writes specs,
so one bad file must never take the code location down.

Spec kinds are told apart by their top-level key (`pipeline:`, `mixture:`, ...) through
`SPEC_KINDS`; sensor entries by their `type` through `SENSOR_KINDS`. A feature registers its kind
with one entry and builds its Dagster objects in its own module."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dagster as dg
import yaml
from pydantic import BaseModel, ValidationError

from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.agent.inbox_sensor import build_agent
from dagster_llmdata.defs.assets import build_pipeline_assets, build_pipeline_job
from dagster_llmdata.mixture.mixture_asset import build_mixture
from dagster_llmdata.mixture.feedback_sensor import TrainingFeedbackSensorSpec, build_feedback_sensor
from dagster_llmdata.spec.mixture import load_mixture_spec
from dagster_llmdata.defs.resources import default_resources
from dagster_llmdata.defs.schedules import FreshnessSpec, ScheduleSpec, build_freshness, build_schedule
from dagster_llmdata.defs.landing_sensor import LandingSensorSpec, build_landing_sensor
from dagster_llmdata.spec.pipeline import PipelineSpec, SpecError, describe_validation_error, load_pipeline_spec

PROJECT_ENV = "LLMDATA_PROJECT"
SPECS_ASSET = dg.AssetKey("specs")


@dataclass(frozen=True)
class SpecProblem:
    """One spec file (or one entry in it) that could not be used, and why."""

    path: Path
    message: str  # starts with `<file>:<line>:` where the line is known

    def __str__(self) -> str:
        return self.message if self.message.startswith(str(self.path)) else f"{self.path}: {self.message}"


@dataclass
class Project:
    """Every spec of a project that loaded, and every one that did not."""

    root: Path
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> name -> spec
    sensors: list[tuple[Path, BaseModel]] = field(default_factory=list)
    problems: list[SpecProblem] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # spec name -> the file it came from

    @property
    def pipelines(self) -> dict[str, PipelineSpec]:
        return self.specs.get("pipeline", {})


@dataclass
class Built:
    """What one spec or sensor entry contributes to the Definitions."""

    assets: list = field(default_factory=list)
    asset_checks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    sensors: list = field(default_factory=list)
    schedules: list = field(default_factory=list)


@dataclass(frozen=True)
class SpecKind:
    """A kind of spec in assets/, told by its top-level key; `order` decides build order (a
    mixture is built after the pipelines it reads)."""

    load: Callable[[Path], Any]  # path -> validated spec; raises SpecError naming file:line
    name_of: Callable[[Any], str]
    build: Callable[[Any, Project], Built]
    order: int = 0


@dataclass(frozen=True)
class SensorKind:
    """A kind of entry in sensors/*.yaml, told by its `type`."""

    model: type[BaseModel]
    build: Callable[[Any, Project, dict[str, Any]], Built]  # (entry, project, jobs by pipeline)


def _build_pipeline(spec: PipelineSpec, project: Project) -> Built:
    return Built(assets=build_pipeline_assets(spec, project.root), jobs=[build_pipeline_job(spec)])


def _build_landing(entry: LandingSensorSpec, project: Project, jobs: dict[str, Any]) -> Built:
    spec = _pipeline_named(project, entry.pipeline)
    return Built(sensors=[build_landing_sensor(entry, spec, project.root, jobs[spec.pipeline])])


def _build_schedule(entry: ScheduleSpec, project: Project, jobs: dict[str, Any]) -> Built:
    spec = _pipeline_named(project, entry.pipeline)
    return Built(schedules=[build_schedule(entry, spec, project.root, jobs[spec.pipeline])])


def _build_freshness(entry: FreshnessSpec, project: Project, jobs: dict[str, Any]) -> Built:
    checks, sensor = build_freshness(entry, _pipeline_named(project, entry.pipeline))
    return Built(asset_checks=list(checks), sensors=[sensor])


def _pipeline_named(project: Project, name: str) -> PipelineSpec:
    if name not in project.pipelines:
        raise SpecError(f"names unknown pipeline {name!r} (loaded: {sorted(project.pipelines) or 'none'})")
    return project.pipelines[name]


SPEC_KINDS: dict[str, SpecKind] = {
    "pipeline": SpecKind(load=load_pipeline_spec, name_of=lambda s: s.pipeline, build=_build_pipeline),
    "mixture": SpecKind(load=load_mixture_spec, name_of=lambda s: s.mixture, build=build_mixture, order=1),
}
SENSOR_KINDS: dict[str, SensorKind] = {
    "landing": SensorKind(model=LandingSensorSpec, build=_build_landing),
    "training_feedback": SensorKind(model=TrainingFeedbackSensorSpec, build=build_feedback_sensor),
    "schedule": SensorKind(model=ScheduleSpec, build=_build_schedule),
    "freshness": SensorKind(model=FreshnessSpec, build=_build_freshness),
    "agent": SensorKind(model=AgentConfig, build=build_agent),
}


def read_project(root: str | Path) -> Project:
    """Load every spec and sensor file of a project, collecting problems instead of raising."""
    project = Project(root=Path(root).resolve())
    for path in sorted((project.root / "assets").glob("*.yaml")):
        _read_spec_file(project, path)
    for path in sorted((project.root / "sensors").glob("*.yaml")):
        _read_sensor_file(project, path)
    return project


def _read_spec_file(project: Project, path: Path) -> None:
    try:
        kind_name = _spec_kind_of(path)
        kind = SPEC_KINDS[kind_name]
        spec = kind.load(path)
        name = kind.name_of(spec)
    except SpecError as exc:
        project.problems.append(SpecProblem(path, str(exc)))
        return
    if name in project.files:  # names are asset key prefixes: unique across kinds
        project.problems.append(SpecProblem(path, f"{path}:1: name {name!r} is already used by {project.files[name]}; "
                                                  "this file is not loaded"))
        return
    project.files[name] = path
    project.specs.setdefault(kind_name, {})[name] = spec


def _spec_kind_of(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    kinds = [k for k in SPEC_KINDS if isinstance(data, dict) and k in data]
    if len(kinds) != 1:
        raise SpecError(f"{path}:1: a spec has exactly one of the top-level keys {', '.join(f'`{k}:`' for k in SPEC_KINDS)}"
                        + (f" (this one has {', '.join(kinds)})" if kinds else ""))
    return kinds[0]


def _read_sensor_file(project: Project, path: Path) -> None:
    try:
        text = path.read_text()
        node, data = yaml.compose(text), yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        project.problems.append(SpecProblem(path, f"{path}:{mark.line + 1 if mark else 1}: cannot read: {getattr(exc, 'problem', exc)}"))
        return
    if data is None:
        return  # an empty file declares no sensors
    if not isinstance(data, dict) or set(data) - {"sensors"} or not isinstance(data.get("sensors", []), list):
        project.problems.append(SpecProblem(path, f"{path}:1: a sensors file is a mapping with one key, `sensors:`, holding a list"))
        return
    entries = data.get("sensors") or []
    for i, entry in enumerate(entries):
        entry_node = node.value[0][1].value[i] if node is not None else None
        line = entry_node.start_mark.line + 1 if entry_node is not None else 1
        kind = SENSOR_KINDS.get(entry.get("type", "landing")) if isinstance(entry, dict) else None
        if kind is None:
            project.problems.append(SpecProblem(path, f"{path}:{line}: sensors.{i}: unknown sensor type "
                                                      f"{entry.get('type') if isinstance(entry, dict) else entry!r}; known: {', '.join(SENSOR_KINDS)}"))
            continue
        try:
            project.sensors.append((path, kind.model.model_validate(entry)))
        except ValidationError as exc:
            project.problems.append(SpecProblem(path, describe_validation_error(path, entry_node, exc, prefix=[f"sensors.{i}"])))


def load_project(root: str | Path | None = None) -> dg.Definitions:
    """The Definitions of a project: every spec that loads, every sensor whose targets exist, and
    (while any spec is broken) the `specs` asset that reports the rest."""
    project = read_project(root or os.environ.get(PROJECT_ENV) or os.getcwd())
    built = Built()
    jobs: dict[str, Any] = {}
    for kind_name, kind in sorted(SPEC_KINDS.items(), key=lambda kv: kv[1].order):
        for name, spec in list(project.specs.get(kind_name, {}).items()):
            try:
                part = kind.build(spec, project)
            except Exception as exc:  # a spec that validates but cannot become Dagster objects
                project.problems.append(SpecProblem(project.files[name], f"cannot build {kind_name} {name!r}: {exc}"))
                del project.specs[kind_name][name]
                continue
            _extend(built, part)
            if kind_name == "pipeline":
                jobs[name] = part.jobs[0]
    for path, entry in project.sensors:
        try:
            _extend(built, SENSOR_KINDS[entry.type].build(entry, project, jobs))
        except (SpecError, KeyError, ValueError, dg.DagsterInvalidDefinitionError) as exc:
            project.problems.append(SpecProblem(path, f"{path}: sensor {getattr(entry, 'name', None) or entry.type!r}: {exc.args[0]}"))
    if project.problems:  # shown only while something is broken, so a clean project's graph is its pipelines
        built.assets.append(_specs_asset(project))
    return dg.Definitions(
        assets=built.assets, asset_checks=built.asset_checks or None, jobs=built.jobs, sensors=built.sensors,
        schedules=built.schedules, resources=default_resources(),
    )


def _extend(into: Built, part: Built) -> None:
    for name in ("assets", "asset_checks", "jobs", "sensors", "schedules"):
        getattr(into, name).extend(getattr(part, name))


def _specs_table(project: Project) -> str:
    rows = ["| file | state |", "| --- | --- |"]
    for name, path in sorted(project.files.items(), key=lambda kv: str(kv[1])):
        rows.append(f"| {path.relative_to(project.root)} | loaded ({name}) |")
    for problem in project.problems:
        rows.append(f"| {problem.path.relative_to(project.root)} | **broken**: {str(problem).replace('|', '/').replace(chr(10), '<br>')} |")
    return "\n".join(rows)


def _specs_asset(project: Project) -> dg.AssetsDefinition:
    """The project's spec files as an asset: its description lists what did not load, and its
    check, re-reading the files when it runs, fails until every spec loads."""
    problems = "\n".join(f"- {p}" for p in project.problems) or "none"
    root = project.root

    @dg.asset(
        key=SPECS_ASSET, group_name="llmdata",
        description=f"The spec files in {root}/assets and {root}/sensors. Broken now:\n{problems}",
        metadata={"n_problems": len(project.problems), "specs": dg.MetadataValue.md(_specs_table(project))},
        check_specs=[dg.AssetCheckSpec("specs_load", asset=SPECS_ASSET, description="Every spec file loads.")],
    )
    def specs():
        now = read_project(root)
        yield dg.MaterializeResult(
            metadata={"n_loaded": len(now.files), "n_problems": len(now.problems), "specs": dg.MetadataValue.md(_specs_table(now))},
            check_results=[dg.AssetCheckResult(
                check_name="specs_load", passed=not now.problems, severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(str(p) for p in now.problems)[:2000] or "every spec loads",
                metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in now.problems) or "none")},
            )],
        )

    return specs


def load_pipeline_specs(root: Path) -> list[PipelineSpec]:
    """The project's pipelines; raises SpecError if any spec file is broken (for commands that
    must not act on a half-loaded project)."""
    project = read_project(root)
    if project.problems:
        raise SpecError("\n".join(str(p) for p in project.problems))
    return list(project.pipelines.values())
