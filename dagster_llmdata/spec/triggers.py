"""What starts work, as written in sensors/*.yaml: landing folders, cron schedules, freshness
policies and training feedback. Models only; `defs/` and `mixture/` build the Dagster objects."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dagster_llmdata.spec.pipeline import CRON


NAME_PATTERN = r"^[A-Za-z0-9_]+$"


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["schedule"] = Field(description="A cron schedule that re-materialises a pipeline.")
    name: str | None = Field(None, min_length=1, max_length=200, pattern=NAME_PATTERN,
                             description="Schedule name in Dagster; default `<pipeline>_schedule`.")
    pipeline: str = Field(min_length=1, description="The pipeline (its `pipeline:` name) to re-materialise.")
    cron: str = Field(pattern=CRON, description="When to run, as a five-field cron string (`0 2 * * *`: nightly at 02:00).")
    timezone: str = Field("UTC", min_length=1, description="Timezone of the cron string.")
    partitions: Literal["stale", "all"] = Field(
        "stale",
        description="`stale`: request only partitions whose files or stage code changed since they were "
        "materialised (and new ones); `all`: every partition (stages that are up to date still skip).",
    )
    default_status: Literal["running", "stopped"] = Field("stopped", description="Whether the schedule runs as soon as the code location loads.")


class FreshnessSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["freshness"] = Field(description="Flag a pipeline that has not materialised for a while.")
    pipeline: str = Field(min_length=1, description="The pipeline whose stages are checked.")
    max_age_hours: float = Field(gt=0, le=24 * 366, description="A stage is overdue once its last materialisation is older than this.")
    stages: list[str] | None = Field(None, description="Stages to check; default every stage.")
    minimum_interval_seconds: int = Field(300, ge=10, le=86_400, description="How often the sensor evaluates the checks.")
    default_status: Literal["running", "stopped"] = Field("running", description="Whether the freshness sensor runs as soon as the code location loads.")

    @property
    def max_age(self) -> dt.timedelta:
        return dt.timedelta(hours=self.max_age_hours)


class LandingSensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["landing"] = Field("landing", description="Sensor kind: new or changed entries in a pipeline's landing folders.")
    name: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_]+$",
        description="Sensor name in Dagster (letters, digits, underscores); default `<pipeline>_landing`.",
    )
    pipeline: str = Field(min_length=1, description="The pipeline (its `pipeline:` name) whose sources' landing folders are watched.")
    minimum_interval_seconds: int = Field(30, ge=1, le=86_400, description="Seconds between two evaluations of the sensor.")
    settle_seconds: float = Field(
        0, ge=0, le=86_400,
        description="Request an entry only once its newest file has been unchanged for this many seconds, so a file "
        "still being copied or appended to is not processed half-written (it would be re-processed once complete). "
        "0 requests at once; a few seconds suits slow uploads.",
    )
    default_status: Literal["running", "stopped"] = Field("running", description="Whether the sensor runs as soon as the code location loads.")
    on_removed: Literal["keep", "remove"] = Field(
        "keep",
        description="When a landing entry the sensor requested disappears: `keep` leaves its partition and data (landing "
        "folders that are emptied once processed) and logs it once; `remove` removes the partition as `llmdata remove` "
        "does (its data in every stage, its dedup index entries, the Dagster partition; later partitions deduplicated "
        "against it show stale). A landing folder that is missing altogether (an unmounted share) removes nothing.",
    )


class TensorBoardSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    logdir: str = Field(min_length=1, description="TensorBoard log dir (relative to the project root); one sub-folder per run.")
    tag_pattern: str = Field(r"^(?:train/|eval/)?loss/(?P<domain>[^/]+)$", description="Regex with a `domain` group over scalar tags.")


class TrainingFeedbackSensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["training_feedback"] = Field(description="Sensor kind: training feedback re-materialises a mixture.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$", description="Sensor name; default `<mixture>_feedback`.")
    mixture: str = Field(min_length=1, description="The mixture (its `mixture:` name) to re-materialise.")
    store: str | None = Field(None, description="Feedback store (SQLite); default: the mixture's `feedback_store`.")
    tensorboard: TensorBoardSource | None = Field(None, description="Also read per-domain losses from TensorBoard event files.")
    algorithm: Literal["doremi", "odm", "reweight", "static"] | None = Field(
        None, description="Online algorithm; default: the mixture's own (which must be online).")
    params: dict[str, Any] = Field(default_factory=dict, description="Algorithm params over the mixture's (eta, smoothing, reference_losses ...).")
    reference_run: str | None = Field(None, description="DoReMi: the run whose losses are the reference (instead of params.reference_losses).")
    warmup_step: int = Field(0, ge=0, description="No update before this training step.")
    update_step: int = Field(100, ge=1, description="Steps between two updates of a run's weights.")
    min_weight_change: float = Field(0.01, ge=0, le=1, description="Request a new mixture only when the weights move by more than this (total variation).")
    minimum_interval_seconds: int = Field(30, ge=1, le=86_400, description="Seconds between two evaluations.")
    default_status: Literal["running", "stopped"] = Field("running", description="Whether the sensor runs as soon as the code location loads.")
