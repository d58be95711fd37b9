"""Which planner a project's agent config asks for: the deterministic one, or the LLM planner on
the configured server (else the judge's runtime settings, from the environment)."""

from __future__ import annotations

from typing import Any

from dagster_llmdata.agent.llm_planner import LLMPlanner
from dagster_llmdata.agent.planner import DeterministicPlanner, Planner
from dagster_llmdata.judges.backend import JudgeRuntime
from dagster_llmdata.spec.agent import AgentConfig


def make_planner(config: AgentConfig, runtime: dict[str, Any] | None = None) -> Planner:
    """The configured planner; the LLM planner's server comes from the config, else `runtime`
    (the judge resource's settings in a run), else $LLMDATA_JUDGE_* as the judge resource reads them."""
    if config.planner.kind == "deterministic":
        return DeterministicPlanner()
    settings = dict(runtime) if runtime is not None else JudgeRuntime.from_env().model_dump()
    if config.planner.base_url:
        settings["base_url"] = config.planner.base_url
    return LLMPlanner(config.planner, settings)
