"""The run queue holds a burst back: three files land at once, the real `dagster-daemon` (landing
sensor + QueuedRunCoordinator) with `max_concurrent_runs: 1` starts them one at a time, and every
run still completes."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest

from tests.processes import BIN, dagster_home, process_group, wait_for

pytestmark = pytest.mark.slow  # a daemon and three run processes: ~2 min on 2 cores

QUEUE = """
concurrency:
  runs:
    max_concurrent_runs: 1
"""


def test_a_burst_of_landed_files_runs_one_at_a_time(project, prose, tmp_path):
    (project / "sensors/landing.yaml").write_text("sensors:\n  - {type: landing, pipeline: tiny, minimum_interval_seconds: 1}\n")
    for n in (2, 3):
        rows = [{"id": f"f{n}-{i}", "text": t} for i, t in enumerate(prose[10 * n: 10 * n + 5])]
        (project / f"landing/web/batch{n}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    home = dagster_home(tmp_path / "home", QUEUE)
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDATA_PROJECT": str(project)}
    most_at_once = 0
    with process_group([str(BIN / "dagster-daemon"), "run", "-m", "dagster_llmdata.location"], tmp_path / "daemon.log",
                       cwd=project, env=env), dg.DagsterInstance.from_config(str(home)) as instance:
        def all_done():
            nonlocal most_at_once
            runs = instance.get_runs()
            started = [r for r in runs if r.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)]
            most_at_once = max(most_at_once, len(started))
            failed = [r.run_id for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            assert not failed, f"runs failed: {failed}; see {tmp_path / 'daemon.log'}"
            return len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

        wait_for(all_done, 420, "three runs to succeed", every=0.5)
        records = instance.get_run_records()
    assert most_at_once == 1
    # from the run records: no two runs' [start, end] intervals overlap
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert all(end <= nxt_start for (_, end), (nxt_start, _) in zip(spans, spans[1:])), spans
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == [f"web/batch{n}.jsonl" for n in (1, 2, 3)]
