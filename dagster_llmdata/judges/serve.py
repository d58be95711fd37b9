"""An OpenAI-compatible judge server around the CPU backend, for a laptop judge and for testing the
`openai` backend end to end against a real model:

    python -m dagster_llmdata.judges.serve --port 8000 [--model smollm2-135m-instruct]

POST /v1/chat/completions answers with `response_format` {"type": "json_schema", ...} only (a
judge always asks for structured output); the old `guided_json` key is refused, not ignored, so
a client still sending it finds out. Requests that arrive while a batch is decoding are decoded
together in the next one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.cpu_backend import CpuBackend

DEFAULT_MAX_TOKENS = 256


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


def _judge_request(body: Any) -> JudgeRequest | str:
    """The request to decode, or why the body is refused."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if "guided_json" in body or "guided_json" in (body.get("extra_body") or {}):
        return "guided_json is not supported: send response_format {type: json_schema, json_schema: {schema}}"
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        return "messages must be a list of {role, content} with text content"
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    if not isinstance(schema, dict):
        return "response_format must be {type: json_schema, json_schema: {schema: {...}}}"
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens must be a positive integer"
    return JudgeRequest(messages=[{"role": m.get("role", "user"), "content": m["content"]} for m in messages], schema=schema, max_tokens=max_tokens)


def create_app(backend: CpuBackend, model_name: str) -> Starlette:
    queue: asyncio.Queue[tuple[JudgeRequest, asyncio.Future]] = asyncio.Queue()

    async def decode_forever() -> None:
        # one batch at a time (the model is not thread-safe); whatever queued meanwhile joins the next
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < backend.batch_size:
                batch.append(queue.get_nowait())
            try:
                answers = await asyncio.to_thread(backend.complete, [r for r, _ in batch], lambda text: None)
            except Exception as e:  # noqa: BLE001  a load failure answers every waiting request
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            for (_, fut), answer in zip(batch, answers):
                fut.set_result(answer)

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        req = _judge_request(body)
        if isinstance(req, str):
            return _error(400, req)
        fut = asyncio.get_running_loop().create_future()
        await queue.put((req, fut))
        try:
            answer = await fut
        except Exception as e:  # noqa: BLE001
            return _error(500, f"the model could not run: {e}")
        if answer.error:
            return _error(400 if answer.error == "schema_violation" else 500, f"{answer.error}: {answer.detail}")
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": answer.tokens_in, "completion_tokens": answer.tokens_out, "total_tokens": answer.tokens_in + answer.tokens_out},
        })

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "local"}]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        decoder = asyncio.create_task(decode_forever())
        yield
        decoder.cancel()

    return Starlette(
        routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]), Route("/v1/models", models, methods=["GET"])],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description="OpenAI-compatible judge server on CPU (a weak judge, for trying pipelines out)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a bundled model name, a .gguf file or an HF model folder")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    backend = CpuBackend(JudgeRuntime(cpu_threads=args.threads), args.model, batch_size=args.batch_size)
    backend.tokenizer()  # load before listening, so the first request does not wait for it
    print(f"serving {args.model} ({backend.note})", flush=True)
    uvicorn.run(create_app(backend, args.model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
