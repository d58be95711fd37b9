"""The agent's settings: one `type: agent` entry in sensors/agent.yaml serves the sensor and the
`llmdata agent` commands alike."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Bounds(BaseModel):
    """What a dry run must show for a proposal to verify."""

    model_config = ConfigDict(extra="forbid")
    min_survival: float = Field(0.05, ge=0, le=1, description="Share of ingested records the last stage must keep.")
    max_stage_drop: float = Field(0.9, ge=0, le=1, description="Most any one stage may reject of what it reads.")
    max_exact_dup_rate: float = Field(0.0, ge=0, le=1, description="Exact-duplicate share left in the output (when dedup is asked for).")
    max_near_dup_rate: float = Field(0.02, ge=0, le=1, description="Near-duplicate share left in the output (when dedup is asked for).")
    min_language_share: float = Field(0.95, ge=0, le=1, description="Share of output docs in the asked-for languages.")
    max_markup_share: float = Field(0.02, ge=0, le=1, description="Share of output docs that still look like markup (when asked for none).")
    max_pii_doc_share: float = Field(0.0, ge=0, le=1, description="Share of output docs with personal data left (when asked for none).")
    min_code_retention: float = Field(0.8, ge=0, le=1, description="For a code corpus: output code share over input code share.")
    cpu_hour_usd: float = Field(0.05, ge=0, le=1000, description="Price of one CPU hour, for the projected cost.")



class PlannerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["deterministic", "llm"] = Field("deterministic", description="`deterministic`: rules, no model; `llm`: an OpenAI-compatible server.")
    model: str = Field("default", min_length=1, max_length=200, description="Model name sent to the server (llm planner).")
    max_tokens: int = Field(2048, ge=64, le=32768, description="Longest answer the model may give (llm planner).")
    base_url: str | None = Field(None, description="Server for the llm planner; unset: the `judge` resource's base_url ($LLMDATA_JUDGE_BASE_URL).")


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["agent"] = Field("agent", description="Sensor kind: the agent (intents in the inbox -> verified proposals).")
    name: str = Field("agent", pattern=r"^[A-Za-z0-9_]+$", max_length=100, description="Sensor name in Dagster.")
    inbox: str = Field("agent/inbox", description="Folder (relative to the project) where intents are dropped.")
    landing_root: str | None = Field(
        None, description="A folder whose sub-folders are landing folders: one that no pipeline reads starts a proposal "
        "with `default_goal`.")
    default_goal: str = Field("a clean, deduplicated pre-training corpus with no personal data",
                              min_length=3, max_length=4000, description="Goal of proposals started by an uncovered landing folder.")
    planner: PlannerConfig = Field(default_factory=PlannerConfig, description="Which planner writes the specs, and its model settings.")
    sample_docs: int = Field(1000, ge=10, le=100_000, description="Records sampled from the sources for profiling and the dry run.")
    max_repair_rounds: int = Field(2, ge=0, le=10, description="Re-plans after a failed verification (each recorded).")
    bounds: Bounds = Field(default_factory=Bounds, description="Survival, drop-rate, goal and cost bounds the dry run is held to.")
    allowed_roots: list[str] = Field(["."], min_length=1, description="Folders (relative to the project, or absolute) that specs may read and write under.")
    auto_approve: bool = Field(False, description="Move a verified proposal into assets/ and reload without `llmdata agent approve`.")
    add_landing_sensor: bool = Field(True, description="On approval, add a landing sensor for the new pipeline (sensors/agent_pipelines.yaml).")
    webserver_url: str = Field("http://127.0.0.1:3000", description="Dagster webserver whose code location an approval reloads.")
    location_name: str = Field("llmdata", min_length=1, description="The code location to reload.")
    minimum_interval_seconds: int = Field(30, ge=1, le=86_400, description="Seconds between two evaluations of the sensor.")
    default_status: Literal["running", "stopped"] = Field("running", description="Whether the sensor runs as soon as the code location loads.")
