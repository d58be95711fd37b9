"""Score cache: a pipeline with an llm_judge stage materialised through Dagster against a judge
server process (tests/judge_server.py, 20 ms latency); the requests are counted at the server.
Target: a second materialisation makes 0 requests, both when nothing changed (the stage is skipped
by its fingerprint) and when the stage really runs again (its outputs wiped: every score comes from
the cache). After the rubric's text changes, every document is asked again.

    python bench/judge_cache.py --docs 500
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from common import REPO, WORK, bench_args, corpus_files, make_project, materialize, quiet_stderr, save


def main() -> None:
    args = bench_args(docs=500).parse_args()
    import httpx

    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "judge_server.py"), "--port", "0", "--latency-ms", "20"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        stats = lambda: httpx.get(base_url.removesuffix("/v1") + "/stats").json()["requests"]  # noqa: E731
        cache = WORK / "judge-cache"
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.update(LLMDATA_CACHE_DIR=str(cache), LLMDATA_JUDGE_BASE_URL=base_url, LLMDATA_JUDGE_CONCURRENCY="32")
        rubric = WORK / "cache-rubric.yaml"
        rubric.parent.mkdir(parents=True, exist_ok=True)
        rubric.write_text("name: bench\nversion: '1'\ndescription: How clearly the text explains something.\n"
                          "scale: {min: 0, max: 3}\ncriteria: [It defines its terms., It gives an example.]\n"
                          "instructions: One point per criterion met, plus one if it is well written.\n")
        stages = f"- {{name: raw, op: ingest}}\n- {{name: judged, op: llm_judge, params: {{rubric: {rubric}, model: bench-judge}}}}\n"
        root = make_project("judge_cache", stages, {"docs": corpus_files(args.docs)}, tasks=args.tasks, workers=args.workers)
        runs = []
        with quiet_stderr(WORK / "judge_cache.log"):
            for label in ("first", "again, nothing changed", "again, stage outputs wiped", "rubric text edited"):
                if label.endswith("wiped"):
                    shutil.rmtree(root / "data" / "judge_cache" / "judged")
                if label.startswith("rubric"):
                    rubric.write_text(rubric.read_text().replace("explains", "explains step by step"))
                before = stats()
                seconds = materialize(root, ["src/docs"])
                runs.append({"run": label, "requests": stats() - before, "seconds": round(seconds, 2)})
        save("judge_cache", {"docs": args.docs, "runs": runs, "target": "0 requests on re-materialisation",
                             "met": runs[1]["requests"] == runs[2]["requests"] == 0 and runs[3]["requests"] == runs[0]["requests"]})
    finally:
        os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
