"""The vllm judge backend without a GPU: the request building is plain data, tested here; where
vLLM is installed, its own classes must accept what we build.

No fake vLLM on purpose: a stand-in would only test our idea of its API. The GPU path itself
(model load, LLM.chat, structured output, token counts) is checked by bench/gpu_judge.py on a
GPU machine."""

from __future__ import annotations

import pytest

from dagster_llmdata.judges.backend import JudgeRequest
from dagster_llmdata.judges.rubrics import load_rubric
from dagster_llmdata.judges.vllm_backend import INSTALL_HINT, build_vllm_inputs, import_vllm


def rubric_requests(texts: list[str], max_tokens: int = 200) -> list[JudgeRequest]:
    rubric = load_rubric("educational_value")
    return [JudgeRequest(rubric.messages(t), rubric.answer_schema(), max_tokens=max_tokens) for t in texts]


def test_inputs_keep_rubric_first_document_last_and_one_params_per_request(prose):
    requests = rubric_requests(prose[:3])
    conversations, sampling = build_vllm_inputs(requests)
    assert len(conversations) == len(sampling) == 3
    for conversation, request, text in zip(conversations, requests, prose[:3]):
        assert conversation == request.messages
        assert [m["role"] for m in conversation] == ["system", "user"]
        assert conversation[-1]["content"].endswith(text)
    # the shared prefix (what vLLM's prefix cache reuses) is byte-identical across documents
    assert conversations[0][0] == conversations[1][0] == conversations[2][0]
    schema = load_rubric("educational_value").answer_schema()
    assert sampling[0] == {"temperature": 0.0, "max_tokens": 200, "structured_outputs": {"json": schema}}


def test_inputs_never_use_the_removed_guided_decoding_keys(prose):
    _, sampling = build_vllm_inputs(rubric_requests(prose[:1]))
    flat = repr(sampling)
    assert "guided" not in flat and "response_format" not in flat


def test_inputs_are_copies_not_the_callers_messages(prose):
    requests = rubric_requests(prose[:1])
    conversations, _ = build_vllm_inputs(requests)
    conversations[0][0]["content"] = "changed"
    assert requests[0].messages[0]["content"] != "changed"


def test_missing_vllm_says_what_to_install():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"dagster-llmdata\[vllm\]") as err:
            import_vllm()
        assert INSTALL_HINT in str(err.value)
    else:
        assert len(import_vllm()) == 3


def test_vllm_accepts_our_sampling_params(prose):
    pytest.importorskip("vllm")
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    _, sampling = build_vllm_inputs(rubric_requests(prose[:2], max_tokens=64))
    for kwargs in sampling:
        params = SamplingParams(**{**kwargs, "structured_outputs": StructuredOutputsParams(**kwargs["structured_outputs"])})
        assert params.temperature == 0.0 and params.max_tokens == 64
        assert params.structured_outputs.json == kwargs["structured_outputs"]["json"]
