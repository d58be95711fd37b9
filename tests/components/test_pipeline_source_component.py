"""A PipelineComponent whose `source:` names another PipelineComponent's stage, in a dg project
described by its defs folder alone (no assets/): the downstream group's first stage depends on the
upstream stage across the two groups, shares its partitions, and materialises from its kept docs."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from dagster_llmdata.io.parquet_store import list_parquet

from ..two_pipelines import CURATED_YAML, PARTITION, WEB_YAML, two_pipelines
from .test_components import dg_project, error_chain, load_defs, summary

UPSTREAM = dg.AssetKey(["web", "quality_filtered"])
FIRST = dg.AssetKey(["curated", "from_web"])


def _component(spec_yaml: str, **extra) -> dict:
    return {"type": "dagster_llmdata.PipelineComponent", "attributes": yaml.safe_load(spec_yaml) | extra}


def _ids(folder) -> set[str]:
    return {i for f in list_parquet(folder) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}


def _project(tmp_path, prose, module: str, curated: dict):
    root = two_pipelines(tmp_path / "proj", prose)
    for spec in (root / "assets").iterdir():  # the defs folder alone describes the project
        spec.unlink()
    return dg_project(root, module, {"web": [_component(WEB_YAML)], "curated": [curated]})


def test_a_component_reading_another_components_stage(tmp_path, monkeypatch, prose):
    root = _project(tmp_path, prose, "srcproj", _component(CURATED_YAML))

    defs = load_defs(root, monkeypatch)
    graph = defs.resolve_asset_graph()
    first = graph.get(FIRST)
    assert (first.group_name, graph.get(UPSTREAM).group_name) == ("curated", "web")
    assert first.parent_keys == {UPSTREAM}
    (dep,) = [d for a in defs.assets if FIRST in a.keys for d in a.specs_by_key[FIRST].deps]
    assert isinstance(dep.partition_mapping, dg.IdentityPartitionMapping)
    assert first.partitions_def == graph.get(UPSTREAM).partitions_def == dg.DynamicPartitionsDefinition(name="web_files")
    # curated has no landing folders, so (unlike web) no landing sensor by default
    assert summary(defs)["jobs"] == {"web_job", "curated_job"} and summary(defs)["sensors"] == {"web_landing"}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("web_files", [PARTITION])
        result = dg.materialize(list(defs.assets), partition_key=PARTITION, instance=instance, resources=defs.resources)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    kept = _ids(root / "data/pipelines/web/quality_filtered/data" / PARTITION)
    assert kept and "short" not in kept
    assert _ids(root / "data/curated/curated/redacted/data" / PARTITION) == kept


@pytest.mark.parametrize(("module", "curated", "expected"), [
    ("srcstage", CURATED_YAML.replace("stage: quality_filtered", "stage: quality_filterd"),
     "source.stage: pipeline 'web' has no stage 'quality_filterd' (did you mean 'quality_filtered'?)"),
    ("srcpipeline", CURATED_YAML.replace("pipeline: web,", "pipeline: wbe,"), "source.pipeline: unknown pipeline 'wbe' (did you mean 'web'?)"),
])
def test_a_source_naming_no_component_stage_fails_to_load_saying_why(tmp_path, monkeypatch, prose, module, curated, expected):
    root = _project(tmp_path, prose, module, _component(curated))
    with pytest.raises(Exception) as info:  # dg wraps it in its component-tree error
        load_defs(root, monkeypatch)
    assert expected in error_chain(info.value) and f"{root}/{module}/defs/curated/defs.yaml:" in error_chain(info.value)


def test_a_source_with_a_landing_sensor_asked_for_says_it_has_no_landing_folders(tmp_path, monkeypatch, prose):
    root = _project(tmp_path, prose, "srcsensor", _component(CURATED_YAML, landing_sensor={"minimum_interval_seconds": 30}))
    with pytest.raises(Exception) as info:  # dg wraps it in its component-tree error
        load_defs(root, monkeypatch)
    assert "pipeline 'curated' reads web/quality_filtered and has no landing folders to watch" in error_chain(info.value)
