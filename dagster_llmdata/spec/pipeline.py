"""Pipeline specs: the YAML a user (or the agent) writes, validated with errors that name the
file, line and field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from dagster_llmdata.spec.yaml_loader import PARAM_ERROR, load_model
from dagster_llmdata.operators import REGISTRY, did_you_mean, get_operator
from dagster_llmdata.operators.ingest import Format
from dagster_llmdata.operators.source import SourceOperator
from dagster_llmdata.config import ExecutorConfig

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
CRON = r"^\S+( \S+){4}$"  # five fields; Dagster checks the rest when it builds the condition


class SourceSpec(BaseModel):
    """Where raw data lands and how to read it (these settings are handed to the `ingest` stage)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, description="Source name; partition keys are `<source>/<landing entry>`.")
    landing: str = Field(
        min_length=1,
        description="Landing folder, relative to the project root; every file or sub-folder in it is one partition.",
    )
    format: Format = Field("auto", description="Raw format; `auto` tells it from each file's name.")
    text_field: str = Field("text", min_length=1, description="Field (JSONL/Parquet/CSV) that holds the document text.")
    id_field: str | None = Field("id", description="Field with the source's own document id; unset: ids are hashes of file and position.")
    domain: str | None = Field(None, description="Domain for every document of this source (default: the source name).")
    domain_field: str | None = Field("domain", description="Field naming each document's domain, when the records carry one.")

    @model_validator(mode="before")
    @classmethod
    def _not_a_pipeline(cls, data: Any) -> Any:
        if isinstance(data, dict) and "pipeline" in data:  # the likely slip for "read another pipeline"
            raise ValueError("another pipeline's stage is read through the top-level `source: {pipeline: ..., stage: ...}` "
                             "(instead of `sources:`), not through an entry of `sources`")
        return data


