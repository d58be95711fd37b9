"""A stand-in for an OpenAI-compatible judge server (`vllm serve`), for tests and benchmarks.

    python tests/judge_server.py --port 0 [--latency-ms 50] [--api-key KEY] [--startup-delay S]
                                 [--loading-s S] [--slots N]

prints its port on stdout, then serves POST /v1/chat/completions. It answers every request with
a deterministic answer that follows the request's `response_format` json_schema: the score is
min + (words in the last message) mod (max - min + 1), each boolean is true when its name
appears in the last message, the reason says how many words it counted. Like vLLM >= 0.12 it
would ignore `guided_json`; unlike vLLM it rejects it (400), so a client regression shows.

Markers in the last message inject faults: `[[fault:KIND]]`, `[[fault:KINDxN]]` (the first N
requests carrying that text), `[[fault:KIND=ARG]]`. Kinds:
  429, 500, 502, 503, ... a status with an OpenAI error body (default: once)
  retry-after=S          429 with `Retry-After: S` seconds (default: once)
  retry-after-date=S     429 with Retry-After as an HTTP date S seconds ahead (default: once)
  timeout=S              sleeps S seconds (default 5) before answering (default: once)
  drop                   closes the connection without answering (default: once)
  400, 401, 404, ...     a client error with an OpenAI error body (always)
  malformed, schema, range, empty, refusal, refusal-field, length   a bad answer (always)
A server that is still starting: --startup-delay S binds the port (printed at once) but listens
only after S seconds, so connections are refused meanwhile (a model still loading before
`vllm serve` listens); --loading-s S then answers every request 503 "Loading model" for S more
seconds (llama.cpp's server while it loads). --slots N decodes at most N requests at once, the
rest wait their turn (a single-slot llama.cpp server: --slots 1); like such a server it goes on
with a request whose client has given up. GET /v1/models and /health answer when ready.

GET /stats returns counters (requests, by status, max in flight, arrival times per text, the
last request's body less its messages);
POST /reset clears them."""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT = re.compile(r"\[\[fault:([a-z0-9-]+?)(?:x(\d+))?(?:=([0-9.]+))?\]\]")
ANSWER_FAULTS = {"malformed", "schema", "range", "empty", "refusal", "refusal-field", "length"}


