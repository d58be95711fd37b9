"""A scripted OpenAI-compatible chat server for the LLM planner's tests (a stand-in for
`vllm serve`, which cannot run here: no GPU, no model download).

    python tests/planner_server.py --port 0

prints its port, then serves POST /v1/chat/completions: each request gets the next answer of the
script (the last one repeats when the script runs out). POST /script {"answers": [TEXT, ...]}
sets the script; GET /requests returns every chat body received (messages, response_format)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: list[str] = []
        self.requests: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, data) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/requests":
            with self.server.state.lock:
                self._json(200, self.server.state.requests)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        state = self.server.state
        if self.path == "/script":
            with state.lock:
                state.answers, state.requests = list(body["answers"]), []
            self._json(200, {"ok": True})
            return
        if self.path not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        with state.lock:
            state.requests.append(body)
            answer = state.answers.pop(0) if len(state.answers) > 1 else (state.answers[0] if state.answers else "")
        self._json(200, {
            "id": f"chatcmpl-{len(state.requests)}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": sum(len(m.get("content", "").split()) for m in body.get("messages", [])),
                      "completion_tokens": len(answer.split())},
        })


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = State()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = Server(args.port)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