class PipelineSourceSpec(BaseModel):
    """Another pipeline's stage as this pipeline's source: its first (ingest) stage reads that
    stage's kept documents, partition by partition, under the same partition keys."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(pattern=NAME, description="The upstream pipeline (loaded from assets/ of the same project).")
    stage: str = Field(pattern=NAME, description="Its stage whose kept documents this pipeline reads.")

    @property
    def dataset(self) -> str:
        return f"{self.pipeline}/{self.stage}"


@dataclass(frozen=True)
class ResolvedSource:
    """A `source:` checked against the project (`spec.pipeline_sources.resolve_pipeline_sources`)."""

    pipeline: str
    stage: str
    storage: str  # the upstream pipeline's `storage` (relative to the project root, or absolute)
    partitions_of: str  # the pipeline at the head of the chain: every pipeline of it shares its partitions
    columns: frozenset[str]  # the columns of the upstream stage's dataset


class StageSpec(BaseModel):
    """One stage: an operator with its params over an upstream stage's dataset."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, description="Stage name; the asset key is `<pipeline>/<stage>`.")
    op: str = Field(description="A registered operator (`llmdata ops` lists them).")
    params: dict[str, Any] = Field(default_factory=dict, description="The operator's params (validated against its schema).")
    input: str | None = Field(None, description="Upstream stage; defaults to the previous one (stages may branch).")
    description: str | None = Field(None, description="Shown in the Dagster UI; defaults to the operator's description.")
    pool: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_/.-]+$", max_length=100,
        description="Dagster concurrency pool the stage's step runs in; the instance limits how many run at once "
        "(`llmdata instance --set-pool NAME=N`). For heavy stages: dedup over every partition, judges.",
    )

    @model_validator(mode="after")
    def _known_operator_and_params(self) -> StageSpec:
        if self.op not in REGISTRY:
            raise ValueError(f"unknown operator {self.op!r}{did_you_mean(self.op, REGISTRY)}; known: {', '.join(sorted(REGISTRY))}")
        params_model = get_operator(self.op).Params
        try:
            params_model.model_validate(self.params)
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in ("params", *err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown param{did_you_mean(str(err['loc'][0]), params_model.model_fields)}; known: {', '.join(params_model.model_fields)}"
            raise ValueError(f"{PARAM_ERROR}{path}: {msg} (operator {self.op})") from None
        return self


class AutomationSpec(BaseModel):
    """Declarative automation of a pipeline's stages (Dagster's AutomationCondition), evaluated by
    the daemon's automation sensor: no schedule or job needed."""

    model_config = ConfigDict(extra="forbid")
    condition: Literal["eager", "on_cron"] = Field(
        description="`eager`: a stage materialises as soon as its upstream (or, for the first stage, a newly "
        "landed partition) is updated; `on_cron`: once per cron tick, after every upstream has updated since.",
    )
    cron: str | None = Field(None, pattern=CRON, description="Cron string for `on_cron` (five fields), e.g. `0 2 * * *`.")
    timezone: str = Field("UTC", min_length=1, description="Timezone of the cron string.")

    @model_validator(mode="after")
    def _cron_when_needed(self) -> AutomationSpec:
        if (self.condition == "on_cron") != (self.cron is not None):
            raise ValueError("`cron` is required with condition `on_cron` and only allowed with it")
        return self


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(pattern=NAME, description="Pipeline name: the Dagster asset group and the asset key prefix.")
    description: str = Field("", description="Shown in the Dagster UI.")
    storage: str = Field("data", description="Where datasets live, relative to the project root (or an absolute path).")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="How datatrove runs the stages.")
    sources: list[SourceSpec] = Field(default_factory=list, description="Landing folders that feed the first (ingest) stage.")
    source: PipelineSourceSpec | None = Field(
        None, description="Instead of `sources`: another pipeline's stage whose kept documents feed the first (ingest) "
        "stage; this pipeline's partitions are that pipeline's, so partition P reads the upstream's partition P.",
    )
    stages: list[StageSpec] = Field(min_length=1, description="The stages, in order; the first one must be `ingest`.")
    automation: AutomationSpec | None = Field(None, description="Keep the stages fresh by Dagster's declarative automation.")
    # set when the project resolves `source` (spec.pipeline_sources); None for a spec read on its own
    _resolved_source: ResolvedSource | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> PipelineSpec:
        if self.source is None and not self.sources:
            raise ValueError("a pipeline reads `sources` (landing folders) or `source` (another pipeline's stage, "
                             "`{pipeline: ..., stage: ...}`); this one has neither")
        if self.source is not None and self.sources:
            raise ValueError("`sources` (landing folders) and `source` (another pipeline's stage) exclude each other: "
                             "a pipeline's partitions come from one of them")
        if self.source is not None and self.source.pipeline == self.pipeline:
            raise ValueError(f"bad param source.pipeline: pipeline {self.pipeline!r} cannot read its own stage (a cycle)")
        return self

    @model_validator(mode="after")
    def _storage_is_a_folder(self) -> PipelineSpec:
        if "://" in self.storage:
            raise ValueError(
                f"storage {self.storage!r}: a folder is needed (a local path, or a shared folder every Ray worker mounts "
                "at the same path, e.g. /mnt/llmdata); object-store URIs are not supported, since the ledgers, partition "
                "locks and fingerprints rely on a POSIX file system"
            )
        return self

    @model_validator(mode="after")
    def _graph_is_sound(self) -> PipelineSpec:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        first = get_operator(self.stages[0].op)
        if not issubclass(first, SourceOperator):
            raise ValueError("the first stage must use op `ingest` (it reads the sources)")
        if self.source is not None:
            # the upstream's documents are read as they are: raw-file reading settings have nothing to act on
            unused = sorted(set(self.stages[0].params) - first.dataset_params)
            if unused:
                raise ValueError(f"{PARAM_ERROR}stages.0.params.{unused[0]}: does not apply when the source is another "
                                 f"pipeline's stage ({self.source.dataset}: its kept documents are read as they are); "
                                 f"params that apply: {', '.join(sorted(first.dataset_params)) or 'none'}")
        for i, stage in enumerate(self.stages[1:], 1):
            if issubclass(get_operator(stage.op), SourceOperator):
                raise ValueError(f"stage {stage.name!r}: only the first stage may ingest")
            if stage.input is None:
                stage.input = self.stages[i - 1].name
            elif stage.input not in names[:i]:
                raise ValueError(f"stage {stage.name!r}: input {stage.input!r} is not an earlier stage")
        if self.source is None:  # a pipeline source's columns are known once the project resolves it
            columns, problems = self.column_flow()
            if problems:
                raise ValueError(problems[0][1])
        return self

    def column_flow(self, source_columns: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, set[str]], list[tuple[int, str]]]:
        """DataFlow-style key check: the columns of each stage's dataset, and (stage index, message)
        for each stage whose required columns do not exist upstream. `source_columns`: what the
        first stage reads besides what it produces (an upstream pipeline's stage columns)."""
        columns: dict[str, set[str]] = {}
        problems: list[tuple[int, str]] = []
        for i, stage in enumerate(self.stages):
            op = get_operator(stage.op)(stage.params)
            have = columns.get(stage.input, set()) if stage.input else set(source_columns)
            missing = [c for c in op.requires if c not in have]
            if missing:
                problems.append((i, f"stage {stage.name!r} needs columns {missing} that "
                                    f"{stage.input or (self.source.dataset if self.source else 'the source')!r} does not produce"))
            columns[stage.name] = have | set(op.produced_columns())
        return columns, problems

    @property
    def resolved_source(self) -> ResolvedSource | None:
        return self._resolved_source

    @property
    def partitions_pipeline(self) -> str:
        """The pipeline whose partitions this one's are: its own, or for a pipeline reading another's
        stage, the head of that chain (resolved by the project; unresolved, the direct upstream)."""
        if self._resolved_source is not None:
            return self._resolved_source.partitions_of
        return self.source.pipeline if self.source is not None else self.pipeline

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)

    def landing_source(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"pipeline {self.pipeline!r} has no source {name!r}")


def load_pipeline_spec(path: str | Path) -> PipelineSpec:
    """The pipeline spec at `path`; any problem raises SpecError naming file:line:field."""
    return load_model(path, PipelineSpec, shape="a pipeline spec is a mapping with `pipeline`, `sources` and `stages`")
