"""Pipeline specs: the YAML a user (or the agent) writes, validated with errors that name the
file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    sources: list[SourceSpec] = Field(min_length=1, description="Landing folders that feed the first (ingest) stage.")
    stages: list[StageSpec] = Field(min_length=1, description="The stages, in order; the first one must be `ingest`.")
    automation: AutomationSpec | None = Field(None, description="Keep the stages fresh by Dagster's declarative automation.")

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
        if not issubclass(get_operator(self.stages[0].op), SourceOperator):
            raise ValueError("the first stage must use op `ingest` (it reads the sources)")
        for i, stage in enumerate(self.stages[1:], 1):
            if issubclass(get_operator(stage.op), SourceOperator):
                raise ValueError(f"stage {stage.name!r}: only the first stage may ingest")
            if stage.input is None:
                stage.input = self.stages[i - 1].name
            elif stage.input not in names[:i]:
                raise ValueError(f"stage {stage.name!r}: input {stage.input!r} is not an earlier stage")
        self._check_column_flow()
        return self

    def _check_column_flow(self) -> None:
        """DataFlow-style key check: each stage's required columns exist upstream."""
        columns: dict[str, set[str]] = {}
        for stage in self.stages:
            op = get_operator(stage.op)(stage.params)
            have = columns.get(stage.input, set()) if stage.input else set()
            missing = [c for c in op.requires if c not in have]
            if missing:
                raise ValueError(f"stage {stage.name!r} needs columns {missing} that {stage.input!r} does not produce")
            columns[stage.name] = have | set(op.produced_columns())

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)

    def source(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"pipeline {self.pipeline!r} has no source {name!r}")


def load_pipeline_spec(path: str | Path) -> PipelineSpec:
    """The pipeline spec at `path`; any problem raises SpecError naming file:line:field."""
    return load_model(path, PipelineSpec, shape="a pipeline spec is a mapping with `pipeline`, `sources` and `stages`")
