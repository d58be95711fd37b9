"""End to end against the real `dagster dev` (webserver + daemon): an intent dropped in the inbox
-> the agent sensor's tick -> a proposal run -> `llmdata agent approve` -> the code location
reloads through GraphQL -> the new asset keys appear -> the landing sensor added on approval
materialises them -> every ledger check passes."""

from __future__ import annotations

import json

import pytest

from dagster_llmdata.cli.main import main

from tests.agent_helpers import agent_project, pii_and_dups_source, write_intent
from tests.processes import dagster_dev, dagster_home, free_port, graphql, wait_for

pytestmark = pytest.mark.slow

CHECKS = """query($path: [String!]!) { assetCheckExecutions(assetKey: {path: $path}, checkName: "ledger_balances", limit: 5) {
  status partition } }"""
PROPOSALS = """{ assetOrError(assetKey: {path: ["agent_proposals"]}) { ... on Asset {
  assetMaterializations(limit: 5) { metadataEntries { label ... on TextMetadataEntry { text } } } } } }"""


def _asset_keys(port: int) -> set[str]:
    return {"/".join(n["assetKey"]["path"]) for n in graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]}


def test_inbox_to_materialised_pipeline_through_the_running_ui(tmp_path, prose, capsys):
    port = free_port()
    root = agent_project(tmp_path / "proj", sample_docs=60, minimum_interval_seconds=2, webserver_url=f"http://127.0.0.1:{port}")
    pii_and_dups_source(root / "landing" / "crawl", prose)
    with dagster_dev(root, dagster_home(tmp_path / "home"), port, tmp_path / "dagster_dev.log"):
        wait_for(lambda: "agent_proposals" in _asset_keys(port), 120, "webserver with the agent_proposals asset")
        write_intent(root / "agent" / "inbox" / "clean.yaml", name="crawl_clean", sources=["landing/crawl"],
                     goal="an English corpus without personal data or duplicates")
        (root / "agent" / "inbox" / "notes.txt").write_text("not an intent")
        report = root / "assets" / "proposed" / "crawl_clean.report.json"
        wait_for(lambda: report.exists() and json.loads(report.read_text())["status"], 300, "the proposal written by the daemon's run")
        assert json.loads(report.read_text())["status"] == "verified"
        assert (root / "agent/inbox/rejected").is_dir() and any(p.name.endswith("notes.txt.reason.txt") for p in (root / "agent/inbox/rejected").iterdir())
        md = wait_for(lambda: graphql(port, PROPOSALS)["data"]["assetOrError"]["assetMaterializations"], 60, "agent_proposals materialisation")
        labels = {e["label"]: e.get("text") for e in md[0]["metadataEntries"]}
        assert labels.get("status") == "verified" and "report" in labels
        assert "crawl_clean/raw" not in _asset_keys(port)

        assert main(["agent", "approve", "crawl_clean", "--project", str(root)]) == 0
        outcome = json.loads(capsys.readouterr().out)
        assert outcome["reload"]["ok"], outcome
        keys = _asset_keys(port)
        assert {"crawl_clean/raw", "crawl_clean/redacted"} <= keys  # no restart: the reload brought them in

        def ledgers_passed():
            execs = [graphql(port, CHECKS, {"path": ["crawl_clean", stage]})["data"]["assetCheckExecutions"]
                     for stage in ("raw", "deduplicated", "redacted")]
            return all(e and e[0]["status"] == "SUCCEEDED" for e in execs)

        wait_for(ledgers_passed, 300, "the new pipeline materialised by its landing sensor with passing ledger checks")
