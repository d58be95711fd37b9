"""`executor: {kind: ray}` against a real Ray cluster that the tests start on loopback (`ray start
--head`, 2 CPUs): the same ids and ledgers as the local executor, whole-dataset operators that
stay in the step process say so, and a worker killed mid-task is retried to a complete result."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.operators import Operator, register_operator
from dagster_llmdata.operators.base import DocFunction

from tests.conftest import PIPELINE_YAML, materialise_partition, write_jsonl
from tests.processes import free_port

# Ray swaps 127.0.0.1 for the machine's network address unless told this is a one-machine
# cluster: keep every connection on loopback (read when ray is imported)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# a loopback-only test cluster: no token (one in ~/.ray would be shared with every Ray on the box)
os.environ["RAY_AUTH_MODE"] = "disabled"
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster start and ~80 s of runs on 2 shared cores
REPO = Path(__file__).parents[1]
PARTITION = "web/batch1.jsonl"
KILL_MARKER_ENV = "LLMDATA_TEST_RAY_KILL_MARKER"
STAGES = ["raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "redacted", "shards"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs, in its own process group (killed after); this test
    process joins it as the driver, the way a Dagster step process would."""
    port = free_port()
    temp = Path(tempfile_dir := tmp_path_factory.mktemp("ray"))
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=open(temp / "ray.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_head(address, proc, temp)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tempfile_dir, ignore_errors=True)


def _wait_for_head(address: str, proc: subprocess.Popen, temp: Path) -> None:
    import time

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited: {(temp / 'ray.log').read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(tuple([address.split(":")[0], int(address.split(":")[1])])) == 0:
                return
        time.sleep(1)
    raise RuntimeError("Ray head did not come up in 120 s")


def _project(root: Path, prose: list[str], executor: str) -> Path:
    (root / "assets").mkdir(parents=True)
    (root / "assets/tiny.yaml").write_text(PIPELINE_YAML.replace("executor: {kind: local, tasks: 1, workers: 1}", executor)
                                           .replace("{name: near_deduplicated, op: minhash_dedup}",
                                                    "{name: near_deduplicated, op: minhash_dedup, params: {num_buckets: 2}}"))
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:30])]
    rows += [{"id": "dup", "text": prose[0]}, {"id": "short", "text": "Too short to keep."}, {"id": "empty", "text": ""}]
    # two files' worth of row groups, so two tasks each get work
    write_jsonl(root / "landing/web/batch1.jsonl", rows)
    return root


def _outputs(root: Path) -> dict:
    import json

    base = root / "data/pipelines/tiny"
    out = {}
    for stage in STAGES:
        got = {kind: sorted(i for f in list_parquet(base / stage / kind / PARTITION) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())
               for kind in ("data", "rejected", "quarantine")}
        got["ledger"] = json.loads((base / stage / "data" / PARTITION / "_ledger.json").read_text())["ledger"]
        out[stage] = got
    return out


def test_ray_executor_matches_local_ids_and_ledgers(ray_cluster, tmp_path, prose, instance):
    local = _project(tmp_path / "local", prose, "executor: {kind: local, tasks: 2, workers: 2}")
    on_ray = _project(tmp_path / "ray", prose, f"executor: {{kind: ray, address: '{ray_cluster}', tasks: 2, workers: 2, "
                                                 "cpus_per_task: 1, memory_per_task_gb: 0.5}")
    result, _ = materialise_partition(local, instance, partition=PARTITION)
    assert result.success
    import dagster as dg

    with dg.instance_for_test() as other:
        result, meta = materialise_partition(on_ray, other, partition=PARTITION)
    assert result.success
    expected = _outputs(local)
    assert _outputs(on_ray) == expected
    assert expected["raw"]["quarantine"] == ["empty"] and expected["deduplicated"]["rejected"] == ["dup"]
    # datatrove passes ran on Ray; the whole-dataset operators work in the step process and say so
    assert meta["raw"]["llmdata/executor"].value == meta["normalized"]["llmdata/executor"].value == "ray"
    assert meta["quality_filtered"]["llmdata/executor"].value == "ray"
    for stage in ("deduplicated", "near_deduplicated", "shards"):
        op = {"deduplicated": "exact_dedup", "near_deduplicated": "minhash_dedup", "shards": "export_shards"}[stage]
        assert meta[stage]["llmdata/executor"].value == f"the step process (operator {op} does not run on ray)"
    logs = list((on_ray / "data/pipelines/tiny/normalized/work" / PARTITION).glob("logs-*/executor.json"))
    assert logs and '"cpus_per_task": 1' in logs[0].read_text()  # datatrove's RayPipelineExecutor wrote it


