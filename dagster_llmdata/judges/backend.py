"""What every judge backend does: turn chat requests into completions, one per request, never
raising for one document's trouble. The operator (operators/llm_judge.py) builds the requests
(rubric first, document last), checks answers, caches scores and routes documents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field

from dagster_llmdata.config import RuntimeSettings

# failure reasons a backend may report (the document is then quarantined with that reason)
FAILURES = (
    "connection_refused", "timeout", "http_429", "http_5xx", "http_4xx",
    "malformed_json", "schema_violation", "score_out_of_range", "empty_completion", "refusal",
    "backend_error", "deadline_exceeded",
)


@dataclass
class JudgeRequest:
    """One document to judge: the chat messages (rubric first, document last) and the JSON schema
    the answer must follow."""

    messages: list[dict[str, str]]
    schema: dict[str, Any]
    max_tokens: int = 256


@dataclass
class Completion:
    """A backend's answer to one request: `text` (the raw completion) when it got one that passed
    `validate`, else `error` (one of FAILURES) and `detail`. Usage is summed over every attempt."""

    text: str | None = None
    error: str | None = None
    detail: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 0


# checks a completion's text: None when usable, else the failure reason (e.g. "malformed_json")
Validator = Callable[[str], str | None]


OnDone = Callable[["Completion"], None]  # told of each request as it finishes (for progress)


class JudgeBackend(Protocol):
    def wait_ready(self) -> None:
        """Return once the model can answer (a server that is still starting is waited for);
        JudgeUnavailable if it does not come up in time. In-process backends are ready once built."""
        ...

    def complete(self, requests: list[JudgeRequest], validate: Validator, on_done: OnDone | None = None) -> list[Completion]:
        """One Completion per request, in order, each also passed to `on_done` as it finishes.
        Transient failures (connection, timeout, 429, 5xx, an answer `validate` refuses) are
        retried up to the runtime's limits first."""
        ...

    def close(self) -> None: ...


def announce(completions: list[Completion], on_done: OnDone | None) -> list[Completion]:
    """For backends that finish a whole batch at once: tell `on_done` of each, then return them."""
    if on_done is not None:
        for completion in completions:
            on_done(completion)
    return completions


class JudgeRuntime(RuntimeSettings):
    """Where and how a judge runs. None of it changes a score's meaning, so none of it is in the
    stage's code version (the model, rubric and rubric version are params)."""

    env_prefix = "LLMDATA_JUDGE_"

    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible server (backend `openai`), e.g. `vllm serve`.")
    api_key_env: str | None = Field(None, description="Name of the environment variable that holds the API key (never the key itself).")
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight at once (backend `openai`); the server batches them.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Seconds before one request is given up and retried.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries of a request after a connection error, timeout, 429, 5xx or an unusable answer.")
    backoff_s: float = Field(0.5, ge=0, le=60, description="First retry delay; doubles each retry, with random jitter; a Retry-After header wins.")
    max_backoff_s: float = Field(30.0, ge=0, le=600, description="Longest delay between two retries.")
    ready_timeout_s: float = Field(300.0, ge=0, le=86_400, description="Seconds to wait for the server to come up (GET base_url/models answers) before the first request, reported as it goes; then the stage fails (backend `openai`).")
    deadline_s: float | None = Field(None, gt=0, le=604_800, description="Seconds the judge may take over one stage run; documents not judged by then are quarantined `deadline_exceeded`. None: no limit.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one model is split over (backend `vllm`).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take (backend `vllm`).")
    cpu_threads: int | None = Field(None, ge=1, le=512, description="Threads for the CPU judge (backend `cpu`); None: all cores.")
    cache_dir: str | None = Field(None, description="Score cache folder; None: $LLMDATA_CACHE_DIR, else .llmdata_cache/ under the working directory.")


BackendName = Literal["openai", "vllm", "cpu"]


@dataclass
class UsageCounters:
    """What a judge run did, for metadata: requests, tokens, cache hits, failures by reason."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_hits: int = 0
    failures: dict[str, int] = field(default_factory=dict)