def doc_key(text: str) -> str:
    """How /stats names a request's last message (the document)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_status: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.authorization: str | None = None
        self.models: Counter = Counter()
        self.last_request: dict | None = None  # the last chat body, less its messages

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "arrivals": dict(self.arrivals),
                "authorization": self.authorization,
                "models": dict(self.models),
                "last_request": self.last_request,
            }


class JudgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server
    server: JudgeServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle holds the body for the
        # client's delayed ACK (~40 ms a request)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # quiet: tests read stdout for the port only
        pass

    def do_GET(self) -> None:
        if self.path == "/stats":
            self._json(200, self.server.stats.snapshot())
        elif self._loading():
            return
        elif self.path in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": "judge-test", "object": "model", "owned_by": "test"}]})
        elif self.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/reset":
            with self.server.stats.lock:
                self.server.stats.reset()
            self._json(200, {"ok": True})
            return
        if self.path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route POST {self.path}")
            return
        if self._loading():
            return
        stats = self.server.stats
        with stats.lock:
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            stats.authorization = self.headers.get("Authorization")
        try:
            with self.server.slots:
                if self.server.latency_s:
                    time.sleep(self.server.latency_s)
                self._chat(body)
        finally:
            with stats.lock:
                stats.in_flight -= 1

    def _loading(self) -> bool:
        """Answers 503 while the server is still "loading its model" (--loading-s)."""
        if time.monotonic() < self.server.ready_at:
            self._error(503, "Loading model")
            return True
        return False

    def _chat(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            messages = request["messages"]
            text = messages[-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            self._error(400, "body is not a chat completion request")
            return
        if self.server.api_key and self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            self._error(401, "missing or wrong API key")
            return
        guided = [k for k in (*request, *(request.get("extra_body") or {})) if k.startswith("guided_")]
        if guided:
            self._error(400, f"{', '.join(guided)}: old guided decoding keys (vLLM >= 0.12 ignores them); use response_format")
            return
        rf = request.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if isinstance(rf, dict) else None
        if rf.get("type") != "json_schema" or not isinstance(schema, dict):
            self._error(400, "response_format must be {type: json_schema, json_schema: {schema: ...}}")
            return
        stats = self.server.stats
        key = doc_key(text)
        with stats.lock:
            stats.arrivals[key].append(time.monotonic())
            seen = len(stats.arrivals[key])
            stats.models[request.get("model")] += 1
            stats.last_request = {k: v for k, v in request.items() if k != "messages"}
        fault = self._active_fault(text, seen)
        if fault and self._http_fault(*fault):
            return
        self._answer(text, messages, schema, fault[0] if fault else None)

    def _active_fault(self, text: str, seen: int) -> tuple[str, str | None] | None:
        """The first marker still firing on this request (the `seen`-th carrying this text)."""
        for kind, times, arg in FAULT.findall(text):
            always = kind in ANSWER_FAULTS or (kind.isdigit() and 400 <= int(kind) < 500 and kind != "429")
            limit = int(times) if times else (None if always else 1)
            if limit is None or seen <= limit:
                return kind, arg or None
        return None

    def _http_fault(self, kind: str, arg: str | None) -> bool:
        """Answer with the fault when it is an HTTP-level one; False for answer faults."""
        if kind.isdigit():
            self._error(int(kind), f"injected HTTP {kind}")
        elif kind == "retry-after":
            self._error(429, "injected 429 with Retry-After", {"Retry-After": arg or "1"})
        elif kind == "retry-after-date":
            when = email.utils.formatdate(time.time() + float(arg or 1), usegmt=True)
            self._error(429, "injected 429 with a Retry-After date", {"Retry-After": when})
        elif kind == "timeout":
            time.sleep(float(arg or 5))
            return False  # then answers, to a client that has long given up
        elif kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            return False
        return True

    def _answer(self, text: str, messages: list[dict], schema: dict, fault: str | None) -> None:
        words = len(text.split())
        answer: dict = {}
        for name, prop in (schema.get("properties") or {}).items():
            if prop.get("type") == "integer":
                lo, hi = prop.get("minimum", 0), prop.get("maximum", 10)
                answer[name] = lo + words % (hi - lo + 1)
            elif prop.get("type") == "boolean":
                answer[name] = name in text.lower()
            else:
                answer[name] = f"counted {words} words"[: prop.get("maxLength", 200)]
        content: str | None = json.dumps(answer)
        finish, refusal = "stop", None
        if fault == "malformed":
            content = content[:-3] + ",,"
        elif fault == "schema":
            content = json.dumps({**answer, "extra": 1})
        elif fault == "range":
            content = json.dumps({**answer, **{k: 1000 for k, v in answer.items() if type(v) is int}})
        elif fault == "empty":
            content = ""
        elif fault == "refusal":
            content = "I'm sorry, but I can't help with rating this document."
        elif fault == "refusal-field":
            content, refusal = None, "I can't help with that."
        elif fault == "length":
            content, finish = content[: len(content) // 2], "length"
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        self._json(200, {
            "id": f"chatcmpl-{doc_key(text)}",
            "object": "chat.completion",
            "model": "judge-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content or "") // 4 + 1,
                      "total_tokens": prompt_tokens + len(content or "") // 4 + 1},
        })

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, headers)

    def _json(self, status: int, data: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        with self.server.stats.lock:
            if self.path.endswith("/chat/completions"):
                self.server.stats.by_status[status] += 1
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of hundreds of connections must not be refused

    def __init__(self, port: int, latency_s: float, api_key: str | None, slots: int | None = None):
        super().__init__(("127.0.0.1", port), JudgeHandler, bind_and_activate=False)
        self.server_bind()  # bound, not listening: connections are refused until server_activate()
        self.ready_at = 0.0
        self.slots = threading.BoundedSemaphore(slots) if slots else contextlib.nullcontext()
        self.latency_s = latency_s
        self.api_key = api_key
        self.stats = Stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed on stdout)")
    ap.add_argument("--latency-ms", type=float, default=0, help="added to every chat request")
    ap.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY`")
    ap.add_argument("--startup-delay", type=float, default=0, help="seconds before it listens (connections refused)")
    ap.add_argument("--loading-s", type=float, default=0, help="then seconds of 503 'Loading model' to every request")
    ap.add_argument("--slots", type=int, default=None, help="chat requests decoded at once (the rest queue)")
    args = ap.parse_args()
    server = JudgeServer(args.port, args.latency_ms / 1000, args.api_key, args.slots)
    print(server.server_address[1], flush=True)
    sys.stdout.close()  # the port is all stdout carries; nobody needs to drain it
    time.sleep(args.startup_delay)
    server.server_activate()
    server.ready_at = time.monotonic() + args.loading_s
    server.serve_forever()


if __name__ == "__main__":
    main()
