"""Read a stage's dataset from Python without knowing the folder layout.

`dataset(root, "web/shards")` is every finished partition of stage `shards` of pipeline `web` as a
`pyarrow.dataset.Dataset`; `dataset_partitions` lists the same files per partition with the data
version each one was materialised with (what a mixture manifest pins)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as pads

from dagster_llmdata.errors import SpecError
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.io.layout import PipelineLayout, partition_folder
from dagster_llmdata.io.ledger import load_record
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.spec.project import read_project


@dataclass(frozen=True)
class PartitionFiles:
    """One finished partition of a stage: its folder, Parquet files and data version."""

    partition: str  # the partition folder name (as `partition_folder` writes it)
    folder: Path
    files: list[str]
    data_version: str | None


def split_dataset_name(name: str) -> tuple[str, str]:
    pipeline, sep, stage = name.partition("/")
    if not sep or not pipeline or not stage or "/" in stage:
        raise SpecError(f"dataset name {name!r} must be `<pipeline>/<stage>`")
    return pipeline, stage


def stage_layout(project_root: str | Path, name: str, pipelines: dict[str, PipelineSpec] | None = None) -> tuple[PipelineLayout, str]:
    """The layout and stage name behind `pipeline/stage`, with an error naming what exists."""
    root = Path(project_root).resolve()
    pipeline, stage = split_dataset_name(name)
    if pipelines is None:
        pipelines = read_project(root).pipelines
    if pipeline not in pipelines:
        raise SpecError(f"dataset {name!r}: no pipeline {pipeline!r} in {root / 'assets'} (loaded: {sorted(pipelines) or 'none'})")
    spec = pipelines[pipeline]
    stages = [s.name for s in spec.stages]
    if stage not in stages:
        raise SpecError(f"dataset {name!r}: pipeline {pipeline!r} has no stage {stage!r}; its stages: {', '.join(stages)}")
    return PipelineLayout((root / spec.storage).resolve(), spec.pipeline), stage


def dataset_partitions(project_root: str | Path, name: str, partition: str | None = None,
                       pipelines: dict[str, PipelineSpec] | None = None) -> list[PartitionFiles]:
    """Finished partitions of `pipeline/stage` (only those whose ledger record was written, so a
    partition being materialised right now is not read half-done), or just `partition`."""
    layout, stage = stage_layout(project_root, name, pipelines)
    folders = layout.partitions_on_disk(stage)
    if partition is not None:
        wanted = partition_folder(partition)
        if wanted not in folders:
            raise SpecError(f"dataset {name!r} has no finished partition {partition!r} (finished: {folders or 'none'})")
        folders = [wanted]
    out = []
    for folder_name in folders:
        folder = layout.stage_root(stage) / "data" / folder_name
        record = load_record(folder) or {}
        out.append(PartitionFiles(folder_name, folder, list_parquet(folder), record.get("data_version")))
    return out


def dataset_files(project_root: str | Path, name: str, partition: str | None = None) -> list[str]:
    """The Parquet files of `pipeline/stage` (all finished partitions, or one), in a stable order."""
    return [f for p in dataset_partitions(project_root, name, partition) for f in p.files]


def dataset(project_root: str | Path, name: str, partition: str | None = None) -> pads.Dataset:
    """`pipeline/stage` as a pyarrow dataset over its finished partitions (or one partition).
    A stage with no finished partition is an error that says so, not an empty dataset."""
    files = dataset_files(project_root, name, partition)
    if not files:
        raise SpecError(f"dataset {name!r} has no materialised data yet (materialise the stage first)")
    return pads.dataset(files, format="parquet")
