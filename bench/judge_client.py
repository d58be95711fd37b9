"""How close the OpenAI judge client comes to keeping a server busy: the test judge server
answers every request after a fixed latency, so with `concurrency` requests in flight the best
possible rate is concurrency / latency. Reports the achieved rate as a fraction of that.

    .venv/bin/python bench/judge_client.py [--requests 2000 --concurrency 64 --latency_ms 50]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from common import REPO, bench_args, save

from dagster_llmdata.judges.answer import validator
from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.openai_backend import OpenAIBackend
from dagster_llmdata.judges.rubrics import load_rubric


def main() -> None:
    args = bench_args(requests=2000, concurrency=64, latency_ms=50, repeats=3).parse_args()
    rubric = load_rubric("educational_value")
    requests = [JudgeRequest(rubric.messages(f"document number {i}: " + "some words " * 200), rubric.answer_schema()) for i in range(args.requests)]
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "judge_server.py"), "--port", "0", "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        port = int(server.stdout.readline())
        judge = OpenAIBackend(JudgeRuntime(base_url=f"http://127.0.0.1:{port}/v1", concurrency=args.concurrency), "bench")
        validate = validator(rubric)
        judge.complete(requests[: args.concurrency], validate)  # warm up: threads, connections
        walls = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = judge.complete(requests, validate)
            walls.append(time.perf_counter() - start)
            assert all(c.error is None for c in out), [c for c in out if c.error][:3]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    ideal = args.concurrency / (args.latency_ms / 1000)
    best = args.requests / min(walls)
    save("judge_client", {
        "server": "tests/judge_server.py (stdlib ThreadingHTTPServer, one process)",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "repeats": args.repeats,
        "wall_s": [round(w, 3) for w in walls],
        "requests_per_s": round(best, 1),
        "requests_per_s_median": round(args.requests / sorted(walls)[len(walls) // 2], 1),
        "ideal_requests_per_s": round(ideal, 1),
        "fraction_of_ideal": round(best / ideal, 3),
    })


if __name__ == "__main__":
    main()
