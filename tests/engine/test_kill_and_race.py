"""Crash safety and concurrency of partition materialisation, with real processes: a pipeline
killed with SIGKILL (its whole process group) mid-run re-runs to exactly the output of an
uninterrupted run, and two runs of one partition at once serialise on a lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dagster_llmdata.errors import PartitionLocked
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.operators import Operator, register_operator
from dagster_llmdata.operators.base import DocFunction

PARTITION = "web/batch1.jsonl"
REPO = Path(__file__).parents[2]
KILL_AT_DOC = "LLMDATA_TEST_KILL_AT_DOC"  # the kill switch stage kills its process group at this doc
KILL_AFTER_S = "LLMDATA_TEST_KILL_AFTER_S"  # the driver kills its process group after this many seconds


class KillAtDoc(DocFunction):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def __call__(self, doc):
        self.seen += 1
        if self.seen == self.at:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        return True


class KillSwitch(Operator):
    """Test-only pass-through stage, fused between two real stages: SIGKILL mid fused pass."""

    name = "kill_switch_test"
    description = "passes every doc; kills its process group at doc $LLMDATA_TEST_KILL_AT_DOC"

    def doc_fn(self) -> DocFunction:
        return KillAtDoc(int(os.environ.get(KILL_AT_DOC, "0")))


def with_kill_switch(project: Path) -> list[str]:
    """The tiny pipeline with a kill switch fused between quality_filtered and redacted."""
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text().replace("  - {name: redacted", "  - {name: checkpoint, op: kill_switch_test}\n  - {name: redacted"))
    return ["raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "checkpoint", "redacted", "shards"]


def drive(project: str) -> None:
    """Materialise every unit of the project's pipeline for PARTITION, as Dagster would in order;
    prints one JSON line per stage, [stage, skipped], then {"seconds": time since the imports}."""
    from dagster_llmdata.engine.stages import execution_units, resolve_stages
    from dagster_llmdata.io.layout import PipelineLayout
    from dagster_llmdata.engine.materialise import PipelineContext, materialise_chain
    from dagster_llmdata.spec.pipeline import load_pipeline_spec

    start = time.perf_counter()
    register_operator(KillSwitch)
    if os.environ.get(KILL_AFTER_S):
        timer = threading.Timer(float(os.environ[KILL_AFTER_S]), os.killpg, (os.getpgrp(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
    root = Path(project)
    spec = load_pipeline_spec(root / "assets/tiny.yaml")
    ctx = PipelineContext(spec, root, PipelineLayout((root / spec.storage).resolve(), spec.pipeline), resolve_stages(spec))
    for unit in execution_units(spec):
        for report in materialise_chain(ctx, unit, PARTITION, fuse=spec.executor.fuse):
            print(json.dumps([report.stage, report.skipped]), flush=True)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def start_driver(project: Path, **env: str) -> subprocess.Popen:
    code = f"from tests.engine.test_kill_and_race import drive; drive({str(project)!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_driver(project: Path, **env: str) -> tuple[int, list[tuple[str, bool]], str]:
    proc = start_driver(project, **env)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, stage_reports(out), err


def stage_reports(out: str) -> list[tuple[str, bool]]:
    return [tuple(line) for line in map(json.loads, out.splitlines()) if isinstance(line, list)]


def ids_per_stage(project: Path, stages: list[str]) -> dict[str, dict[str, list[str]]]:
    """Sorted ids in each stage's kept / rejected / quarantined dataset for PARTITION, plus its ledger."""
    base = project / "data/pipelines/tiny"
    out = {}
    for stage in stages:
        got = {}
        for kind in ("data", "rejected", "quarantine"):
            files = list_parquet(base / stage / kind / PARTITION)
            got[kind] = sorted(i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())
        got["ledger"] = json.loads((base / stage / "data" / PARTITION / "_ledger.json").read_text())["ledger"]
        out[stage] = got
    return out


@pytest.fixture()
def killable(project: Path, tmp_path_factory) -> tuple[Path, Path, list[str], float]:
    """The project with a kill switch, and an uninterrupted run of an identical copy of it (and
    its wall time)."""
    stages = with_kill_switch(project)
    baseline = tmp_path_factory.mktemp("baseline") / "project"
    shutil.copytree(project, baseline)
    proc = start_driver(baseline)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    reports = stage_reports(out)
    assert [s for s, _ in reports] == stages and not any(skipped for _, skipped in reports)
    return project, baseline, stages, json.loads(out.splitlines()[-1])["seconds"]


def test_sigkill_mid_fused_pass_then_rerun_matches_uninterrupted(killable):
    project, baseline, stages, _ = killable
    expected = ids_per_stage(baseline, stages)
    assert len(expected["raw"]["data"]) == 15 and expected["deduplicated"]["rejected"] == ["dup"]
    assert expected["quality_filtered"]["rejected"] == ["d0", "d3", "short"]

    # killed at doc 3 of the fused quality_filtered -> checkpoint -> redacted pass: writers hold open parts
    rc, reports, err = run_driver(project, **{KILL_AT_DOC: "3"})
    assert rc == -signal.SIGKILL, err[-3000:]
    assert [s for s, _ in reports] == ["raw", "normalized", "deduplicated", "near_deduplicated"]
    killed = project / "data/pipelines/tiny/quality_filtered/data" / PARTITION
    assert not (killed / "_ledger.json").exists()
    assert [p.name for p in killed.rglob("*.parquet")] and list_parquet(killed) == []  # only in-progress parts

    rc, reports, err = run_driver(project)
    assert rc == 0, err[-3000:]
    assert reports == [(s, s in ("raw", "normalized", "deduplicated", "near_deduplicated")) for s in stages]
    assert ids_per_stage(project, stages) == expected


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_sigkill_at_any_time_then_rerun_matches_uninterrupted(killable, fraction):
    project, baseline, stages, seconds = killable
    # a fraction of the uninterrupted run's wall time lands the kill in a different stage each time
    killed_in = kill_during_run(project, seconds * fraction)
    assert len(killed_in) < len(stages)
    rc, _, err = run_driver(project)
    assert rc == 0, err[-3000:]
    assert ids_per_stage(project, stages) == ids_per_stage(baseline, stages)


