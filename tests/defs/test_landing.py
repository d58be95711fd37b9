"""The landing folder: what becomes a partition, when, and what a run reads from it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from dagster_llmdata import load_project
from dagster_llmdata.defs.landing_sensor import landing_cursor, landing_entries, scan_landing
from dagster_llmdata.spec.triggers import LandingSensorSpec
from dagster_llmdata.spec.pipeline import load_pipeline_spec

PARTITION = "web/batch1.jsonl"


def _spec(project: Path):
    return load_pipeline_spec(project / "assets/tiny.yaml")


def _evaluate(project: Path, instance, cursor: str | None = None):
    defs = load_project(project)
    sensor = defs.resolve_sensor_def("tiny_landing")
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def _age(path: Path, seconds: float) -> None:
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


def test_lines_appended_while_a_run_reads_are_processed_by_the_next_run(project, monkeypatch, prose):
    from dagster_llmdata.engine import materialise
    from dagster_llmdata.engine.stages import resolve_stages
    from dagster_llmdata.io.layout import PipelineLayout

    spec = _spec(project)
    layout = PipelineLayout((project / spec.storage).resolve(), spec.pipeline)
    ctx = materialise.PipelineContext(spec, project, layout, resolve_stages(spec))
    landing = project / "landing/web/batch1.jsonl"
    appended = [{"id": "late1", "text": prose[20]}, {"id": "late2", "text": prose[21]}]
    real_run_stage = materialise.run_stage

    def run_then_append(op, run):  # the uploader appends after the stage read, before it is recorded
        outcome = real_run_stage(op, run)
        with open(landing, "a") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in appended)
        return outcome

    monkeypatch.setattr(materialise, "run_stage", run_then_append)
    (first,) = materialise.materialise_chain(ctx, [spec.stage("raw")], PARTITION)
    assert not first.skipped and first.ledger.n_in == first.ledger.n_out == 15
    monkeypatch.undo()

    (second,) = materialise.materialise_chain(ctx, [spec.stage("raw")], PARTITION)
    assert not second.skipped and second.ledger.n_in == second.ledger.n_out == 17
    ids = pq.read_table(layout.data_dir("raw", PARTITION), columns=["id"]).column("id").to_pylist()
    assert {"late1", "late2"} <= set(ids) and len(ids) == 17
    (third,) = materialise.materialise_chain(ctx, [spec.stage("raw")], PARTITION)
    assert third.skipped and third.ledger.n_out == 17


def test_sensor_waits_until_an_entry_has_settled(project, instance, prose):
    (project / "sensors/landing.yaml").write_text("sensors:\n  - {type: landing, pipeline: tiny, settle_seconds: 5}\n")
    landing = project / "landing/web"
    (landing / "batch2.jsonl").write_text(json.dumps({"id": "n1", "text": prose[30]}) + "\n")
    _age(landing / "batch2.jsonl", 60)

    # batch1 was just written: only the settled batch2 is requested, batch1 stays out of the cursor
    first = _evaluate(project, instance)
    assert [r.partition_key for r in first.run_requests] == ["web/batch2.jsonl"]
    assert list(json.loads(first.cursor)) == ["web/batch2.jsonl"]

    again = _evaluate(project, instance, first.cursor)
    assert isinstance(again, dg.SkipReason)
    assert again.skip_message == "waiting for web/batch1.jsonl to stay unchanged for 5s"

    _age(landing / "batch1.jsonl", 6)
    settled = _evaluate(project, instance, first.cursor)
    assert [r.partition_key for r in settled.run_requests] == ["web/batch1.jsonl"]
    assert sorted(json.loads(settled.cursor)) == ["web/batch1.jsonl", "web/batch2.jsonl"]

    # a folder entry counts as changed when a file lands in it, even an empty one
    (landing / "pages").mkdir()
    (landing / "pages" / "a.txt").write_text("")
    waiting = _evaluate(project, instance, settled.cursor)
    assert waiting.skip_message == "waiting for web/pages to stay unchanged for 5s"


def test_landing_hygiene_is_reported(project, instance, capfd):
    landing = project / "landing/web"
    (landing / "loop.jsonl").symlink_to(landing / "loop.jsonl")
    (landing / "gone.jsonl").symlink_to(project / "nowhere.jsonl")
    (landing / "linked.jsonl").symlink_to(landing / "batch1.jsonl")
    for name in ("_SUCCESS", ".upload.jsonl", "big.jsonl.part", "big.jsonl.tmp"):
        (landing / name).write_text("{}\n")
    (landing / "bad...name.jsonl").write_text("{}\n")

    scan = scan_landing(_spec(project), project)
    assert sorted(scan.entries) == ["web/batch1.jsonl", "web/linked.jsonl"]
    assert scan.entries["web/linked.jsonl"] == scan.entries["web/batch1.jsonl"]
    assert scan.unusable == {
        str(landing / "bad...name.jsonl"): "its name cannot be a Dagster partition key ('...' or a control character); rename it to process it",
        str(landing / "gone.jsonl"): f"dangling symlink (to {project / 'nowhere.jsonl'})",
        str(landing / "loop.jsonl"): "symlink loop",
    }
    assert scan.skipped == {
        str(landing / ".upload.jsonl"): "hidden name (starts with '.')",
        str(landing / "_SUCCESS"): "marker name (starts with '_', like _SUCCESS or _temporary)",
        str(landing / "big.jsonl.part"): "still being written (ends with .tmp or .part)",
        str(landing / "big.jsonl.tmp"): "still being written (ends with .tmp or .part)",
    }
    unusable: list[str] = []
    assert landing_entries(_spec(project), project, unusable) == scan.entries
    assert unusable == list(scan.unusable)

    capfd.readouterr()
    result = _evaluate(project, instance)
    assert [r.partition_key for r in result.run_requests] == ["web/batch1.jsonl", "web/linked.jsonl"]
    log = capfd.readouterr().err.splitlines()  # Dagster's sensor log goes to stderr
    warnings = [line.split(" - WARNING - ", 1)[1] for line in log if " - WARNING - " in line]
    assert warnings == [f"landing entry {path!r} is not processed: {why}" for path, why in scan.unusable.items()]
    (skipped,) = [line.split(" - INFO - ", 1)[1] for line in log if "skipped landing entries" in line]
    assert skipped == "skipped landing entries: " + "; ".join(f"{path!r} ({why})" for path, why in scan.skipped.items())

def test_landing_cursor_is_what_the_sensor_writes(project, instance):
    spec = _spec(project)
    first = _evaluate(project, instance)
    assert first.cursor == landing_cursor(spec, project)
    assert isinstance(_evaluate(project, instance, landing_cursor(spec, project)), dg.SkipReason)
    # the format the sensor has always written: {partition key: "<bytes>-<newest mtime ns>"}
    st = (project / "landing/web/batch1.jsonl").stat()
    assert json.loads(first.cursor) == {PARTITION: f"{st.st_size}-{st.st_mtime_ns}"}


def test_landing_sensor_spec_fields_are_described_and_bounded():
    for name, info in LandingSensorSpec.model_fields.items():
        assert info.description, name
    assert LandingSensorSpec(pipeline="tiny").settle_seconds == 0
    for bad in ({"settle_seconds": -1}, {"minimum_interval_seconds": 0}, {"name": "has space"}, {"pipeline": ""}):
        with pytest.raises(ValidationError):
            LandingSensorSpec.model_validate({"pipeline": "tiny", **bad})


def test_rejected_report_with_a_partition_folder_named_like_a_parquet_file(project):
    from dagster_llmdata.engine.report import rejected_examples

    rejected = project / "data/pipelines/tiny/deduplicated/rejected/web"
    rows = {"id": ["dup", "dup2"], "reason": ["exact_duplicate"] * 2, "kept_id": ["d0", "d1"], "text": ["first copy", "second copy"]}
    # landing files named *.parquet give partition folders named *.parquet
    (rejected / "x.parquet" / ".in-progress").mkdir(parents=True)
    pq.write_table(pa.table(rows), rejected / "x.parquet" / "000_part-00000.parquet")
    (rejected / "x.parquet" / ".in-progress" / "000_part-00001.parquet").write_bytes(b"PAR1")  # a killed writer's leftover
    (rejected / "empty.parquet").mkdir()

    assert rejected_examples(_spec(project), project, "deduplicated").splitlines() == [
        f"tiny/deduplicated: 2 rejected docs in {project.resolve() / 'data/pipelines/tiny/deduplicated/rejected'}",
        "",
        "exact_duplicate: 2",
        "  dup (kept d0): first copy",
        "  dup2 (kept d1): second copy",
    ]


def test_sensor_does_not_rerun_what_is_already_materialised(project, instance, prose):
    """`make demo` (or the CLI, or a backfill) materialised a partition before the sensor ever ran:
    its first tick gives it a place in the cursor instead of a run; a later change is requested."""
    defs = load_project(project)
    instance.add_dynamic_partitions("tiny_files", ["web/batch1.jsonl"])
    assert defs.resolve_job_def("tiny_job").execute_in_process(partition_key="web/batch1.jsonl", instance=instance).success
    (project / "landing/web/batch2.jsonl").write_text(json.dumps({"text": prose[20]}) + "\n")

    result = _evaluate(project, instance)
    assert [r.partition_key for r in result.run_requests] == ["web/batch2.jsonl"]
    assert set(json.loads(result.cursor)) == {"web/batch1.jsonl", "web/batch2.jsonl"}

    with open(project / "landing/web/batch1.jsonl", "a") as fh:
        fh.write(json.dumps({"text": prose[21]}) + "\n")
    result = _evaluate(project, instance, result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["web/batch1.jsonl"]
