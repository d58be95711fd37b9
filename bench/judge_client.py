"""How close the OpenAI judge client comes to keeping a server busy: the test judge server
(tests/judge_server.py) answers every request after a fixed latency, so with `concurrency`
requests in flight the best possible rate is concurrency / latency. Reports the achieved rate
as a fraction of that, and the client's CPU per request (what caps it when latency is short).

    .venv/bin/python bench/judge_client.py [--requests 2000 --configs 64:50,64:200,256:500]

Each config is concurrency:latency_ms; the first is the headline number."""

from __future__ import annotations

import importlib.util
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


def run_config(requests: list[JudgeRequest], validate, concurrency: int, latency_ms: int, repeats: int) -> dict:
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "judge_server.py"), "--port", "0", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        port = int(server.stdout.readline())
        judge = OpenAIBackend(JudgeRuntime(base_url=f"http://127.0.0.1:{port}/v1", concurrency=concurrency), "bench")
        judge.complete(requests[:concurrency], validate)  # warm up: loop thread, connections
        walls = []
        cpu_start = time.process_time()
        for _ in range(repeats):
            start = time.perf_counter()
            out = judge.complete(requests, validate)
            walls.append(time.perf_counter() - start)
            assert all(c.error is None for c in out), [c for c in out if c.error][:3]
        cpu = time.process_time() - cpu_start
        judge.close()
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    ideal = concurrency / (latency_ms / 1000)
    best = len(requests) / min(walls)
    return {
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "wall_s": [round(w, 3) for w in walls],
        "requests_per_s": round(best, 1),
        "requests_per_s_median": round(len(requests) / sorted(walls)[len(walls) // 2], 1),
        "ideal_requests_per_s": round(ideal, 1),
        "fraction_of_ideal": round(best / ideal, 3),
        "client_cpu_ms_per_request": round(cpu / (repeats * len(requests)) * 1000, 3),
    }


def main() -> None:
    args = bench_args(requests=2000, configs="64:50,64:200,256:500", repeats=3).parse_args()
    rubric = load_rubric("educational_value")
    requests = [JudgeRequest(rubric.messages(f"document number {i}: " + "some words " * 200), rubric.answer_schema()) for i in range(args.requests)]
    runs = []
    for config in args.configs.split(","):
        concurrency, latency_ms = (int(x) for x in config.split(":"))
        runs.append(run_config(requests, validator(rubric), concurrency, latency_ms, args.repeats))
        print(runs[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    save("judge_client", {
        "commit": commit,
        "server": "tests/judge_server.py (stdlib ThreadingHTTPServer, one process, same machine)",
        # httpcore imports sniffio on every lock it sets up; a failed import costs a path search
        "sniffio_installed": importlib.util.find_spec("sniffio") is not None,
        "requests": args.requests,
        "repeats": args.repeats,
        "fraction_of_ideal": runs[0]["fraction_of_ideal"],
        "runs": runs,
    })


if __name__ == "__main__":
    main()