def test_apply_operator_on_ray_reads_datatrove_stats(ray_cluster, tmp_path, prose):
    """The run that used to raise TypeError reading the Ray executor's stats."""
    from dagster_llmdata import apply_operator
    from dagster_llmdata.config import ExecutorConfig

    rows = [{"id": f"d{i}", "text": prose[i % 40] + f" {i}"} for i in range(2000)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    on_ray = apply_operator("gopher_quality", tmp_path / "in.jsonl", tmp_path / "ray.parquet", {},
                            executor=ExecutorConfig(kind="ray", address=ray_cluster, tasks=2, workers=2, memory_per_task_gb=0.5))
    local = apply_operator("gopher_quality", tmp_path / "in.jsonl", tmp_path / "local.parquet", {},
                           executor=ExecutorConfig(kind="local", tasks=2, workers=2))
    assert on_ray.ledger == local.ledger and on_ray.ledger.balanced and on_ray.ledger.n_in == 2000
    assert sorted(pq.read_table(tmp_path / "ray.parquet").column("id").to_pylist()) == \
        sorted(pq.read_table(tmp_path / "local.parquet").column("id").to_pylist())


class KillWorkerOnce(DocFunction):
    """Kills the Ray worker running it (the actor and its pool process, as when a node is lost)
    at its 5th document, once: a marker file says it already happened."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def __call__(self, doc):
        self.seen += 1
        marker = Path(os.environ.get(KILL_MARKER_ENV, "/nonexistent/marker"))
        if self.seen == 5 and marker.parent.is_dir() and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        return True


class KillRayWorker(Operator):
    name = "kill_ray_worker_test"
    description = "test-only pass-through stage that kills its Ray worker once"

    def doc_fn(self) -> DocFunction:
        return KillWorkerOnce()


def test_a_worker_killed_mid_task_is_retried_and_the_result_is_complete(ray_cluster, tmp_path, prose, monkeypatch):
    from dagster_llmdata import apply_operator
    from dagster_llmdata.config import ExecutorConfig

    register_operator(KillRayWorker)
    marker = tmp_path / "killed" / "marker"
    marker.parent.mkdir()
    monkeypatch.setenv(KILL_MARKER_ENV, str(marker))
    rows = [{"id": f"d{i}", "text": prose[i % 40]} for i in range(400)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    # the workers read the marker's path from the environment the cluster was started with, so
    # hand it over through the runtime_env
    executor = ExecutorConfig(kind="ray", address=ray_cluster, tasks=2, workers=2, memory_per_task_gb=0.5,
                              runtime_env={"env_vars": {KILL_MARKER_ENV: str(marker)}})
    outcome = apply_operator("kill_ray_worker_test", tmp_path / "in.jsonl", tmp_path / "out.parquet", {}, executor=executor)
    assert marker.exists(), "the worker was never killed"
    assert outcome.ledger.balanced and outcome.ledger.n_out == 400
    ids = pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in rows)  # none lost, none twice


class SlowDoc(DocFunction):
    def __call__(self, doc):
        import time

        time.sleep(0.5)
        return True


class SlowOperator(Operator):
    name = "slow_ray_test"
    description = "test-only pass-through stage that takes half a second a document"

    def doc_fn(self) -> DocFunction:
        return SlowDoc()


def test_a_task_past_its_timeout_fails_the_stage_naming_it(ray_cluster, tmp_path, prose):
    """datatrove kills a task past `time` and only logs it; the stage must fail, not record a partial dataset."""
    from dagster_llmdata import apply_operator
    from dagster_llmdata.errors import StageFailed
    from dagster_llmdata.config import ExecutorConfig

    register_operator(SlowOperator)
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": prose[i]} for i in range(40)])
    executor = ExecutorConfig(kind="ray", address=ray_cluster, tasks=1, workers=1, memory_per_task_gb=0.5, task_timeout_s=2)
    with pytest.raises(StageFailed, match=r"1 of 1 Ray tasks did not complete \(ranks \[0\]\).*logs"):
        apply_operator("slow_ray_test", tmp_path / "in.jsonl", tmp_path / "out.parquet", {}, executor=executor)
