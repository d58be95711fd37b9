"""LLM judge throughput on a GPU machine: the same rubric prompts over the same documents through
(a) our in-process VllmBackend, (b) our OpenAIBackend against a `vllm serve` started here, and
(c) raw `LLM.chat` with the same sampling params, for docs/s and tokens/s of each. Needs vLLM
(`pip install 'dagster-llmdata[vllm]'`), a GPU and a model on local disk (or in the HF cache).

    .venv/bin/python bench/gpu_judge.py --model /models/Qwen2.5-1.5B-Instruct --docs 2000

The server runs first and is stopped (its whole process group) before the model loads in this
process, so the two never share the GPU. Before each timed run a few other documents warm the
engine up and put the rubric prefix in the cache, as in a long judge run; the in-process prefix
cache is reset between (a) and (c) so neither gets the other's documents for free."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from common import WORK, corpus_files, save

WARMUP_DOCS = 32
SERVED_NAME = "judge"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="local model folder or Hugging Face id (already downloaded)")
    ap.add_argument("--docs", type=int, default=2000, help="documents judged per backend")
    ap.add_argument("--port", type=int, default=8011, help="port of the `vllm serve` this script starts")
    ap.add_argument("--rubric", default="educational_value", help="built-in rubric name or rubric YAML")
    ap.add_argument("--max-tokens", type=int, default=256, help="answer budget per document")
    ap.add_argument("--max-doc-chars", type=int, default=6000, help="documents are cut to this many characters")
    ap.add_argument("--concurrency", type=int, default=256, help="requests in flight for the OpenAI backend")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--server-start-timeout-s", type=float, default=1200)
    return ap.parse_args(argv)


def documents(n: int, max_chars: int) -> list[str]:
    """Real text from the sample corpus (docs, docstrings, code, Debian files, HTML, junk)."""
    texts: list[str] = []
    for path in corpus_files(max(n, 1000), 1):
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as fh:
            texts += [json.loads(line)["text"][:max_chars] for line in fh]
    if len(texts) < n:
        raise SystemExit(f"gpu_judge: the sample corpus gave {len(texts)} documents, fewer than {n}")
    return texts[:n]


def summary(completions, wall_s: float) -> dict:
    tokens_in = sum(c.tokens_in for c in completions)
    tokens_out = sum(c.tokens_out for c in completions)
    return {
        "docs": len(completions),
        "wall_s": round(wall_s, 2),
        "docs_per_s": round(len(completions) / wall_s, 2),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "tokens_per_s": round((tokens_in + tokens_out) / wall_s, 1),
        "output_tokens_per_s": round(tokens_out / wall_s, 1),
        "failures": dict(Counter(c.error for c in completions if c.error)),
    }


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


# --- (b): our OpenAI backend against `vllm serve` ------------------------------------------------


def start_server(args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    cli = shutil.which("vllm")
    cmd = [cli] if cli else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    cmd += [
        "serve", args.model, "--host", "127.0.0.1", "--port", str(args.port), "--served-model-name", SERVED_NAME,
        "--tensor-parallel-size", str(args.tensor_parallel_size),
        "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--enable-prefix-caching",
    ]
    log = open(log_path, "w")
    # its own process group: stopping it stops the engine workers it forks too
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_ready(proc: subprocess.Popen, port: int, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"gpu_judge: `vllm serve` exited with {proc.returncode}; end of {log_path}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise SystemExit(f"gpu_judge: `vllm serve` not ready after {timeout_s:.0f}s (log: {log_path})")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_openai(args, requests, warmup, validate) -> tuple[dict, list]:
    from dagster_llmdata.judges.backend import JudgeRuntime
    from dagster_llmdata.judges.openai_backend import OpenAIBackend

    log_path = WORK / "gpu_judge_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = start_server(args, log_path)
    try:
        wait_until_ready(proc, args.port, args.server_start_timeout_s, log_path)
        runtime = JudgeRuntime(base_url=f"http://127.0.0.1:{args.port}/v1", concurrency=args.concurrency, timeout_s=600)
        backend = OpenAIBackend(runtime, SERVED_NAME)
        backend.complete(warmup, validate)
        completions, wall = timed(backend.complete, requests, validate)
        backend.close()
    finally:
        stop_server(proc)
    return summary(completions, wall), completions


# --- (a) and (c): in this process ----------------------------------------------------------------


def raw_chat(llm, requests) -> list:
    """(c): LLM.chat with SamplingParams written out here, not through our backend."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    params = [
        SamplingParams(temperature=0, max_tokens=r.max_tokens, structured_outputs=StructuredOutputsParams(json=r.schema))
        for r in requests
    ]
    return llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)


def run_in_process(args, requests, warmup, validate) -> tuple[dict, dict, list, list]:
    from dagster_llmdata.judges.backend import JudgeRuntime
    from dagster_llmdata.judges.vllm_backend import VllmBackend, completion_from_output

    runtime = JudgeRuntime(tensor_parallel_size=args.tensor_parallel_size, gpu_memory_utilization=args.gpu_memory_utilization)
    backend = VllmBackend(runtime, args.model)
    backend.complete(warmup, validate)
    ours, ours_wall = timed(backend.complete, requests, validate)
    backend.llm.reset_prefix_cache()
    raw_chat(backend.llm, warmup)
    outputs, raw_wall = timed(raw_chat, backend.llm, requests)
    raw = [completion_from_output(o, validate) for o in outputs]
    backend.close()
    return summary(ours, ours_wall), summary(raw, raw_wall), ours, raw


def same_text(a: list, b: list) -> float:
    return round(sum(x.text is not None and x.text == y.text for x, y in zip(a, b)) / max(len(a), 1), 4)


def main() -> None:
    args = parse_args()
    from dagster_llmdata.judges.vllm_backend import import_vllm

    try:
        import_vllm()
    except ImportError as exc:
        raise SystemExit(f"gpu_judge: {exc}") from None
    import torch
    import vllm

    from dagster_llmdata.judges.answer import validator
    from dagster_llmdata.judges.backend import JudgeRequest
    from dagster_llmdata.judges.rubrics import load_rubric

    rubric = load_rubric(args.rubric)
    texts = documents(args.docs + WARMUP_DOCS, args.max_doc_chars)
    to_requests = lambda docs: [JudgeRequest(rubric.messages(t), rubric.answer_schema(), args.max_tokens) for t in docs]  # noqa: E731
    requests, warmup = to_requests(texts[WARMUP_DOCS:]), to_requests(texts[:WARMUP_DOCS])
    validate = validator(rubric)

    server, server_completions = run_openai(args, requests, warmup, validate)
    ours, raw, ours_completions, raw_completions = run_in_process(args, requests, warmup, validate)
    save("gpu_judge", {
        "model": args.model,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "vllm": vllm.__version__,
        "rubric": rubric.name,
        "rubric_version": rubric.fingerprint,
        "docs": len(requests),
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "vllm_backend_in_process": ours,
        "openai_backend_vllm_serve": server,
        "raw_llm_chat": raw,
        # greedy decoding: the three should mostly write the same answers
        "same_answer_ours_vs_raw": same_text(ours_completions, raw_completions),
        "same_answer_ours_vs_server": same_text(ours_completions, server_completions),
        "overhead_vs_raw": round(ours["wall_s"] / raw["wall_s"] - 1, 4),
    })


if __name__ == "__main__":
    main()