def kill_during_run(project: Path, seconds: float) -> list[tuple[str, bool]]:
    """Runs the pipeline with a kill timer; on a busy machine the run can be quicker than the
    baseline was, so while it beats the timer, start over with half the delay."""
    for _ in range(4):
        rc, reports, err = run_driver(project, **{KILL_AFTER_S: f"{seconds:.2f}"})
        if rc == -signal.SIGKILL:
            return reports
        assert rc == 0, err[-3000:]
        shutil.rmtree(project / "data")
        seconds /= 2
    pytest.fail("every run finished before its kill timer")


def test_two_runs_of_one_partition_at_once_do_the_work_once(killable):
    project, baseline, stages, _ = killable
    first, second = start_driver(project), start_driver(project)
    outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outputs[0][1][-2000:] + outputs[1][1][-2000:]
    runs = [stage_reports(out) for out, _ in outputs]
    for stage, (a, b) in zip(stages, zip(*runs)):
        assert a[0] == b[0] == stage
        assert {a[1], b[1]} == {True, False}, f"{stage}: exactly one run did it, the other waited and skipped"
    assert ids_per_stage(project, stages) == ids_per_stage(baseline, stages)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from dagster_llmdata.io.layout import PipelineLayout
from dagster_llmdata.engine.materialise import partition_lock
with partition_lock(PipelineLayout(Path(sys.argv[1]), "tiny"), ["raw"], sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_wait_times_out_naming_the_holder_and_a_dead_holder_frees_it(project, monkeypatch):
    from dagster_llmdata.engine.stages import resolve_stages
    from dagster_llmdata.io.layout import PipelineLayout
    from dagster_llmdata.engine.materialise import PipelineContext, materialise_chain
    from dagster_llmdata.spec.pipeline import load_pipeline_spec

    spec = load_pipeline_spec(project / "assets/tiny.yaml")
    layout = PipelineLayout((project / spec.storage).resolve(), spec.pipeline)
    ctx = PipelineContext(spec, project, layout, resolve_stages(spec))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(layout.storage), PARTITION], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setenv("LLMDATA_LOCK_TIMEOUT_S", "0.5")
        start = time.monotonic()
        with pytest.raises(PartitionLocked, match=rf"raw\[web/batch1.jsonl\] is being materialised by another process \(pid {holder.pid}\)"):
            materialise_chain(ctx, [spec.stage("raw")], PARTITION)
        assert 0.5 <= time.monotonic() - start < 5
        assert not (layout.data_dir("raw", PARTITION)).exists()  # nothing was touched while locked
    finally:
        holder.kill()  # SIGKILL: the OS drops its lock
        holder.wait()
    (report,) = materialise_chain(ctx, [spec.stage("raw")], PARTITION)
    assert not report.skipped and report.ledger.n_in == 15 and report.ledger.n_out == 15


TINY_STAGES = ["raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "redacted", "shards"]


def _dagster_run(project: Path) -> subprocess.Popen:
    """A real Dagster run of every stage for PARTITION, as deployed: `dagster asset materialize`
    (the run process, a subprocess per step) against the project's own instance."""
    home = project / "dagster_home_run"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDATA_PROJECT": str(project)}
    add = f"import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions('tiny_files', [{PARTITION!r}])"
    subprocess.run([sys.executable, "-c", add], env=env, check=True, cwd=project)
    dagster = Path(sys.executable).parent / "dagster"
    return subprocess.Popen([str(dagster), "asset", "materialize", "-m", "dagster_llmdata.location", "--select", "tiny/raw*",
                             "--partition", PARTITION], env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


@pytest.mark.slow
def test_sigkill_of_a_dagster_run_mid_stage_then_rerun_matches_uninterrupted(project, tmp_path_factory):
    baseline = tmp_path_factory.mktemp("dagster-baseline") / "project"
    shutil.copytree(project, baseline)
    proc = _dagster_run(baseline)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    expected = ids_per_stage(baseline, TINY_STAGES)

    # killed (run process and step subprocesses, the whole group) while MinHash is at work
    proc = _dagster_run(project)
    minhash = project / "data/pipelines/tiny/near_deduplicated"
    deadline = time.time() + 600
    while not (minhash / "work" / PARTITION).exists():
        assert proc.poll() is None, "the run ended before MinHash started"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (minhash / "data" / PARTITION / "_ledger.json").exists()
    assert (project / "data/pipelines/tiny/deduplicated/data" / PARTITION / "_ledger.json").exists()

    proc = _dagster_run(project)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert ids_per_stage(project, TINY_STAGES) == expected
