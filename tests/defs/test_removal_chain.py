"""Removal across pipelines that read each other: removed at the head, a partition leaves every
pipeline reading it (their stage data, and the shared Dagster partition key); removed from a
downstream pipeline alone, it leaves that pipeline (and those reading it) while the head keeps
its data and the key, and each removed downstream stage records an observation saying so."""

from __future__ import annotations

import dagster as dg

from dagster_llmdata import load_project
from dagster_llmdata.defs.removal import remove_partition
from dagster_llmdata.io.layout import PipelineLayout
from dagster_llmdata.spec.project import read_project

from ..two_pipelines import PARTITION, two_pipelines


def _materialised(tmp_path, prose):
    root = two_pipelines(tmp_path, prose)
    defs = load_project(root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("web_files", [PARTITION])
    result = dg.materialize(list(defs.assets), partition_key=PARTITION, instance=instance, resources=defs.resources)
    assert result.success
    return root, read_project(root), instance


def _has_data(root, spec, stage: str) -> bool:
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    return any(d.exists() for d in layout.partition_dirs(stage, PARTITION))


def test_removed_at_the_head_it_leaves_every_pipeline_reading_it(tmp_path, prose):
    root, project, instance = _materialised(tmp_path, prose)
    web, curated = project.pipelines["web"], project.pipelines["curated"]
    assert _has_data(root, curated, "redacted") and _has_data(root, web, "quality_filtered")
    removal = remove_partition(web, root, PARTITION, instance)
    assert not any(_has_data(root, web, s.name) for s in web.stages)
    assert not any(_has_data(root, curated, s.name) for s in curated.stages)
    assert [r.pipeline for r in removal.downstream] == ["curated"]
    assert set(removal.downstream[0].stages_cleared) == {"from_web", "redacted"}
    assert removal.key_kept_for is None and PARTITION not in instance.get_dynamic_partitions("web_files")
    assert any(line.startswith("curated (reads web): removed from 2 stage(s)") for line in removal.lines())


def test_removed_downstream_only_the_head_keeps_its_data_and_the_key(tmp_path, prose):
    root, project, instance = _materialised(tmp_path, prose)
    web, curated = project.pipelines["web"], project.pipelines["curated"]
    removal = remove_partition(curated, root, PARTITION, instance)
    assert set(removal.stages_cleared) == {"from_web", "redacted"} and removal.downstream == []
    assert all(_has_data(root, web, s.name) for s in web.stages)  # upstream untouched
    assert not any(_has_data(root, curated, s.name) for s in curated.stages)
    assert PARTITION in instance.get_dynamic_partitions("web_files")  # web still uses the key
    assert removal.key_kept_for == "web"
    assert any("the partition key stays: pipeline web" in line for line in removal.lines())
    # each removed stage says so in Dagster (the open-source event storage cannot wipe one partition)
    for stage in ("from_web", "redacted"):
        records = instance.fetch_observations(dg.AssetKey(["curated", stage]), limit=5).records
        observed = [r.asset_observation for r in records if r.partition_key == PARTITION]
        assert observed and observed[0].metadata["removed"].value == "removed"
    assert not instance.fetch_observations(dg.AssetKey(["web", "quality_filtered"]), limit=5).records
