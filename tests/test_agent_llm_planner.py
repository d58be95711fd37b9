"""The LLM planner against a real OpenAI-compatible server process (tests/planner_server.py,
scripted): a good answer verifies; malformed, schema-breaking and hostile answers are refused
with the reason or repaired in a later round, and nothing they name is ever run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dagster_llmdata.agent.agent import propose
from dagster_llmdata.agent.planner import make_planner
from dagster_llmdata.spec.agent import agent_config
from dagster_llmdata.spec.intent import Intent
from dagster_llmdata.agent.llm_planner import answer_schema

from tests.agent_helpers import agent_project, pii_and_dups_source

SERVER = Path(__file__).with_name("planner_server.py")
GOOD_STAGES = [
    {"name": "raw", "op": "ingest", "params": {}},
    {"name": "normalized", "op": "normalize", "params": {}},
    {"name": "deduplicated", "op": "exact_dedup", "params": {}},
    {"name": "near_deduplicated", "op": "minhash_dedup", "params": {}},
    {"name": "redacted", "op": "pii_redact", "params": {}},
]


def answer(**fields) -> str:
    return json.dumps({"pipeline": "llm_made", "description": "from the model", "stages": GOOD_STAGES, **fields})


@contextlib.contextmanager
def planner_server():
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", "0"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def server_url():
    with planner_server() as url:
        yield url


@pytest.fixture()
def project(tmp_path, prose):
    root = agent_project(tmp_path / "proj", planner={"kind": "llm", "model": "planner-test"}, max_repair_rounds=1)
    pii_and_dups_source(root / "landing" / "crawl", prose)
    (root / "assets" / "existing.yaml").write_text(
        "pipeline: existing\nsources: [{name: web, landing: landing/crawl}]\nstages: [{name: raw, op: ingest}]\n")
    return root


def run(root: Path, url: str, answers: list[str], name: str | None = "llm_made", rounds: int | None = None):
    httpx.post(url.removesuffix("/v1") + "/script", json={"answers": answers})
    config = agent_config(root)
    config = config.model_copy(update={"planner": config.planner.model_copy(update={"base_url": url})})
    if rounds is not None:
        config = config.model_copy(update={"max_repair_rounds": rounds})
    intent = Intent(goal="a deduplicated corpus with no personal data", sources=["landing/crawl"], name=name)
    planner = make_planner(config, runtime={"max_retries": 0, "timeout_s": 30})
    result = propose(intent, root, config, planner=planner)
    return result, httpx.get(url.removesuffix("/v1") + "/requests").json()


def test_a_good_answer_verifies_and_the_request_carries_the_registry_schema(project, server_url):
    result, requests = run(project, server_url, [answer()])
    assert result.status == "verified", result.reasons
    assert len(result.rounds) == 1 and result.rounds[0].planner == "llm"
    body = requests[0]
    assert body["model"] == "planner-test"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == answer_schema()
    stage_ops = {v["properties"]["op"]["const"] for k, v in answer_schema()["$defs"].items() if k.startswith("Stage_")}
    assert {"ingest", "minhash_dedup", "pii_redact", "language_id"} <= stage_ops
    system, user = body["messages"][0]["content"], json.loads(body["messages"][1]["content"])
    assert "minhash_dedup" in system and "gopher_quality" in system  # the operator catalogue
    assert user["goal"].startswith("a deduplicated") and user["profile_of_a_sample"]["exact_dup_rate"] > 0
    assert all(row["ledger_check"] for row in result.ledger.values())


def test_a_malformed_answer_is_recorded_and_repaired_in_the_next_round(project, server_url):
    result, requests = run(project, server_url, ["Sure! Here is your pipeline: {stages: [ingest", answer()])
    assert result.status == "verified"
    assert [r.round for r in result.rounds] == [0, 1]
    assert result.rounds[0].failed[0].check == "answer_malformed" and result.rounds[0].dry_run is None
    retry = json.loads(requests[1]["messages"][1]["content"])
    assert "answer_malformed" in retry["previous_attempts_failed_because"][0][0]


def test_a_schema_breaking_answer_is_rejected(project, server_url):
    result, _ = run(project, server_url, [json.dumps({"pipeline": "llm_made", "stages": "ingest everything"}), "[1, 2, 3]"])
    assert result.status == "rejected"
    assert result.rounds[0].failed[0].check == "spec_shape" and result.rounds[1].failed[0].check == "answer_malformed"
    assert all(r.dry_run is None for r in result.rounds)
    assert not (project / "assets" / "proposed" / "llm_made.yaml").exists()


HOSTILE = {
    "unknown_operator": answer(stages=GOOD_STAGES + [{"name": "pwn", "op": "shell", "params": {"cmd": "touch {marker}"}}]),
    "path_escape": answer(storage="../../outside"),
    "sources_changed": answer(sources=[{"name": "crawl", "landing": "assets"}]),
    "shell_metacharacters": answer(stages=[{"name": "raw; touch {marker}", "op": "ingest", "params": {}}]),
    "enormous_param": answer(stages=GOOD_STAGES[:1] + [{"name": "lid", "op": "language_id", "params": {"max_chars": 10**18}}]),
    "name_clash": answer(pipeline="existing"),
    "model_path_escape": answer(stages=GOOD_STAGES[:1] + [{"name": "lid", "op": "language_id", "params": {"model_path": "/etc/shadow"}}]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_answers_are_refused_with_the_reason_and_never_run(project, server_url, tmp_path, case):
    marker = tmp_path / "pwned"
    text = HOSTILE[case].replace("{marker}", str(marker))
    result, _ = run(project, server_url, [text], name=None if case == "name_clash" else "llm_made", rounds=0)
    assert result.status == "rejected"
    expected = "path_escape" if case == "model_path_escape" else case
    assert expected in {f.check for f in result.rounds[0].failed}, result.reasons
    assert result.rounds[0].dry_run is None and not marker.exists()
    report = (project / "assets" / "proposed" / f"{result.name}.report.md").read_text()
    assert expected in report


def test_no_server_is_a_failed_proposal_not_a_crash(project):
    result, _ = None, None
    config = agent_config(project)
    config = config.model_copy(update={"planner": config.planner.model_copy(update={"base_url": "http://127.0.0.1:9/v1"}),
                                       "max_repair_rounds": 0})
    planner = make_planner(config, runtime={"max_retries": 0, "timeout_s": 5})
    result = propose(Intent(goal="anything useful", sources=["landing/crawl"], name="nothing"), project, config, planner=planner)
    assert result.status == "failed" and "connection_refused" in result.reasons[0]
