"""Shared models every layer reads: operator params, operator runtime settings, and the executor
a stage runs on. Pydantic only; nothing here knows about files, datatrove or Dagster."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class OperatorParams(BaseModel):
    """Base for operator params: unknown keys are errors, not silently ignored. Params are data:
    they go into the stage's code version (except those named in `Operator.non_data_params`)."""

    model_config = ConfigDict(extra="forbid")


class RuntimeSettings(BaseModel):
    """Base for an operator's runtime settings: where and how it runs (a server's URL, an API-key
    variable, concurrency, timeouts), never what it computes. They are not part of the code
    version, so moving a server marks nothing stale. In Dagster they come from the resource named
    by `Operator.runtime_key`; standalone, from `llmdata op --param` or `apply_operator(runtime=)`."""

    model_config = ConfigDict(extra="forbid")
    # settings also come from ${env_prefix}<FIELD> variables (the Dagster resource reads the same ones)
    env_prefix: ClassVar[str] = ""

    @classmethod
    def from_env(cls) -> RuntimeSettings:
        """Defaults, with each field whose ${env_prefix}<FIELD> variable is set taken from it."""
        names = cls.model_fields if cls.env_prefix else {}
        return cls.model_validate({f: os.environ[v] for f in names if (v := f"{cls.env_prefix}{f.upper()}") in os.environ})


class ExecutorConfig(BaseModel):
    """Chooses datatrove's executor: LocalPipelineExecutor (tasks/workers) or RayPipelineExecutor."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "ray"] = Field("local", description="`local`: datatrove's LocalPipelineExecutor; `ray`: its RayPipelineExecutor.")
    tasks: int = Field(1, ge=1, le=100_000, description="How many pieces a stage's input is split into (by row group or raw file).")
    workers: int = Field(1, ge=1, le=1024, description="How many tasks run at once (processes); 1 runs in the calling process.")
    start_method: Literal["forkserver", "fork", "spawn"] = Field(
        "forkserver",
        description="How worker processes start: forkserver is safe inside Dagster's threaded run worker; fork starts faster.",
    )
    fuse: bool = Field(True, description="Run consecutive per-document stages in one datatrove pass (each still its own asset).")
    # kind: ray only; runtime settings, so they are not part of any stage's code version
    address: str | None = Field(
        None, min_length=1,
        description="Ray: the cluster to join (`auto`, `127.0.0.1:6379`, `ray://head:10001`); default $RAY_ADDRESS, "
        "else a local Ray started in the step process. Datasets must be on storage every node reaches (a shared folder).",
    )
    cpus_per_task: float = Field(1, gt=0, le=1024, description="Ray: CPUs reserved for each task.")
    memory_per_task_gb: float = Field(2, gt=0, le=4096, description="Ray: memory reserved for each task, in GB.")
    task_timeout_s: int | None = Field(None, ge=1, description="Ray: a task running longer is killed (the stage then fails, naming it).")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray: runtime_env for the tasks (e.g. pip packages on a cluster without them).")
