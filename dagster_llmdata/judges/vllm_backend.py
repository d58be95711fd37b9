"""Judge backend `vllm`: the model runs in this process through vLLM's offline `LLM` API, every
request of a batch handed over in one `LLM.chat` call (vLLM schedules them together and, with
prefix caching, computes the shared rubric prefix once).

Structured output is `SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))`,
the current API; the removed `guided_decoding` / `GuidedDecodingParams` are never used.

Decoding is greedy (temperature 0), so asking again gives the same answer: an answer `validate`
refuses is reported as that failure at once, not retried. vLLM is imported lazily: the rest of
the package, and `build_vllm_inputs`, work on machines without it."""

from __future__ import annotations

import gc
from typing import Any

from dagster_llmdata.judges.backend import Completion, JudgeRequest, JudgeRuntime, OnDone, Validator, announce

INSTALL_HINT = "the vllm judge backend needs vLLM: pip install 'dagster-llmdata[vllm]' on a machine with a GPU"


def import_vllm():
    """(LLM, SamplingParams, StructuredOutputsParams), or an ImportError that says what to install."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return LLM, SamplingParams, StructuredOutputsParams


def build_vllm_inputs(requests: list[JudgeRequest]) -> tuple[list[list[dict[str, str]]], list[dict[str, Any]]]:
    """The conversations for `LLM.chat` (vLLM applies the model's chat template) and, per request,
    the keyword arguments of its `SamplingParams`; `structured_outputs` holds the keyword
    arguments of its `StructuredOutputsParams`. Plain data, so it is testable without vLLM."""
    conversations = [[{"role": m["role"], "content": m["content"]} for m in r.messages] for r in requests]
    sampling = [
        {"temperature": 0.0, "max_tokens": r.max_tokens, "structured_outputs": {"json": r.schema}}
        for r in requests
    ]
    return conversations, sampling


def completion_from_output(output: Any, validate: Validator) -> Completion:
    """One vLLM `RequestOutput` -> a Completion, with its prompt and completion token counts."""
    choice = output.outputs[0]
    usage = {"tokens_in": len(output.prompt_token_ids or ()), "tokens_out": len(choice.token_ids or ()), "attempts": 1}
    text = choice.text
    if not text or not text.strip():
        return Completion(error="empty_completion", detail=f"finish_reason={choice.finish_reason}", **usage)
    problem = validate(text)
    if problem is not None:
        # greedy decoding would write the same text again: no retry
        return Completion(error=problem, detail=f"finish_reason={choice.finish_reason}: {text[:300]}", **usage)
    return Completion(text=text, **usage)


def backend_error(exc: Exception) -> Completion:
    return Completion(error="backend_error", detail=f"{type(exc).__name__}: {exc}"[:500], attempts=1)


class VllmBackend:
    """Loads `model` (a local path or a Hugging Face id already in the local cache) on the GPUs
    named by the runtime settings when constructed; `close` releases it."""

    def __init__(self, runtime: JudgeRuntime, model: str):
        LLM, self._sampling_params, self._structured_outputs = import_vllm()
        self.runtime = runtime
        self.model = model
        self.llm = LLM(
            model=model,
            tensor_parallel_size=runtime.tensor_parallel_size,
            gpu_memory_utilization=runtime.gpu_memory_utilization,
            enable_prefix_caching=True,
        )

    def sampling_params(self, kwargs: dict[str, Any]):
        structured = self._structured_outputs(**kwargs["structured_outputs"])
        return self._sampling_params(**{**kwargs, "structured_outputs": structured})

    def wait_ready(self) -> None:
        """In process: ready once `vllm.LLM` is built (in the constructor)."""

    def complete(self, requests: list[JudgeRequest], validate: Validator, on_done: OnDone | None = None) -> list[Completion]:
        return announce(self._complete(requests, validate), on_done)

    def _complete(self, requests: list[JudgeRequest], validate: Validator) -> list[Completion]:
        if not requests:
            return []
        conversations, sampling = build_vllm_inputs(requests)
        params = [self.sampling_params(kw) for kw in sampling]
        try:
            outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        except Exception as exc:
            if len(requests) == 1:
                return [backend_error(exc)]
            # vLLM refuses a whole batch for one bad request (a prompt over the model's context,
            # a schema it cannot compile): alone, each request gets its own answer or failure
            return [self._one(c, p, validate) for c, p in zip(conversations, params)]
        return [completion_from_output(o, validate) for o in outputs]

    def _one(self, conversation: list[dict[str, str]], params, validate: Validator) -> Completion:
        try:
            [output] = self.llm.chat([conversation], sampling_params=[params], use_tqdm=False)
        except Exception as exc:
            return backend_error(exc)
        return completion_from_output(output, validate)

    def tokenizer(self) -> Any:
        return self.llm.get_tokenizer()

    def close(self) -> None:
        # drop the engine so its GPU memory can be reclaimed before another model loads
        self.llm = None
        gc.collect()
