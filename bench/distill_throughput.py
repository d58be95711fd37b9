"""Distilled classifier: scoring throughput in docs/s on one core (threads pinned to 1), on the
sample corpus (real text: Python docs, docstrings, stdlib code, Debian docs, HTML, crawl junk),
and the held-out agreement of the logistic and ridge models with the labels they learned.

No GPU judge runs here: the labels come from a fixed rule on each document's source (language
reference 3, substantial docstrings 2, other docstrings / Debian / HTML 1, code and junk 0), a
stand-in for a judge's scores that depends on what the text is.

    .venv/bin/python bench/distill_throughput.py --docs 50000
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one core means one BLAS thread too

import gzip  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from common import REPO, WORK, bench_args, corpus_files, save  # noqa: E402


def stand_in_label(row: dict) -> int:
    if row.get("title") == "junk" or row.get("domain") == "code":
        return 0
    if row.get("domain") == "python_docs":
        return 3
    if row.get("domain") == "docstrings" and len(row["text"].split()) >= 30:
        return 2
    return 1


def read_corpus(n_docs: int) -> list[dict]:
    rows = []
    for path in corpus_files(n_docs, 1):
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as fh:
            rows += [json.loads(line) for line in fh]
    return rows[:n_docs]


def main() -> None:
    from threadpoolctl import threadpool_limits

    from dagster_llmdata.judges.distill import stratified_sample, train_classifier

    args = bench_args(docs=50_000, sample=5_000, repeats=3).parse_args()
    rows = read_corpus(args.docs)
    texts = [r["text"] for r in rows]
    meta = [{"domain": r.get("domain"), "length": len(r["text"])} for r in rows]
    picked = stratified_sample(meta, args.sample, seed=0)
    sample_texts, sample_labels = [texts[i] for i in picked], [stand_in_label(rows[i]) for i in picked]
    models = {}
    with threadpool_limits(1):
        for kind in ("logistic", "ridge"):
            start = time.perf_counter()
            clf = train_classifier(sample_texts, sample_labels, seed=0, kind=kind)
            train_s = time.perf_counter() - start
            best = float("inf")
            for _ in range(args.repeats):  # best of a few: the machine is shared
                start = time.perf_counter()
                clf.score(texts)
                best = min(best, time.perf_counter() - start)
            model_path = clf.save(WORK / f"distill-{kind}.joblib")
            models[kind] = {
                "train_s": round(train_s, 2),
                "score_s": round(best, 2),
                "docs_per_s_per_core": round(len(texts) / best),
                "model_bytes": model_path.stat().st_size,
                "holdout": clf.holdout,
            }
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    save("distill_throughput", {
        "commit": commit,
        "docs": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts)),
        "threads": 1,
        "sample": len(picked),
        "labels": "stand-in rule on each doc's source (no GPU judge here)",
        "target_docs_per_s_per_core": 5000,
        "models": models,
    })


if __name__ == "__main__":
    main()
