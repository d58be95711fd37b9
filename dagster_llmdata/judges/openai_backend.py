"""A judge backend for any OpenAI-compatible chat server (`vllm serve`, llama.cpp's server, ...).
One request per document, many in flight: the server batches them, we only keep it busy.
Structured output goes through `response_format` json_schema, the only form current vLLM
honours (it silently ignores the old `guided_json` keys, so they are never sent)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import timezone

import httpcore
import httpx

from dagster_llmdata.errors import JudgeUnavailable
from dagster_llmdata.io.logs import status_interval, status_line
from dagster_llmdata.judges.backend import Completion, JudgeRequest, JudgeRuntime, OnDone, Validator

SCHEMA_NAME = "judge_answer"

# unusable answers worth asking for again; a refusal is the model's decision and stays one
RETRYABLE_ANSWERS = frozenset({"empty_completion", "malformed_json", "schema_violation", "score_out_of_range"})


@dataclass
class _Attempt:
    """What one HTTP round trip gave: the usable text, or a failure and whether to try again."""

    text: str | None = None
    error: str | None = None
    detail: str | None = None
    retry: bool = False
    retry_after: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0


class OpenAIBackend:
    """`complete` is synchronous and thread-safe: the requests run on the backend's own event
    loop, in a thread of its own, so it works whether or not the caller runs a loop, and
    connections outlive one batch. It returns one Completion per request, in order, never
    raising for one request's failure. `close` stops the loop and its connections. Not
    picklable (a lock, a thread): open it where it runs, e.g. in a BatchFunction's __enter__."""

    def __init__(self, runtime: JudgeRuntime, model: str):
        self.runtime = runtime
        self.model = model
        self._base = runtime.base_url.rstrip("/")
        self._url = self._base + "/chat/completions"
        # one deadline for the backend's life, which is one stage run (opened in __enter__)
        self._deadline = time.monotonic() + runtime.deadline_s if runtime.deadline_s else None
        self._headers = {"Content-Type": "application/json"}
        if runtime.api_key_env:
            key = os.environ.get(runtime.api_key_env)
            if not key:
                raise ValueError(f"the judge's API key variable {runtime.api_key_env} (runtime setting api_key_env) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Queue[httpcore.AsyncConnectionPool] | None = None  # made in the loop
        # connections taken out of use after timeouts (a server slower than we send), and the
        # successes in a row since the last change: each timeout parks one, `in use` successes
        # bring one back, so a single-slot server is not flooded with requests it cannot answer
        # in time (each retried while the server still works on the abandoned one)
        self._parked: list[httpcore.AsyncConnectionPool] = []
        self._streak = 0
        self._request_headers = [(k.encode(), v.encode()) for k, v in self._headers.items()]

    def complete(self, requests: list[JudgeRequest], validate: Validator, on_done: OnDone | None = None) -> list[Completion]:
        """`on_done` is called (in the backend's thread) as each request finishes, for progress."""
        if not requests:
            return []
        return asyncio.run_coroutine_threadsafe(self._complete_all(requests, validate, on_done), self._running_loop()).result()

    @property
    def in_flight_limit(self) -> int:
        return self.runtime.concurrency - len(self._parked)

    def seconds_left(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def wait_ready(self) -> None:
        """Block until the server answers GET base_url/models with any status under 500 (a 503
        is a server still loading its model, a refused connection one not listening yet), saying
        so every few seconds; JudgeUnavailable after `ready_timeout_s` (or the deadline)."""
        limit = self.runtime.ready_timeout_s
        if (left := self.seconds_left()) is not None:
            limit = min(limit, max(0.0, left))
        start, reported, why = time.monotonic(), None, ""
        with httpx.Client(timeout=min(5.0, self.runtime.timeout_s), headers=self._headers) as http:
            while True:
                try:
                    response = http.get(self._base + "/models")
                    if response.status_code < 500:
                        if reported is not None:
                            status_line(f"judge server at {self._base} is up after {time.monotonic() - start:.0f} s")
                        return
                    why = f"HTTP {response.status_code}: {_error_message(response)}"
                except httpx.ConnectError:
                    why = "connection refused"
                except httpx.TimeoutException:
                    why = "no answer"
                except httpx.TransportError as e:
                    why = f"{type(e).__name__}: {e}"[:200]
                now = time.monotonic()
                if now - start >= limit:
                    raise JudgeUnavailable(f"the judge server at {self._base} did not come up within {limit:.0f} s ({why}); "
                                           "start it, check base_url, or raise ready_timeout_s")
                if reported is None or now - reported >= status_interval():
                    status_line(f"waiting for the judge server at {self._base} ({now - start:.0f} s of at most {limit:.0f} s: {why})")
                    reported = now
                time.sleep(max(0.0, min(1.0, limit - (now - start))))

    def close(self) -> None:
        with self._start_lock:
            if self._loop is None:
                return
            asyncio.run_coroutine_threadsafe(self._close_clients(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            self._loop = self._thread = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="judge-openai", daemon=True)
                self._thread.start()
            return self._loop

    async def _clients(self) -> asyncio.Queue[httpcore.AsyncConnectionPool]:
        """`concurrency` connections, taken by a request for one attempt: the queue bounds what is
        in flight. One single-connection pool per slot rather than one pool of them because
        httpcore's pool does work quadratic in its size on every request (at 64 connections that
        capped the client near 100 requests/s); httpcore rather than httpx on top of it because
        at high concurrency the client is CPU-bound and httpx's request/response models cost about
        a third of each request."""
        if self._slots is None:
            tls = httpx.create_ssl_context()  # shared: building one per connection costs ~20 ms each
            self._slots = asyncio.Queue()
            for _ in range(self.runtime.concurrency):
                self._slots.put_nowait(httpcore.AsyncConnectionPool(max_connections=1, max_keepalive_connections=1, ssl_context=tls))
        return self._slots

    async def _close_clients(self) -> None:
        if self._slots is not None:
            while not self._slots.empty():
                await self._slots.get_nowait().aclose()
            while self._parked:
                await self._parked.pop().aclose()
            self._slots = None

    async def _complete_all(self, requests: list[JudgeRequest], validate: Validator, on_done: OnDone | None) -> list[Completion]:
        slots = await self._clients()

        async def one(request: JudgeRequest) -> Completion:
            done = await self._complete_one(slots, request, validate)
            if on_done is not None:
                on_done(done)
            return done

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _complete_one(self, slots: asyncio.Queue[httpcore.AsyncConnectionPool], request: JudgeRequest, validate: Validator) -> Completion:
        body = json.dumps(self._body(request)).encode()
        done = Completion()
        for retry in range(self.runtime.max_retries + 1):
            left = self.seconds_left()
            try:  # a connection is held per attempt, not while backing off, so others go ahead
                client = await (slots.get() if left is None else asyncio.wait_for(slots.get(), max(0.0, left)))
            except asyncio.TimeoutError:
                return self._late(done)
            attempt = None
            try:
                attempt = await self._attempt(client, body, request.max_tokens, validate, self.seconds_left())
            finally:
                self._release(slots, client, attempt)
            done.attempts += 1
            done.tokens_in += attempt.tokens_in
            done.tokens_out += attempt.tokens_out
            if attempt.error is None:
                done.text, done.error, done.detail = attempt.text, None, None
                return done
            done.error, done.detail = attempt.error, attempt.detail
            if (left := self.seconds_left()) is not None and left <= 0:
                return self._late(done)
            if not attempt.retry or retry == self.runtime.max_retries:
                break
            delay = self._delay(retry, attempt.retry_after)
            await asyncio.sleep(delay if left is None else min(delay, left))
        return done

    def _late(self, done: Completion) -> Completion:
        last = f" (last attempt: {done.error}: {done.detail})" if done.error else ""
        done.error, done.detail = "deadline_exceeded", f"the judge's deadline_s={self.runtime.deadline_s:g} passed before this document was judged{last}"
        return done

    def _release(self, slots: asyncio.Queue, client: httpcore.AsyncConnectionPool, attempt: _Attempt | None) -> None:
        """Hand the connection back, or park it after a timeout (see `_parked`)."""
        if attempt is not None and attempt.error == "timeout" and self.in_flight_limit > 1:
            if not self._parked:
                status_line(f"judge requests to {self._base} time out after {self.runtime.timeout_s:g} s: "
                            "sending fewer at once (the server is slower than the requests in flight)")
            self._parked.append(client)
            self._streak = 0
            return
        slots.put_nowait(client)
        if attempt is not None and attempt.error is None:
            self._streak += 1
            if self._parked and self._streak >= self.in_flight_limit:
                slots.put_nowait(self._parked.pop())
                self._streak = 0

    def _body(self, request: JudgeRequest) -> dict:
        return {
            "model": self.model,
            "messages": request.messages,
            "temperature": 0,
            "max_tokens": request.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": request.schema, "strict": True},
            },
        }

    def _delay(self, retry: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter (spreads a crowd of retries out); the server's
        Retry-After wins, capped like any delay so a confused server cannot stall a run."""
        cap = self.runtime.max_backoff_s
        if retry_after is not None:
            return min(retry_after, cap)
        return random.uniform(0, min(cap, self.runtime.backoff_s * 2**retry))

    async def _attempt(self, client: httpcore.AsyncConnectionPool, body: bytes, max_tokens: int, validate: Validator,
                       left: float | None = None) -> _Attempt:
        timeout = self.runtime.timeout_s if left is None else max(0.001, min(self.runtime.timeout_s, left))
        headers = [*self._request_headers, (b"Content-Length", str(len(body)).encode())]
        limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        try:
            # the per-read timeouts do not bound a trickling server: wait_for bounds the whole request
            raw = await asyncio.wait_for(
                client.request("POST", self._url, headers=headers, content=body, extensions={"timeout": limits}), timeout
            )
        except (httpcore.TimeoutException, asyncio.TimeoutError):
            return _Attempt(error="timeout", detail=f"no answer from {self._url} within {timeout:g} s", retry=True)
        except httpcore.ConnectError as e:
            return _Attempt(error="connection_refused", detail=f"{self._url}: {e}", retry=True)
        except httpcore.UnsupportedProtocol as e:
            return _Attempt(error="backend_error", detail=f"{self._url}: {e}")
        except (httpcore.NetworkError, httpcore.ProtocolError) as e:  # the connection broke mid-request
            return _Attempt(error="backend_error", detail=f"{self._url}: {type(e).__name__}: {e}", retry=True)
        response = httpx.Response(raw.status, headers=raw.headers, content=raw.content)

        status = response.status_code
        if status == 429 or status >= 500:
            return _Attempt(
                error="http_429" if status == 429 else "http_5xx",
                detail=f"HTTP {status}: {_error_message(response)}",
                retry=True,
                retry_after=_retry_after(response) if status in (429, 503) else None,
            )
        if status >= 400:
            return _Attempt(error="http_4xx", detail=f"HTTP {status}: {_error_message(response)}")
        if status != 200:
            return _Attempt(error="backend_error", detail=f"HTTP {status} from {self._url}")
        return _read_choice(response, max_tokens, validate)


def _read_choice(response: httpx.Response, max_tokens: int, validate: Validator) -> _Attempt:
    try:
        data = response.json()
        choice = data["choices"][0]
        message = choice["message"]
        usage = data.get("usage") or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return _Attempt(error="backend_error", detail=f"not a chat completion: {response.text[:200]}", retry=True)
    used = {"tokens_in": tokens_in, "tokens_out": tokens_out}
    if message.get("refusal"):
        return _Attempt(error="refusal", detail=str(message["refusal"])[:300], **used)
    text = message.get("content") or ""
    problem = validate(text)
    if problem is None:
        return _Attempt(text=text, **used)
    if choice.get("finish_reason") == "length" and problem != "refusal":
        # cut off at max_tokens: at temperature 0 asking again cuts at the same place
        return _Attempt(error="malformed_json", detail=f"answer cut off at max_tokens={max_tokens}: {text[:200]}", **used)
    return _Attempt(error=problem, detail=text[:300] or "the answer had no text", retry=problem in RETRYABLE_ANSWERS, **used)


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}} or vLLM's older
    {"message": ...}), else the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:300]
        if isinstance(error, str):
            return error[:300]
    return response.text[:300]


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())
