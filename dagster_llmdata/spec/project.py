"""The project model: every spec in assets/*.yaml and every trigger in sensors/*.yaml, read once.

Each file is loaded on its own: a broken spec (bad YAML, unknown operator, a name used twice, a
sensor naming an unknown pipeline) becomes a `SpecProblem` with its file:line, and every other
spec still loads. An agent writes specs, so one bad file must never take the code location down.

Spec kinds are told apart by their top-level key (`pipeline:`, `mixture:`, ...) through
`SPEC_KINDS`; sensor entries by their `type` through `SENSOR_KINDS`. Building Dagster objects
from them is `dagster_llmdata.definitions`' job, not this module's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from dagster_llmdata.errors import SpecError
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.spec.mixture import MixtureSpec, load_mixture_spec
from dagster_llmdata.spec.pipeline import PipelineSpec, load_pipeline_spec
from dagster_llmdata.spec.pipeline_sources import resolve_pipeline_sources
from dagster_llmdata.spec.yaml_loader import describe_validation_error, parse_yaml
from dagster_llmdata.spec.triggers import FreshnessSpec, LandingSensorSpec, ScheduleSpec, TrainingFeedbackSensorSpec

PROJECT_ENV = "LLMDATA_PROJECT"


@dataclass(frozen=True)
class SpecProblem:
    """One spec file (or one entry in it) that could not be used, and why."""

    path: Path
    message: str  # starts with `<file>:<line>:` where the line is known
    sensor_type: str | None = None  # for a bad entry of sensors/*.yaml: the type it declared

    def __str__(self) -> str:
        return self.message if self.message.startswith(str(self.path)) else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class SpecKind:
    """A kind of spec in assets/, told by its top-level key; `order` decides build order (a
    mixture is built after the pipelines it reads)."""

    load: Callable[[Path], Any]  # path -> validated spec; raises SpecError naming file:line
    name_of: Callable[[Any], str]
    order: int = 0


SPEC_KINDS: dict[str, SpecKind] = {
    "pipeline": SpecKind(load=load_pipeline_spec, name_of=lambda s: s.pipeline),
    "mixture": SpecKind(load=load_mixture_spec, name_of=lambda s: s.mixture, order=1),
}


@dataclass(frozen=True)
class SensorKind:
    """A kind of entry in sensors/*.yaml, told by its `type` (default `landing`)."""

    model: type[BaseModel]


SENSOR_KINDS: dict[str, SensorKind] = {
    "landing": SensorKind(LandingSensorSpec),
    "training_feedback": SensorKind(TrainingFeedbackSensorSpec),
    "schedule": SensorKind(ScheduleSpec),
    "freshness": SensorKind(FreshnessSpec),
    "agent": SensorKind(AgentConfig),
}


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

    @property
    def mixtures(self) -> dict[str, MixtureSpec]:
        return self.specs.get("mixture", {})

    def pipeline(self, name: str) -> PipelineSpec:
        if name not in self.pipelines:
            raise SpecError(f"names unknown pipeline {name!r} (loaded: {sorted(self.pipelines) or 'none'})")
        return self.pipelines[name]

    def agent_config(self) -> AgentConfig:
        """The first `type: agent` entry of sensors/*.yaml, else the defaults; an agent entry that
        does not validate is an error (the agent must not run on settings nobody wrote)."""
        found = next((entry for _, entry in self.sensors if isinstance(entry, AgentConfig)), None)
        if found is not None:
            return found
        broken = [p for p in self.problems if p.sensor_type == "agent"]
        if broken:
            raise SpecError(str(broken[0]))
        return AgentConfig()


def read_project(root: str | Path) -> Project:
    """Load every spec and sensor file of a project, collecting problems instead of raising."""
    project = Project(root=Path(root).resolve())
    for path in sorted((project.root / "assets").glob("*.yaml")):
        _read_spec_file(project, path)
    _resolve_pipeline_sources(project)
    for path in sorted((project.root / "sensors").glob("*.yaml")):
        _read_sensor_file(project, path)
    return project


def agent_config(root: str | Path) -> AgentConfig:
    """The agent's settings in the project at `root` (see `Project.agent_config`)."""
    return read_project(root).agent_config()


def load_pipeline_specs(root: Path) -> list[PipelineSpec]:
    """The project's pipelines; raises SpecError if any spec file is broken (for commands that
    must not act on a half-loaded project)."""
    project = read_project(root)
    if project.problems:
        raise SpecError("\n".join(str(p) for p in project.problems))
    return list(project.pipelines.values())


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


def _resolve_pipeline_sources(project: Project) -> None:
    """A pipeline reading another's stage is usable once that stage exists and no cycle loops
    back; one that is not becomes a problem (with its file:line) and is not loaded."""
    others = {name: kind for kind, specs in project.specs.items() if kind != "pipeline" for name in specs}
    for name, message in resolve_pipeline_sources(project.pipelines, project.files, others).items():
        project.problems.append(SpecProblem(project.files[name], message))
        del project.specs["pipeline"][name]


def _spec_kind_of(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from None
    _, data = parse_yaml(path, text)
    kinds = [k for k in SPEC_KINDS if isinstance(data, dict) and k in data]
    if len(kinds) != 1:
        raise SpecError(f"{path}:1: a spec has exactly one of the top-level keys {', '.join(f'`{k}:`' for k in SPEC_KINDS)}"
                        + (f" (this one has {', '.join(kinds)})" if kinds else ""))
    return kinds[0]


def _read_sensor_file(project: Project, path: Path) -> None:
    try:
        node, data = parse_yaml(path, path.read_text())
    except OSError as exc:
        project.problems.append(SpecProblem(path, f"{path}:1: cannot read: {exc}"))
        return
    except SpecError as exc:
        project.problems.append(SpecProblem(path, str(exc).replace(": invalid YAML: ", ": cannot read: ", 1)))
        return
    if data is None:
        return  # an empty file declares no sensors
    if not isinstance(data, dict) or set(data) - {"sensors"} or not isinstance(data.get("sensors", []), list):
        project.problems.append(SpecProblem(path, f"{path}:1: a sensors file is a mapping with one key, `sensors:`, holding a list"))
        return
    for i, entry in enumerate(data.get("sensors") or []):
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
            project.problems.append(SpecProblem(path, describe_validation_error(path, entry_node, exc, prefix=[f"sensors.{i}"]),
                                                sensor_type=entry.get("type", "landing")))
