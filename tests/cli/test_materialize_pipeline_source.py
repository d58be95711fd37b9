"""`llmdata materialize DOWNSTREAM` for a pipeline whose source is another pipeline's stage, as a
user runs it (the real command in a subprocess, the project's own Dagster instance): it does not run
the upstream pipeline itself; while the upstream has nothing materialised, or the partition named is
not materialised upstream, it says which command to run; once it is, the downstream output holds
exactly the upstream's kept documents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dagster_llmdata.io.parquet_store import list_parquet

from ..conftest import write_jsonl
from ..two_pipelines import PARTITION, two_pipelines

LLMDATA = str(Path(sys.executable).parent / "llmdata")
LATER = "crawl/batch2.jsonl"


def llmdata(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(project / ".dagster_home")}
    return subprocess.run([LLMDATA, *args, "--project", str(project)], check=False, capture_output=True, text=True, env=env, timeout=300)


def _ids(folder: Path) -> set[str]:
    return {i for f in list_parquet(folder) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}


@pytest.mark.slow  # five CLI processes, each loading Dagster
def test_materialize_a_pipeline_reading_another_says_what_to_run_then_reads_its_kept_docs(tmp_path, prose):
    root = two_pipelines(tmp_path, prose)
    (root / ".dagster_home").mkdir()

    early = llmdata(root, "materialize", "curated")
    assert early.returncode == 2 and "Traceback" not in early.stderr
    assert ("pipeline 'curated' reads web/quality_filtered, which has no materialised partition yet: "
            "run `llmdata materialize web` first") in early.stderr
    assert not (root / "data/curated").exists()  # nothing ran downstream, and web was not run behind the user's back
    assert not (root / "data/pipelines").exists()

    web = llmdata(root, "materialize", "web")
    assert web.returncode == 0, web.stderr[-3000:]
    # a second file lands; web materialises only its first stage for it, so curated cannot read it yet
    write_jsonl(root / "landing/crawl/batch2.jsonl", [{"id": f"later{i}", "text": t} for i, t in enumerate(prose[10:14])])
    raw_only = llmdata(root, "materialize", "web", "--stage", "raw")
    assert raw_only.returncode == 0, raw_only.stderr[-3000:]

    named = llmdata(root, "materialize", "curated", "--partition", LATER)
    assert named.returncode == 2 and "Traceback" not in named.stderr
    assert (f"curated[{LATER}]: upstream web/quality_filtered has not materialised partition '{LATER}' yet; "
            f"run `llmdata materialize web --partition {LATER}` first") in named.stderr

    out = llmdata(root, "materialize", "curated")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"curated: reads web/quality_filtered, materialised for 1 of 2 partitions (not yet: {LATER}); "
            "materialising 1 partitions x 2 stages") in out.stderr
    assert "from_web" in out.stdout and "redacted" in out.stdout  # the stage table
    kept = _ids(root / "data/pipelines/web/quality_filtered/data" / PARTITION)
    assert kept and "short" not in kept and "mail" in kept  # web's quality filter dropped the short doc
    for stage in ("from_web", "redacted"):
        assert _ids(root / "data/curated/curated" / stage / "data" / PARTITION) == kept
    assert not (root / "data/curated/curated/from_web/data" / LATER).exists()
