"""Pipelines reading each other, as Dagster sees them: the downstream pipeline's first stage depends
on the upstream stage's asset across the two groups, both share one partitions definition (partition
P reads the upstream's P), and a rewritten upstream partition marks the downstream one stale."""

from __future__ import annotations

import os

import dagster as dg
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._utils.test.data_versions import get_stale_status_resolver

from dagster_llmdata import load_project

from ..two_pipelines import PARTITION, two_pipelines

UPSTREAM = dg.AssetKey(["web", "quality_filtered"])
FIRST = dg.AssetKey(["curated", "from_web"])
LAST = dg.AssetKey(["curated", "redacted"])


@pytest.fixture()
def root(tmp_path, prose):
    return two_pipelines(tmp_path, prose)


def _materialize(defs: dg.Definitions, instance, selection=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(list(defs.assets), partition_key=PARTITION, instance=instance, resources=defs.resources,
                            selection=selection)
    assert result.success
    return result


def _version(result, key: dg.AssetKey) -> str:
    (mat,) = [e.materialization for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    return mat.tags[DATA_VERSION_TAG]


def test_the_downstream_source_depends_on_the_upstream_stage_across_groups(root):
    defs = load_project(root)
    graph = defs.resolve_asset_graph()
    first, upstream = graph.get(FIRST), graph.get(UPSTREAM)
    assert (first.group_name, upstream.group_name) == ("curated", "web")
    assert first.parent_keys == {UPSTREAM} and FIRST in upstream.child_keys
    (dep,) = [d for a in defs.assets if FIRST in a.keys for d in a.specs_by_key[FIRST].deps]
    assert dep.asset_key == UPSTREAM and isinstance(dep.partition_mapping, dg.IdentityPartitionMapping)
    # one partitions definition for both groups: a key registered for web is a key of curated
    assert first.partitions_def == upstream.partitions_def == dg.DynamicPartitionsDefinition(name="web_files")
    assert graph.get(LAST).partitions_def == first.partitions_def
    assert {j.name for j in defs.jobs} >= {"web_job", "curated_job"}
    assert defs.resolve_job_def("curated_job").partitions_def == first.partitions_def
    # Dagster maps partition P downstream to the upstream's P
    with dg.instance_for_test() as instance, dg.partition_loading_context(dynamic_partitions_store=instance):
        instance.add_dynamic_partitions("web_files", [PARTITION, "crawl/other.jsonl"])
        mapped = graph.get_parent_partition_keys_for_child(PARTITION, UPSTREAM, FIRST)
    assert set(mapped.partitions_subset.get_partition_keys()) == {PARTITION}


def test_a_rewritten_upstream_partition_marks_the_downstream_stale(root, instance):
    defs = load_project(root)
    assets = list(defs.assets)
    instance.add_dynamic_partitions("web_files", [PARTITION])
    first = _materialize(defs, instance)

    def status(key: dg.AssetKey) -> StaleStatus:
        return get_stale_status_resolver(instance, assets).get_status(key, PARTITION)

    assert {status(k) for k in (UPSTREAM, FIRST, LAST)} == {StaleStatus.FRESH}
    web = dg.AssetSelection.groups("web")
    # re-materialised with nothing changed, web skips and keeps its data version: curated stays fresh
    again = _materialize(defs, instance, web)
    assert _version(again, UPSTREAM) == _version(first, UPSTREAM)
    assert status(FIRST) == StaleStatus.FRESH
    # the landed file changed: web re-runs, its stage has a new data version, and curated is stale
    os.utime(root / "landing/crawl/batch1.jsonl")
    rewritten = _materialize(defs, instance, web)
    assert _version(rewritten, UPSTREAM) != _version(first, UPSTREAM)
    assert status(UPSTREAM) == StaleStatus.FRESH
    assert status(FIRST) == StaleStatus.STALE
    (cause,) = get_stale_status_resolver(instance, assets).get_stale_causes(FIRST, PARTITION)
    assert cause.dependency == AssetKeyPartitionKey(UPSTREAM, PARTITION) and "data version" in cause.reason
    # Dagster's data staleness is one hop: redacted goes stale once from_web has a new version
    _materialize(defs, instance, dg.AssetSelection.assets(FIRST))
    assert (status(FIRST), status(LAST)) == (StaleStatus.FRESH, StaleStatus.STALE)
    _materialize(defs, instance, dg.AssetSelection.assets(LAST))
    assert {status(k) for k in (UPSTREAM, FIRST, LAST)} == {StaleStatus.FRESH}
