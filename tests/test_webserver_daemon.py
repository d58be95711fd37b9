"""The real `dagster dev` (webserver + daemon): the landing sensor picks up files dropped in the
landing folder and the daemon materialises their partitions; the UI's GraphQL API shows them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError as exc:  # server not up yet
            last = exc
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


MATERIALISED = """{ assetOrError(assetKey: {path: ["tiny", "shards"]}) {
  ... on Asset { assetMaterializations(limit: 10) { partition } } } }"""


def _materialised_partitions(port: int) -> set[str]:
    data = _graphql(port, MATERIALISED)["data"]["assetOrError"]
    return {m["partition"] for m in data.get("assetMaterializations", [])}


def test_dagster_dev_sensor_materialises_dropped_files(project, prose, tmp_path):
    (project / "sensors/landing.yaml").write_text("sensors:\n  - {type: landing, pipeline: tiny, minimum_interval_seconds: 3}\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDATA_PROJECT": str(project)}
    log = open(tmp_path / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        nodes = _wait(lambda: _graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"], 120, "webserver")
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} >= {"tiny/raw", "tiny/shards"}
        sensors = _graphql(port, '{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "llmdata"}) '
                                 "{ ... on Sensors { results { name sensorState { status } } } } }")
        assert {"name": "tiny_landing", "sensorState": {"status": "RUNNING"}} in sensors["data"]["sensorsOrError"]["results"]

        _wait(lambda: "web/batch1.jsonl" in _materialised_partitions(port), 240, "first partition materialised by the daemon")
        (project / "landing/web/batch2.jsonl").write_text(json.dumps({"id": "late", "text": prose[25]}) + "\n")
        _wait(lambda: _materialised_partitions(port) == {"web/batch1.jsonl", "web/batch2.jsonl"}, 240, "dropped file materialised")
        checks = _graphql(port, """{ assetNodeOrError(assetKey: {path: ["tiny", "deduplicated"]}) { ... on AssetNode {
            assetChecksOrError { ... on AssetChecks { checks { name } } } } } }""")
        names = [c["name"] for c in checks["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]]
        assert names == ["ledger_balances"]
    finally:
        # dagster dev's children may ignore SIGTERM: stop the whole process group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
