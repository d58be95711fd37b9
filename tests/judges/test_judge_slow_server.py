"""The openai judge against real server processes that start slowly, answer slower than the
request timeout, or never come up (tests/judge_server.py --startup-delay / --loading-s / --slots):
the wait is bounded and reported, progress is shown, and nothing is lost or hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from dagster_llmdata.errors import JudgeUnavailable
from dagster_llmdata.judges.answer import validator
from dagster_llmdata.judges.backend import JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.openai_backend import OpenAIBackend
from dagster_llmdata.judges.rubrics import load_rubric

from ..conftest import judge_server
from ..processes import free_port

RUBRIC = load_rubric("educational_value")


def request(document: str) -> JudgeRequest:
    return JudgeRequest(RUBRIC.messages(document), RUBRIC.answer_schema())


def test_a_starting_server_is_waited_for_and_then_judges_everything(capfd):
    # refuses connections for 2 s, then answers 503 "Loading model" for 1 s
    with judge_server("--startup-delay", "2", "--loading-s", "1") as url:
        judge = OpenAIBackend(JudgeRuntime(base_url=url, ready_timeout_s=20, max_retries=0), "m")
        start = time.monotonic()
        judge.wait_ready()
        waited = time.monotonic() - start
        out = judge.complete([request(f"doc {i}") for i in range(5)], validator(RUBRIC))
        judge.close()
    assert 2.5 <= waited < 10
    assert [c.error for c in out] == [None] * 5  # not one quarantined connection_refused
    err = capfd.readouterr().err
    assert f"waiting for the judge server at {url}" in err and "connection refused" in err
    assert f"judge server at {url} is up after" in err


def test_a_server_that_never_comes_up_fails_clearly_within_the_wait():
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = OpenAIBackend(JudgeRuntime(base_url=url, ready_timeout_s=2), "m")
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable, match=r"did not come up within 2 s \(connection refused\)"):
        judge.wait_ready()
    assert time.monotonic() - start < 4


def test_a_single_slot_server_slower_than_the_timeout_is_not_flooded_and_the_deadline_holds(capfd):
    # one request decoded at a time, 0.4 s each, against a 0.3 s request timeout: every request
    # queued behind another times out; fewer go out at once and the deadline ends the run
    with judge_server("--slots", "1", "--latency-ms", "400") as url:
        judge = OpenAIBackend(JudgeRuntime(base_url=url, concurrency=8, timeout_s=0.3, max_retries=3, backoff_s=0.01,
                                           deadline_s=4), "m")
        done = []
        start = time.monotonic()
        out = judge.complete([request(f"doc {i}") for i in range(20)], validator(RUBRIC), done.append)
        wall = time.monotonic() - start
        limit = judge.in_flight_limit
        judge.close()
    assert wall < 5.5  # the deadline is honoured, whatever the retries would have taken
    assert len(done) == len(out) == 20  # every request reported as it ended
    assert limit < 8
    assert all(c.error in ("timeout", "deadline_exceeded") for c in out)
    assert any(c.error == "deadline_exceeded" and "deadline_s=4" in c.detail for c in out)
    assert "sending fewer at once" in capfd.readouterr().err


def test_llmdata_op_shows_progress_and_quarantines_what_the_deadline_left(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": f"document number {i} " * 5}) + "\n" for i in range(12)))
    with judge_server("--startup-delay", "1", "--slots", "1", "--latency-ms", "300") as url:
        run = subprocess.run(
            [sys.executable, "-m", "dagster_llmdata.cli", "op", "llm_judge", "--in", str(docs), "--out", str(tmp_path / "out.parquet"),
             "--param", "backend=openai", "--param", f"base_url={url}", "--param", "model=m", "--param", "timeout_s=2",
             "--param", "deadline_s=3", "--param", "concurrency=2"],
            capture_output=True, text=True, timeout=60,
            env={**__import__("os").environ, "LLMDATA_CACHE_DIR": str(tmp_path / "cache"), "LLMDATA_PROGRESS_INTERVAL_S": "0.5"},
        )
    assert run.returncode == 0, run.stderr
    ledger = json.loads(run.stdout)
    assert ledger["n_in"] == 12 and ledger["balanced"]
    assert 0 < ledger["kept"] < 12 and ledger["quarantined"] == {"deadline_exceeded": 12 - ledger["kept"]}
    assert "llm_judge: " in run.stderr and "/12 docs judged" in run.stderr
    assert "Traceback" not in run.stderr


def test_llmdata_op_against_no_server_fails_in_one_line(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "1", "text": "some text"}) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "dagster_llmdata.cli", "op", "llm_judge", "--in", str(docs), "--out", str(tmp_path / "out.parquet"),
         "--param", "backend=openai", "--param", f"base_url=http://127.0.0.1:{free_port()}/v1", "--param", "ready_timeout_s=1"],
        capture_output=True, text=True, timeout=60, env={**__import__("os").environ, "LLMDATA_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert run.returncode == 2
    assert "did not come up within 1 s (connection refused)" in run.stderr.splitlines()[-1]
    assert "Traceback" not in run.stderr
