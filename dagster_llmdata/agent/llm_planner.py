"""The LLM planner: asks an OpenAI-compatible server (`vllm serve`, ...) for a pipeline through
the judges' client, with a JSON schema generated from the operator registry as the structured
output format, so a well-behaved server can only answer a well-formed spec. The answer is data:
it goes through the same static checks as any spec, and whatever it names that the agent fixes
itself (paths, sources) is checked, never trusted."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from dagster_llmdata.errors import PlannerError
from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.openai_backend import OpenAIBackend
from dagster_llmdata.operators import REGISTRY
from dagster_llmdata.spec.pipeline import NAME
from dagster_llmdata.spec.agent import PlannerConfig
from dagster_llmdata.agent.planner import Plan, PlanRequest, spec_frame

MAX_FINDINGS_IN_PROMPT = 20


@lru_cache(maxsize=1)
def _answer_model() -> type[BaseModel]:
    """A pydantic model of the answer: one stage variant per registered operator (its `op` a
    constant, its `params` the operator's own params model), told apart by `op`."""
    variants = []
    for name, cls in sorted(REGISTRY.items()):
        variants.append(create_model(
            f"Stage_{name}", __config__=ConfigDict(extra="forbid"),
            name=(str, Field(pattern=NAME, max_length=64, description="Stage name (an identifier), unique in the pipeline.")),
            op=(Literal[name], Field(description=cls.description)),
            params=(cls.Params, Field(default_factory=cls.Params, description=f"Params of {name}.")),
            input=(str | None, Field(None, description="Upstream stage name; null: the previous stage.")),
        ))
    stage = Annotated[Union[tuple(variants)], Field(discriminator="op")]
    return create_model(
        "ProposedPipeline", __config__=ConfigDict(extra="forbid"),
        pipeline=(str, Field(pattern=NAME, max_length=64, description="Pipeline name (an identifier).")),
        description=(str, Field("", max_length=500)),
        stages=(list[stage], Field(min_length=1, max_length=40, description="Stages in order; the first is `ingest`.")),
    )


def answer_schema() -> dict[str, Any]:
    """The JSON schema the server must answer in, generated from the registry."""
    return _answer_model().model_json_schema()


def _operator_catalogue() -> list[dict]:
    out = []
    for name, cls in sorted(REGISTRY.items()):
        d = cls.describe()
        params = {p: {k: v for k, v in prop.items() if k in ("type", "default", "description", "minimum", "maximum", "enum")}
                  for p, prop in d["params"].get("properties", {}).items()}
        out.append({"op": name, "description": d["description"], "requires": d["requires"], "produces": list(d["produces"]),
                    "shape": d["shape"], "params": params})
    return out


SYSTEM = """You design data-preparation pipelines for LLM training data. Answer with ONE JSON object and nothing else:
{"pipeline": NAME, "description": TEXT, "stages": [{"name": NAME, "op": OPERATOR, "params": {...}, "input": null}, ...]}
Rules: use only the operators listed below with only their listed params; the first stage is `ingest`; stage names are
unique identifiers; do not name files or folders (sources and storage are set for you); order cheap filters before
expensive ones; a code corpus must not go through prose quality filters or a language filter.
Operators:
"""


def build_messages(request: PlanRequest) -> list[dict[str, str]]:
    g = request.goals
    user = {
        "goal": request.intent.goal,
        "constraints": request.intent.constraints.model_dump(exclude_none=True),
        "requirements_as_read": g.notes,
        "suggested_name": request.name,
        "sources": [s["name"] for s in request.sources],
        "profile_of_a_sample": {k: v for k, v in request.profile.to_dict().items() if k != "sources"},
    }
    if request.history:
        user["previous_attempts_failed_because"] = [
            [str(f)[:300] for f in findings[:MAX_FINDINGS_IN_PROMPT]] for findings in request.history
        ]
    # the catalogue first and the request last: a server's prefix cache keeps the shared part
    return [{"role": "system", "content": SYSTEM + json.dumps(_operator_catalogue(), separators=(",", ":"))},
            {"role": "user", "content": json.dumps(user, default=str)}]


class LLMPlanner:
    name = "llm"

    def __init__(self, config: PlannerConfig, runtime: dict[str, Any]):
        self.config = config
        self.runtime = JudgeRuntime.model_validate(runtime)

    def plan(self, request: PlanRequest) -> Plan:
        backend = OpenAIBackend(self.runtime, self.config.model)
        try:
            [answer] = backend.complete([JudgeRequest(build_messages(request), answer_schema(), self.config.max_tokens)],
                                        validate=lambda text: None if text.strip() else "empty_completion")
        finally:
            backend.close()
        if answer.error:
            raise PlannerError(f"the planner's server gave no usable answer: {answer.error}: {answer.detail}")
        raw = answer.text or ""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return Plan(spec=None, raw=raw, problem=f"the answer is not JSON ({exc})")
        if not isinstance(data, dict):
            return Plan(spec=None, raw=raw, problem=f"the answer is a JSON {type(data).__name__}, not an object")
        # whatever the answer holds is kept, so a key it should not set (sources, storage) is checked, not dropped
        spec = {**spec_frame(request, [], data.get("description") if isinstance(data.get("description"), str) else ""), **data}
        if request.intent.name:
            spec["pipeline"] = request.intent.name
        return Plan(spec=spec, raw=raw, notes=[f"answer of model {self.config.model!r} ({len(raw)} characters)"])
