"""The landing sensor, the `dagster` CLI and the `llmdata` CLI, each run for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from dagster_llmdata import load_project

BIN = Path(sys.executable).parent


def _evaluate(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("tiny_landing")
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def test_landing_sensor_adds_partition_and_runs_only_new_files(project, instance, prose):
    defs = load_project(project)
    first = _evaluate(defs, instance)
    assert [r.partition_key for r in first.run_requests] == ["web/batch1.jsonl"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["web/batch1.jsonl"]
    instance.add_dynamic_partitions("tiny_files", ["web/batch1.jsonl"])

    # nothing new: no runs
    again = _evaluate(defs, instance, first.cursor)
    assert isinstance(again, dg.SkipReason)

    # a new file: exactly one run, for its partition, through the whole graph
    (project / "landing/web/batch2.jsonl").write_text(json.dumps({"id": "n1", "text": prose[30]}) + "\n")
    second = _evaluate(defs, instance, first.cursor)
    (request,) = second.run_requests
    assert request.partition_key == "web/batch2.jsonl"
    instance.add_dynamic_partitions("tiny_files", second.dynamic_partitions_requests[0].partition_keys)
    job = defs.resolve_job_def("tiny_job")
    result = job.execute_in_process(partition_key=request.partition_key, instance=instance)
    assert result.success
    materialised = {(e.materialization.asset_key.path[-1], e.materialization.partition) for e in result.get_asset_materialization_events()}
    stages = {(key, p) for key, p in materialised if not key.endswith("__compared_with")}
    assert {p for _, p in materialised} == {"web/batch2.jsonl"} and len(stages) == 7
    assert not (project / "data/pipelines/tiny/raw/data/web/batch1.jsonl").exists()

    # a rewritten file is picked up again
    os.utime(project / "landing/web/batch2.jsonl", ns=(1, 1))
    third = _evaluate(defs, instance, second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["web/batch2.jsonl"]
    assert not third.dynamic_partitions_requests


def _env(project: Path) -> dict:
    home = project / "dagster_home_cli"
    home.mkdir(exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(home), "LLMDATA_PROJECT": str(project)}


def test_definitions_validate_and_materialize_through_dagster_cli(project):
    env = _env(project)
    ws = Path(__file__).parents[2] / "workspace.yaml"
    res = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", str(ws)], env=env, capture_output=True, text=True, cwd=project)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Validation successful for code location llmdata" in res.stdout + res.stderr

    add = "import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions('tiny_files', ['web/batch1.jsonl'])"
    subprocess.run([sys.executable, "-c", add], env=env, check=True)
    res = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "dagster_llmdata.location", "--select", "tiny/raw*", "--partition", "web/batch1.jsonl"],
        env=env, capture_output=True, text=True, cwd=project,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "RUN_SUCCESS" in res.stdout + res.stderr
    shards = list((project / "data/pipelines/tiny/shards/data/web/batch1.jsonl").glob("shard-*.parquet"))
    assert shards and sum(pq.read_metadata(s).num_rows for s in shards) > 0


def test_llmdata_op_cli_keeps_every_column(tmp_path, prose):
    src = tmp_path / "in.jsonl"
    rows = [{"text": prose[1], "url": "http://a", "score": 1.5}, {"text": "junk | junk | junk", "url": "http://b", "score": 0.1}]
    src.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out.parquet"
    res = subprocess.run([str(BIN / "llmdata"), "op", "gopher_quality", "--in", str(src), "--out", str(out), "--param", "min_doc_words=20"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["n_in"] == 2 and summary["kept"] == 1 and summary["balanced"]
    kept = pq.read_table(out).to_pylist()
    rejected = pq.read_table(tmp_path / "out.rejected.parquet").to_pylist()
    assert kept[0]["url"] == "http://a" and kept[0]["score"] == 1.5 and kept[0]["id"]
    assert rejected[0]["url"] == "http://b" and rejected[0]["text"] == "junk | junk | junk"
    assert rejected[0]["stage"] == "gopher_quality" and rejected[0]["reason"] == "gopher_short_doc"

    # Parquet in, produced columns out on both sides
    res = subprocess.run([str(BIN / "llmdata"), "op", "language_id", "--in", str(out), "--out", str(tmp_path / "l.parquet"),
                          "--param", "languages=[fr]"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    (row,) = pq.read_table(tmp_path / "l.rejected.parquet").to_pylist()
    assert row["lang"] == "en" and row["lang_score"] > 0.5 and row["url"] == "http://a"


def test_llmdata_ops_lists_registry():
    res = subprocess.run([str(BIN / "llmdata"), "ops", "--json"], capture_output=True, text=True, check=True)
    described = json.loads(res.stdout)  # one JSON document
    assert {"minhash_dedup", "export_shards"} <= {d["name"] for d in described}
    assert all("params" in d and "description" in d for d in described)


def test_odd_landing_names(project, instance, prose):
    from dagster_llmdata.io.layout import partition_folder
    from dagster_llmdata.spec.project import load_pipeline_specs
    from dagster_llmdata.defs.landing_sensor import landing_entries

    (project / "landing/web/my batch (1).jsonl").write_text(json.dumps({"text": prose[5]}) + "\n")
    (project / "landing/web/bad...name.jsonl").write_text(json.dumps({"text": prose[6]}) + "\n")
    (project / "landing/web/.hidden.jsonl").write_text("{}\n")
    (project / "landing/web/upload.jsonl.part").write_text("{}\n")
    (spec,) = load_pipeline_specs(project)
    unusable: list[str] = []
    assert sorted(landing_entries(spec, project, unusable)) == ["web/batch1.jsonl", "web/my batch (1).jsonl"]
    assert unusable == [str(project / "landing/web/bad...name.jsonl")]

    folder = partition_folder("web/my batch (1).jsonl")
    assert folder.startswith("web/my_batch__1_.jsonl-") and folder != partition_folder("web/my_batch__1_.jsonl")
    assert ".." not in partition_folder("web/../../etc")

    instance.add_dynamic_partitions("tiny_files", ["web/my batch (1).jsonl"])
    result = load_project(project).resolve_job_def("tiny_job").execute_in_process(partition_key="web/my batch (1).jsonl", instance=instance)
    assert result.success
    assert (project / "data/pipelines/tiny/raw/data" / folder / "_ledger.json").exists()


def test_rejected_with_an_unknown_stage_lists_the_stages(project):
    res = subprocess.run([str(BIN / "llmdata"), "rejected", "quality_filterd", "--project", str(project)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "did you mean 'quality_filtered'" in res.stderr and "there: tiny/raw, tiny/normalized, tiny/deduplicated" in res.stderr
