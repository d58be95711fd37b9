"""The OpenAI-compatible judge backend against a real HTTP server program (tests/judge_server.py)
that injects faults: what is retried, what fails with which reason, how fast it goes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from dagster_llmdata.judges.answer import parse_answer, validator
from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.openai_backend import OpenAIBackend
from dagster_llmdata.judges.rubrics import load_rubric

from tests.conftest import judge_server
from tests.judge_server import doc_key

RUBRIC = load_rubric("educational_value")
VALIDATE = validator(RUBRIC)


@pytest.fixture(scope="module")
def server():
    with judge_server() as base_url:
        yield base_url


@pytest.fixture
def base_url(server):
    httpx.post(server.removesuffix("/v1") + "/reset")
    return server


def stats(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/stats").json()


_opened: list[OpenAIBackend] = []


@pytest.fixture(autouse=True)
def _close_backends():
    yield
    while _opened:
        _opened.pop().close()


def backend(base_url: str, model: str = "judge-model", **runtime) -> OpenAIBackend:
    settings = {"base_url": base_url, "backoff_s": 0.01, "max_backoff_s": 0.5, "timeout_s": 5.0, "max_retries": 4, **runtime}
    _opened.append(OpenAIBackend(JudgeRuntime(**settings), model))
    return _opened[-1]


def request(document: str) -> JudgeRequest:
    return JudgeRequest(RUBRIC.messages(document), RUBRIC.answer_schema())


def expected_score(document: str) -> int:
    """The test server's score: min + words of the last message mod the scale's size."""
    words = len(request(document).messages[-1]["content"].split())
    return RUBRIC.scale.min + words % (RUBRIC.scale.max - RUBRIC.scale.min + 1)


def test_answers_follow_the_schema_and_the_request_is_current_structured_output(base_url):
    docs = [" ".join(["word"] * n) for n in range(1, 8)]
    out = backend(base_url).complete([request(d) for d in docs], VALIDATE)
    assert [c.error for c in out] == [None] * len(docs)
    assert [parse_answer(c.text, RUBRIC).score for c in out] == [expected_score(d) for d in docs]
    assert {c.attempts for c in out} == {1}
    assert all(c.tokens_in == sum(len(m["content"].split()) for m in request(d).messages) for c, d in zip(out, docs))
    seen = stats(base_url)
    assert seen["requests"] == len(docs) and seen["models"] == {"judge-model": len(docs)}
    body = seen["last_request"]
    assert body["temperature"] == 0 and body["max_tokens"] == 256
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "judge_answer", "schema": RUBRIC.answer_schema(), "strict": True}}
    assert not [k for k in (*body, *(body.get("extra_body") or {})) if "guided" in k]
    assert seen["authorization"] is None


def test_the_server_rejects_guided_json_so_a_regression_would_show(base_url):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "guided_json": RUBRIC.answer_schema()}
    assert httpx.post(base_url + "/chat/completions", json=body).status_code == 400
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "extra_body": {"guided_json": {}}}
    assert httpx.post(base_url + "/chat/completions", json=body).status_code == 400
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}
    assert httpx.post(base_url + "/chat/completions", json=body).status_code == 400


def test_transient_faults_are_retried_until_they_pass(base_url):
    faults = {
        "[[fault:429]]": 2, "[[fault:500x3]]": 4, "[[fault:502x2]]": 3, "[[fault:503]]": 2,
        "[[fault:drop]]": 2, "[[fault:timeout=1.5]]": 2,
        # unusable answers are asked for again too
        "[[fault:malformedx1]]": 2, "[[fault:schemax2]]": 3, "[[fault:rangex1]]": 2, "[[fault:emptyx1]]": 2,
    }
    docs = [f"some text {marker}" for marker in faults]
    out = backend(base_url, timeout_s=0.5).complete([request(d) for d in docs], VALIDATE)
    arrivals = stats(base_url)["arrivals"]
    for doc, completion, attempts in zip(docs, out, faults.values()):
        assert completion.error is None, (doc, completion)
        assert parse_answer(completion.text, RUBRIC).score == expected_score(doc)
        assert completion.attempts == attempts == len(arrivals[doc_key(request(doc).messages[-1]["content"])]), doc


def test_usage_is_summed_over_attempts(base_url):
    doc = "text [[fault:malformedx2]]"
    prompt_words = sum(len(m["content"].split()) for m in request(doc).messages)
    [done] = backend(base_url).complete([request(doc)], VALIDATE)
    assert done.error is None and done.attempts == 3
    assert done.tokens_in == 3 * prompt_words
    # two broken answers and a good one, each counted (the server bills len // 4 + 1)
    assert done.tokens_out > len(done.text) // 4 + 1
    [failed_http] = backend(base_url).complete([request("text [[fault:500x2]]")], VALIDATE)
    assert failed_http.attempts == 3 and failed_http.tokens_in == sum(len(m["content"].split()) for m in request("text [[fault:500x2]]").messages)


@pytest.mark.parametrize(
    "marker, reason, attempts",
    [
        ("[[fault:503x99]]", "http_5xx", 3),
        ("[[fault:500x99]]", "http_5xx", 3),
        ("[[fault:429x99]]", "http_429", 3),
        ("[[fault:400]]", "http_4xx", 1),
        ("[[fault:404]]", "http_4xx", 1),
        ("[[fault:malformed]]", "malformed_json", 3),
        ("[[fault:schema]]", "schema_violation", 3),
        ("[[fault:range]]", "score_out_of_range", 3),
        ("[[fault:empty]]", "empty_completion", 3),
        ("[[fault:refusal]]", "refusal", 1),
        ("[[fault:refusal-field]]", "refusal", 1),
        ("[[fault:length]]", "malformed_json", 1),
        ("[[fault:timeoutx99=0.8]]", "timeout", 3),
    ],
)
def test_permanent_faults_end_in_their_failure_reason(base_url, marker, reason, attempts):
    [done] = backend(base_url, max_retries=2, timeout_s=0.3).complete([request(f"text {marker}")], VALIDATE)
    assert (done.text, done.error, done.attempts) == (None, reason, attempts)
    assert done.detail


def test_a_client_error_says_what_the_server_said(base_url):
    [done] = backend(base_url).complete([request("text [[fault:400]]")], VALIDATE)
    assert done.detail == "HTTP 400: injected HTTP 400"


def test_one_failure_does_not_touch_the_others(base_url):
    docs = ["fine one", "text [[fault:400]]", "fine two", "text [[fault:refusal]]"]
    out = backend(base_url).complete([request(d) for d in docs], VALIDATE)
    assert [c.error for c in out] == [None, "http_4xx", None, "refusal"]


@pytest.mark.parametrize("marker, least", [("[[fault:retry-after=1]]", 0.95), ("[[fault:retry-after-date=2]]", 0.9)])
def test_retry_after_is_honoured(base_url, marker, least):
    doc = f"text {marker}"
    [done] = backend(base_url, max_backoff_s=5).complete([request(doc)], VALIDATE)
    assert done.error is None and done.attempts == 2
    first, second = stats(base_url)["arrivals"][doc_key(request(doc).messages[-1]["content"])]
    # the jittered backoff alone would be under 10 ms here
    assert least <= second - first < 2.5


def test_retry_after_is_capped_by_max_backoff(base_url):
    doc = "text [[fault:retry-after=30]]"
    start = time.monotonic()
    [done] = backend(base_url, max_backoff_s=0.2).complete([request(doc)], VALIDATE)
    assert done.error is None and time.monotonic() - start < 2


def test_connection_refused_on_a_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = backend(f"http://127.0.0.1:{port}/v1", max_retries=2).complete([request("a"), request("b")], VALIDATE)
    assert [(c.error, c.attempts) for c in out] == [("connection_refused", 3)] * 2
    assert str(port) in out[0].detail


def test_concurrency_is_bounded_and_used():
    with judge_server("--latency-ms", "100") as url:
        judge = backend(url, concurrency=4)
        start = time.monotonic()
        out = judge.complete([request(f"document {i}") for i in range(24)], VALIDATE)
        wall = time.monotonic() - start
        assert all(c.error is None for c in out)
        assert stats(url)["max_in_flight"] == 4
        assert wall >= 24 / 4 * 0.1
        # two callers at once share the bound
        httpx.post(url.removesuffix("/v1") + "/reset")
        results: list = []
        callers = [threading.Thread(target=lambda k=k: results.extend(judge.complete([request(f"{k} {i}") for i in range(12)], VALIDATE))) for k in "ab"]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        assert len(results) == 24 and all(c.error is None for c in results)
        assert stats(url)["max_in_flight"] == 4


def test_the_api_key_comes_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "s3cret")
    with judge_server("--api-key", "s3cret") as url:
        [done] = backend(url, api_key_env="JUDGE_TEST_KEY").complete([request("doc")], VALIDATE)
        assert done.error is None and stats(url)["authorization"] == "Bearer s3cret"
        monkeypatch.setenv("JUDGE_TEST_KEY", "wrong")
        [denied] = backend(url, api_key_env="JUDGE_TEST_KEY").complete([request("doc")], VALIDATE)
    assert (denied.error, denied.attempts, denied.detail) == ("http_4xx", 1, "HTTP 401: missing or wrong API key")
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(ValueError, match="JUDGE_TEST_KEY"):
        backend(url, api_key_env="JUDGE_TEST_KEY")


def test_complete_works_inside_a_running_loop_and_in_a_plain_thread(base_url):
    judge = backend(base_url)

    async def from_async_code():
        return judge.complete([request("inside a loop")], VALIDATE)

    [inside] = asyncio.run(from_async_code())
    assert inside.error is None
    results = []
    thread = threading.Thread(target=lambda: results.extend(judge.complete([request("in a thread")], VALIDATE)))
    thread.start()
    thread.join()
    assert [c.error for c in results] == [None]
    assert judge.complete([], VALIDATE) == []


def test_close_stops_the_loop_and_a_later_call_starts_it_again(base_url):
    judge = backend(base_url)
    assert judge.complete([request("before")], VALIDATE)[0].error is None
    loop_thread = judge._thread
    judge.close()
    assert not loop_thread.is_alive()
    assert judge.complete([request("after")], VALIDATE)[0].error is None
    judge.close()
    judge.close()
