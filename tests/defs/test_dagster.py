"""The spec -> Dagster assets factory, materialised for real with dagster.materialize."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from dagster_llmdata import LEDGER_CHECK, Operator, load_project, register_operator
from dagster_llmdata.operators import REGISTRY

PARTITION = "web/batch1.jsonl"
STAGES = ["raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "redacted", "shards"]


def _assets(project: Path) -> list[dg.AssetsDefinition]:
    return list(load_project(project).assets)


def _materialize(project: Path, instance, partition: str = PARTITION, raise_on_error: bool = True):
    instance.add_dynamic_partitions("tiny_files", [partition])
    return dg.materialize(_assets(project), partition_key=partition, instance=instance, raise_on_error=raise_on_error)


def _materialization(result, stage: str) -> dg.AssetMaterialization:
    (mat,) = [e.materialization for e in result.get_asset_materialization_events()
              if e.materialization.asset_key == dg.AssetKey(["tiny", stage])]
    return mat


def test_definitions_one_asset_per_stage_with_lineage(project):
    defs = load_project(project)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    # the dedup stages also depend on what they compared against (the partitions that landed before)
    compared = {"deduplicated", "near_deduplicated"}
    assert keys == {f"tiny/{s}" for s in STAGES} | {f"tiny/{s}__compared_with" for s in compared}
    for upstream, stage in zip(STAGES, STAGES[1:]):
        node = graph.get(dg.AssetKey(["tiny", stage]))
        extra = {dg.AssetKey(["tiny", f"{stage}__compared_with"])} if stage in compared else set()
        assert node.parent_keys == {dg.AssetKey(["tiny", upstream])} | extra
        assert node.group_name == "tiny"
        assert node.code_version and node.description
        assert "parquet" in node.kinds
        assert dg.AssetCheckKey(node.key, LEDGER_CHECK) in node.check_keys
    defs.resolve_job_def("tiny_job")
    assert [s.name for s in defs.sensors] == ["tiny_landing"]


def test_materialize_whole_graph_records_metadata_and_ledgers(project, instance):
    result = _materialize(project, instance)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(STAGES) and all(c.passed for c in checks)

    raw = _materialization(result, "raw").metadata
    assert raw["dagster/row_count"].value == 15 and raw["n_in"].value == 15
    names = [c.name for c in raw["dagster/column_schema"].schema.columns]
    assert names[:6] == ["id", "text", "source", "domain", "lang", "meta"]

    dedup = _materialization(result, "deduplicated").metadata
    assert dedup["dropped/exact_duplicate"].value == 1
    lineage = dedup["dagster/column_lineage"].column_lineage.deps_by_column
    assert lineage["text"][0].asset_key == dg.AssetKey(["tiny", "normalized"])
    assert lineage["content_hash"][0].column_name == "text"
    assert dedup["sample"].value.records and dedup["runtime_s"].value >= 0 and dedup["docs_per_s"].value > 0

    quality = _materialization(result, "quality_filtered").metadata
    assert quality["dropped/gopher_short_doc"].value >= 1
    redacted = _materialization(result, "redacted").metadata
    assert redacted["pii_email"].value == 1 and redacted["pii_phone"].value == 1

    # rejected docs are kept, with their text, stage and reason
    rejected_dir = project / "data/pipelines/tiny/deduplicated/rejected" / PARTITION
    (row,) = pq.read_table(next(rejected_dir.glob("*.parquet"))).to_pylist()
    assert (row["id"], row["kept_id"], row["reason"], row["stage"]) == ("dup", "d0", "exact_duplicate", "deduplicated")
    assert row["text"]
    shards = list((project / "data/pipelines/tiny/shards/data" / PARTITION).glob("shard-*.parquet"))
    assert shards and "n_tokens" in pq.read_schema(shards[0]).names


def test_rerun_with_nothing_changed_does_no_work(project, instance):
    _materialize(project, instance)
    out = project / "data/pipelines/tiny/near_deduplicated/data" / PARTITION
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = _materialize(project, instance)
    assert all(_materialization(result, s).metadata["llmdata/skipped"].value for s in STAGES)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_spec_change_marks_only_that_stage_and_downstream_stale(project, instance):
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    _materialize(project, instance)
    before = {k: v for a in _assets(project) for k, v in a.code_versions_by_key.items()}
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text().replace("params: {min_doc_words: 50}", "params: {min_doc_words: 40}"))
    assets = _assets(project)
    changed = {k.path[-1] for a in assets for k, v in a.code_versions_by_key.items() if v != before[k]}
    assert changed == {"quality_filtered", "redacted", "shards"}

    def stale() -> set[str]:
        resolver = get_stale_status_resolver(instance, assets)
        return {k.path[-1] for k in before if resolver.get_status(k, PARTITION) == StaleStatus.STALE}

    assert stale() == {"quality_filtered", "redacted", "shards"}
    # re-materialising the stale part does real work (no skip) and leaves nothing stale
    result = dg.materialize(assets, partition_key=PARTITION, instance=instance,
                            selection=dg.AssetSelection.assets(dg.AssetKey(["tiny", "quality_filtered"])).downstream())
    assert "llmdata/skipped" not in _materialization(result, "quality_filtered").metadata
    assert stale() == set()


class LeakyFilter(Operator):
    """Planted violation: loses every other document without recording it anywhere."""

    name = "leaky_filter_test"
    description = "test operator that silently drops docs"

    def doc_fn(self):
        raise AssertionError("run() is overridden")

    def run(self, run):
        import pyarrow.parquet as pq

        table = pq.read_table(run.input_files[0])
        run.output_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(0, table.num_rows // 2), run.output_dir / "part-0.parquet")
        return {}


def test_planted_ledger_violation_fails_the_blocking_check(project, instance):
    register_operator(LeakyFilter)
    try:
        spec = project / "assets/tiny.yaml"
        spec.write_text(spec.read_text().replace("op: normalize", "op: leaky_filter_test"))
        result = _materialize(project, instance, raise_on_error=False)
        evaluations = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
        assert evaluations["raw"].passed
        failed = evaluations["normalized"]
        assert not failed.passed and failed.metadata["unaccounted"].value == 8
        # blocking: nothing downstream of the leak was materialised in that run
        materialised = {e.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events()}
        assert materialised == {"raw", "normalized"}
    finally:
        REGISTRY.pop(LeakyFilter.name)


def test_bad_landing_file_is_quarantined_through_the_graph(project, instance):
    bad = project / "landing/web/broken.jsonl"
    bad.write_bytes(b'{"text": "ok but short"}\n{"broken\n\xff\xfe\n{"id": 1}\n')
    result = _materialize(project, instance, partition="web/broken.jsonl")
    assert result.success
    raw = _materialization(result, "raw").metadata
    assert raw["quarantined/malformed_json"].value == 1
    assert raw["quarantined/undecodable_bytes"].value == 1
    assert raw["quarantined/missing_text_field"].value == 1
    assert all(c.passed for c in result.get_asset_check_evaluations())


@pytest.mark.parametrize("partition,message", [("web/gone.jsonl", "does not exist"), ("nosuch/a.jsonl", "has no source 'nosuch'")])
def test_missing_landing_file_fails_with_a_clear_message(project, instance, partition, message):
    result = _materialize(project, instance, partition=partition, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in failure.event_specific_data.error.message


def test_empty_partition_flows_through(project, instance):
    (project / "landing/web/empty.jsonl").write_text("")
    result = _materialize(project, instance, partition="web/empty.jsonl")
    assert result.success
    assert _materialization(result, "shards").metadata["dagster/row_count"].value == 0


def test_exact_dedup_spans_partitions(project, instance, prose):
    _materialize(project, instance)
    # a second file repeating a doc from the first: dropped, pointing at the kept doc in partition 1
    (project / "landing/web/batch2.jsonl").write_text(
        json.dumps({"id": "again", "text": prose[3]}) + "\n" + json.dumps({"id": "new", "text": prose[20]}) + "\n"
    )
    result = _materialize(project, instance, partition="web/batch2.jsonl")
    md = _materialization(result, "deduplicated").metadata
    assert md["dropped/exact_duplicate"].value == 1 and md["hashes_from_other_partitions"].value > 0
    rejected = project / "data/pipelines/tiny/deduplicated/rejected/web/batch2.jsonl"
    (row,) = pq.read_table(next(rejected.glob("*.parquet"))).to_pylist()
    assert (row["id"], row["kept_id"]) == ("again", "d3")


@pytest.mark.parametrize("tasks,workers", [(2, 2)])
def test_multiple_datatrove_workers(project, instance, tasks, workers):
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text().replace("{kind: local, tasks: 1, workers: 1}", f"{{kind: local, tasks: {tasks}, workers: {workers}}}"))
    result = _materialize(project, instance)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    assert _materialization(result, "deduplicated").metadata["dropped/exact_duplicate"].value == 1


def test_per_document_stages_run_fused_but_stay_separate_assets(project, instance):
    from dagster_llmdata.engine.stages import execution_units
    from dagster_llmdata.spec.pipeline import load_pipeline_spec

    units = execution_units(load_pipeline_spec(project / "assets/tiny.yaml"))
    assert [[s.name for s in u] for u in units] == [
        ["raw"], ["normalized"], ["deduplicated"], ["near_deduplicated"], ["quality_filtered", "redacted"], ["shards"],
    ]
    result = _materialize(project, instance)
    for stage in ("quality_filtered", "redacted"):
        md = _materialization(result, stage).metadata
        assert md["llmdata/fused_with"].value == ["quality_filtered", "redacted"]
    # the second stage of a fused unit can be materialised on its own, from its input on disk
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text().replace("op: pii_redact}", "op: pii_redact, params: {kinds: [email]}}"))
    result = dg.materialize(_assets(project), partition_key=PARTITION, instance=instance,
                            selection=dg.AssetSelection.assets(dg.AssetKey(["tiny", "redacted"])))
    md = _materialization(result, "redacted").metadata
    assert md["pii_email"].value == 1 and md["pii_phone"].value == 0 and md["n_in"].value == md["n_out"].value
    assert "llmdata/skipped" not in md


def test_unfused_executor_gives_the_same_ledgers(project, instance, tmp_path):
    fused = _materialize(project, instance)
    spec = project / "assets/tiny.yaml"
    spec.write_text(spec.read_text().replace("{kind: local, tasks: 1, workers: 1}", "{kind: local, tasks: 1, workers: 1, fuse: false}"))
    shutil.rmtree(project / "data")  # the executor is not part of the code version: force real work
    unfused = _materialize(project, instance)
    for stage in STAGES:
        a, b = _materialization(fused, stage).metadata, _materialization(unfused, stage).metadata
        assert "llmdata/fused_with" not in b and "llmdata/skipped" not in b
        assert (a["n_in"].value, a["n_out"].value) == (b["n_in"].value, b["n_out"].value), stage


def test_metadata_explains_drops_and_shows_the_funnel(project, instance):
    result = _materialize(project, instance)
    quality = _materialization(result, "quality_filtered").metadata
    examples = {r.data["id"]: r.data for r in quality["rejected_examples"].value.records}
    assert examples["short"]["reason"] == "gopher_short_doc"
    assert examples["short"]["why"] == "value 4, threshold 50"  # "Too short to keep." is 4 words
    dedup = _materialization(result, "deduplicated").metadata
    (dup,) = dedup["rejected_examples"].value.records
    assert dup.data["why"] == "kept d0"

    # a pass-through stage fused with a slower one runs at the pace of the pass, not at 1/its share
    redacted = _materialization(result, "redacted").metadata
    assert redacted["docs_per_s"].value <= redacted["n_in"].value / redacted["llmdata/fused_run_s"].value * 1.01 + 1

    # the last stage of each step shows the whole pipeline's funnel over every partition
    funnel = _materialization(result, "shards").metadata["pipeline_funnel"].value
    lines = funnel.splitlines()
    assert lines[4].startswith("| raw | ingest | 1 | 15 | 15 | 0 | 0 |")
    assert any(line.startswith("| deduplicated | exact_dedup | 1 | 15 | 14 | 1 | 0 |") for line in lines)
