"""`llmdata materialize / status / report` as a user runs them: the real command in a subprocess,
over a project with its own Dagster instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance import InstanceRef

from tests.conftest import one_source_project, write_jsonl

LLMDATA = str(Path(sys.executable).parent / "llmdata")


def llmdata(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(project / ".dagster_home")}
    return subprocess.run([LLMDATA, *args, "--project", str(project)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def mini(tmp_path: Path, prose: list[str]) -> Path:
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:6])] + [{"id": "dup", "text": prose[0]}]
    root = one_source_project(tmp_path / "proj", "mini", [{"name": "normalized", "op": "normalize"},
                                                        {"name": "deduplicated", "op": "exact_dedup"}], rows)
    (root / "sensors").mkdir()
    (root / "sensors/fresh.yaml").write_text("sensors:\n  - {type: freshness, pipeline: mini, max_age_hours: 24}\n")
    return root


@pytest.mark.slow  # four CLI processes, each loading Dagster: ~1 min on 2 shared cores
def test_materialize_registers_runs_and_then_has_nothing_to_do(mini, prose):
    out = llmdata(mini, "materialize", "mini")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 new landing entries registered" in out.stderr and "3/3" in out.stderr  # the progress bar reached every stage
    assert "deduplicated" in out.stdout and "exact_duplicate=1" in out.stdout

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(mini / ".dagster_home"))) as instance:
        assert instance.get_dynamic_partitions("mini_files") == ["web/b.jsonl"]
        event = instance.get_latest_materialization_event(dg.AssetKey(["mini", "deduplicated"]))
        assert event is not None and event.dagster_event.partition == "web/b.jsonl"
        assert instance.get_run_records()[0].dagster_run.tags["llmdata/launched_by"] == "llmdata materialize"

    again = llmdata(mini, "materialize", "mini")
    assert again.returncode == 0 and "materialising 0 partitions" in again.stderr

    write_jsonl(mini / "landing" / "c.jsonl", [{"id": "new", "text": prose[10]}])
    third = llmdata(mini, "materialize", "mini", "--stage", "normalized", "--partition", "web/c.jsonl")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "materialising 1 partitions x 2 stages" in third.stderr
    report = json.loads(llmdata(mini, "report", "mini", "--json").stdout)
    by_stage = {r["stage"]: r for r in report["stages"]}
    assert by_stage["normalized"]["partitions"] == 2 and by_stage["deduplicated"]["partitions"] == 1
    assert by_stage["raw"]["n_in"] == 8 and all(r["ledger_balanced"] for r in report["stages"])

    status = llmdata(mini, "status", "--json")
    assert status.returncode == 0, status.stderr
    (pipeline,) = json.loads(status.stdout)["pipelines"]
    assert pipeline["pipeline"] == "mini" and pipeline["file"] == "assets/mini.yaml" and pipeline["ledgers_balanced"]
    assert pipeline["freshness"] == {"configured": True, "max_age_hours": 24.0, "overdue_stages": [], "fresh": True}
    assert pipeline["last_materialised"] and [s["stage"] for s in pipeline["stages"]] == ["raw", "normalized", "deduplicated"]
    text = llmdata(mini, "status").stdout
    assert "last materialised: 20" in text and "ledgers: balanced" in text and "freshness: fresh (max age 24 h)" in text

    removed = llmdata(mini, "remove", "mini", "web/c.jsonl")
    assert removed.returncode == 0, removed.stderr[-3000:]
    assert "removed web/c.jsonl from 2 stage(s) of mini" in removed.stdout
    report = json.loads(llmdata(mini, "report", "mini", "--json").stdout)
    assert {r["stage"]: r["partitions"] for r in report["stages"]} == {"raw": 1, "normalized": 1, "deduplicated": 1}
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(mini / ".dagster_home"))) as instance:
        assert instance.get_dynamic_partitions("mini_files") == ["web/b.jsonl"]


@pytest.mark.parametrize("args, message", [
    (["materialize", "mnii"], "no pipeline 'mnii' (did you mean 'mini'?); known: mini"),
    (["materialize", "mini", "--stage", "dedup"], "pipeline 'mini' has no stage 'dedup'"),
    (["materialize", "mini", "--partition", "web/zzz.jsonl"], "no partition 'web/zzz.jsonl' in the landing folders of 'mini'"),
    (["report", "nope"], "no pipeline 'nope'"),
    (["remove", "mini", "web/zzz.jsonl"], "pipeline 'mini' has no partition 'web/zzz.jsonl'"),
])
def test_errors_are_one_clear_line(mini, args, message):
    out = llmdata(mini, *args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


def test_status_reports_broken_specs_overdue_pipelines_and_a_non_project(mini, tmp_path):
    (mini / "assets/broken.yaml").write_text("pipeline: broken\nsources: []\nstages: []\n")
    (mini / "sensors/fresh.yaml").write_text("sensors:\n  - {type: freshness, pipeline: mini, max_age_hours: 1}\n")
    out = llmdata(mini, "status", "--json")
    assert out.returncode == 1 and "broken spec: " in out.stderr and "broken.yaml" in out.stderr
    doc = json.loads(out.stdout)
    assert [p["pipeline"] for p in doc["pipelines"]] == ["mini"] and "broken.yaml" in doc["problems"][0]
    assert doc["pipelines"][0]["freshness"]["fresh"] is False  # never materialised
    assert doc["pipelines"][0]["last_materialised"] is None
    assert "freshness: OVERDUE" in llmdata(mini, "status").stdout
    report = llmdata(mini, "report", "broken")
    assert report.returncode == 2 and "pipeline 'broken' does not load" in report.stderr

    nowhere = llmdata(tmp_path, "status")
    assert nowhere.returncode == 2 and "is not an llmdata project" in nowhere.stderr
