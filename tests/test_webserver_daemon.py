"""The real `dagster dev` (webserver + daemon): the landing sensor picks up files dropped in the
landing folder and the daemon materialises their partitions; the UI's GraphQL API shows them."""

from __future__ import annotations

import json

import pytest

from tests.processes import dagster_dev, dagster_home, free_port, graphql, wait_for

pytestmark = pytest.mark.slow


MATERIALISED = """{ assetOrError(assetKey: {path: ["tiny", "shards"]}) {
  ... on Asset { assetMaterializations(limit: 10) { partition } } } }"""


def _materialised_partitions(port: int) -> set[str]:
    data = graphql(port, MATERIALISED)["data"]["assetOrError"]
    return {m["partition"] for m in data.get("assetMaterializations", [])}


def test_dagster_dev_sensor_materialises_dropped_files(project, prose, tmp_path):
    (project / "sensors/landing.yaml").write_text("sensors:\n  - {type: landing, pipeline: tiny, minimum_interval_seconds: 3}\n")
    port = free_port()
    with dagster_dev(project, dagster_home(tmp_path / "home"), port, tmp_path / "dagster_dev.log"):
        nodes = wait_for(lambda: graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"], 120, "webserver")
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} >= {"tiny/raw", "tiny/shards"}
        sensors = graphql(port, '{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "llmdata"}) '
                                "{ ... on Sensors { results { name sensorState { status } } } } }")
        assert {"name": "tiny_landing", "sensorState": {"status": "RUNNING"}} in sensors["data"]["sensorsOrError"]["results"]

        wait_for(lambda: "web/batch1.jsonl" in _materialised_partitions(port), 240, "first partition materialised by the daemon")
        (project / "landing/web/batch2.jsonl").write_text(json.dumps({"id": "late", "text": prose[25]}) + "\n")
        wait_for(lambda: _materialised_partitions(port) == {"web/batch1.jsonl", "web/batch2.jsonl"}, 240, "dropped file materialised")
        checks = graphql(port, """{ assetNodeOrError(assetKey: {path: ["tiny", "deduplicated"]}) { ... on AssetNode {
            assetChecksOrError { ... on AssetChecks { checks { name } } } } } }""")
        names = [c["name"] for c in checks["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]]
        assert names == ["ledger_balances"]
