"""Removing a partition from a pipeline (a landed file withdrawn, e.g. for a takedown): its data in
every stage goes, and so does everything a stage keeps about it elsewhere (dedup index entries,
its rows in a LanceDB table, in a new version tagged for the removal; the score cache's answers for
its texts); the Dagster partition goes, and each partition that landed after it and was
deduplicated against it shows stale in Dagster (a copy it dropped because the removed partition held
the original is now the first of its kind, so a re-run keeps it). The mixture manifests that pinned
its documents and the training runs that trained on them are reported, never rewritten: they are
the record of what was trained on.

Pipelines that read this one's stages (`source: {pipeline: ...}`) share its partitions, so the
partition goes from each of them too. The Dagster partition key is deleted only when the removal
starts at the head of the chain; removed from a downstream pipeline alone, the key stays for the
pipelines upstream of it, and each removed stage gets an observation of the partition saying so."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_llmdata.defs.events import compared_with_events, later_partition_keys
from dagster_llmdata.defs.translator import StageTranslator, partitions_def_for
from dagster_llmdata.engine.locks import partition_lock, stage_lock
from dagster_llmdata.engine.materialise import PipelineContext, pipeline_context, stage_run_for
from dagster_llmdata.errors import PartitionInputMissing
from dagster_llmdata.mixture.consumers import ManifestUse, RunUse, manifests_consuming, runs_consuming
from dagster_llmdata.operators.base import Operator
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.spec.project import Project, read_project


@dataclass
class Removal:
    partition: str
    pipeline: str = ""
    stages_cleared: list[str] = field(default_factory=list)  # stages that held something of it
    stale: dict[str, list[str]] = field(default_factory=dict)  # serial stage -> partitions now stale
    forgotten: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> what it dropped outside its folders
    manifests: list[ManifestUse] = field(default_factory=list)  # mixture manifests that pinned its documents
    training_runs: list[RunUse] = field(default_factory=list)  # runs recorded as training on those manifests
    problems: list[str] = field(default_factory=list)  # what could not be checked
    downstream: list[Removal] = field(default_factory=list)  # the same partition of the pipelines reading this one
    key_kept_for: str | None = None  # the head pipeline whose partition key stays (removal from a downstream pipeline)

    def lines(self) -> list[str]:
        """What else went, and what consumed the partition, one printable line each."""
        out = self._own_lines()
        for below in self.downstream:
            out.append(f"{below.pipeline} (reads {self.pipeline}): removed from {len(below.stages_cleared)} stage(s)")
            out += [f"  {line}" for line in below._own_lines()]
        if self.key_kept_for:
            out.append(f"the partition key stays: pipeline {self.key_kept_for} (the head of the chain) still has it; "
                       f"`llmdata remove {self.key_kept_for} {self.partition}` removes it everywhere")
        return out

    def _own_lines(self) -> list[str]:
        out = [f"{stage}: now stale (compared against it): {', '.join(keys)}" for stage, keys in self.stale.items() if keys]
        for stage, what in self.forgotten.items():
            if lance := what.get("lance"):
                out.append(f"{stage}: {lance['rows_removed']} rows deleted from LanceDB table {lance['table']!r}: version "
                           f"{lance['version']}, tagged {lance['tag']} (the versions before it keep them)")
            if "score_cache_entries_removed" in what:
                out.append(f"{stage}: {what['score_cache_entries_removed']} score cache entries dropped ({what['score_cache']})")
        out += [f"consumed by mixture {m.mixture} manifest {m.version} ({m.path}): {'; '.join(m.pinned)}" for m in self.manifests]
        out += [f"consumed by training run {r.run_id} (mixture {r.mixture} {r.mixture_version}, from step {r.from_step})"
                for r in self.training_runs]
        if self.manifests:
            out.append("manifests and training runs are left as they are (the record of what was trained on); "
                       "re-materialise a mixture for one without these documents")
        return out + [f"not checked: {p}" for p in self.problems]

    @property
    def lance_versions(self) -> dict[str, dict[str, Any]]:
        """stage -> the new LanceDB version without the partition's rows (uri, table, version, tag, rows_removed)."""
        return {stage: what["lance"] for stage, what in self.forgotten.items() if "lance" in what}


def remove_partition(spec: PipelineSpec, root: Path, partition: str, instance: dg.DagsterInstance,
                     why: str = "removed", lock_timeout: float | None = None) -> Removal:
    """Remove `partition` from `spec`'s pipeline and from every pipeline reading it. Holds the same
    locks as a run of its stages, so a run in progress finishes first (waiting up to
    `lock_timeout`, default $LLMDATA_LOCK_TIMEOUT_S, then raising PartitionLocked with nothing
    more removed). Returns what was cleared, which partitions went stale, and which manifests and
    training runs consumed the partition's documents."""
    root = Path(root).resolve()
    project = read_project(root)
    partitions = partitions_def_for(spec)
    keys = list(instance.get_dynamic_partitions(partitions.name))
    # the readers first: none of them is left reading an upstream partition that is gone
    below = [_remove_one(d, root, project, partition, keys, instance, why, lock_timeout)
             for d in reversed(_readers_of(project, spec.pipeline))]
    removal = _remove_one(spec, root, project, partition, keys, instance, why, lock_timeout)
    removal.downstream = below[::-1]
    removed = [spec, *(project.pipelines[r.pipeline] for r in below)]
    if spec.partitions_pipeline == spec.pipeline:
        if partition in keys:
            instance.delete_dynamic_partition(partitions.name, partition)
    else:
        removal.key_kept_for = spec.partitions_pipeline
        # the key stays for the pipelines upstream; Dagster's open-source event storage cannot wipe
        # one partition's history, so each removed stage gets an observation saying its data went
        for s in removed:
            translator = StageTranslator(s)
            for stage in pipeline_context(s, root).stages.values():
                instance.report_runless_asset_event(dg.AssetObservation(
                    asset_key=translator.get_asset_key(stage), partition=partition, metadata={"removed": why},
                    description=f"partition {partition} {why}: its data is gone; materialise it again to restore it"))
    return removal


def _readers_of(project: Project, pipeline: str) -> list[PipelineSpec]:
    """The pipelines reading `pipeline`'s stages, directly or through others, each after the one it reads."""
    out: list[PipelineSpec] = []
    frontier = [pipeline]
    while frontier:
        name = frontier.pop(0)
        for spec in project.pipelines.values():
            if spec.source is not None and spec.source.pipeline == name and spec not in out:
                out.append(spec)
                frontier.append(spec.pipeline)
    return out


def _remove_one(spec: PipelineSpec, root: Path, project: Project, partition: str, keys: list[str],
                instance: dg.DagsterInstance, why: str, lock_timeout: float | None) -> Removal:
    """One pipeline's part: its stage data, what stages keep elsewhere, the stale marks, consumers."""
    ctx = _with_runtime_from_env(pipeline_context(spec, root))
    serial = [s for s in ctx.stages.values() if s.serial]
    removal = Removal(partition, spec.pipeline)
    with stage_lock(ctx.layout, [s.name for s in serial], lock_timeout), \
            partition_lock(ctx.layout, list(ctx.stages), partition, lock_timeout):
        # who compared against it: read before its data (and so its place in the order) is gone
        later = {s.name: later_partition_keys(ctx, s, partition, keys) for s in serial}
        # what stages keep outside their folders (a table's rows, cached answers): while the folders,
        # which say what the partition held, still exist
        for stage in ctx.stages.values():
            if type(stage.operator).forget_partition is Operator.forget_partition:
                continue
            try:
                run, op = stage_run_for(ctx, stage, partition, require_input=False)
            except PartitionInputMissing:  # a source whose landing file is gone keeps nothing elsewhere
                continue
            if forgotten := op.forget_partition(run):
                removal.forgotten[stage.name] = forgotten
        for stage in ctx.stages.values():
            dirs = [d for d in ctx.layout.partition_dirs(stage.name, partition) if d.exists()]
            for d in dirs:
                shutil.rmtree(d)
            if dirs:
                removal.stages_cleared.append(stage.name)
        events = []
        for stage in serial:
            removal.stale[stage.name] = later[stage.name]
            events += compared_with_events(ctx, stage, later[stage.name], f"partition {partition} that landed before it was {why}")
    for event in events:
        instance.report_runless_asset_event(event)
    mixtures = project.mixtures
    removal.manifests, removal.problems = manifests_consuming(root, mixtures, spec.pipeline, partition)
    removal.training_runs = runs_consuming(root, mixtures, [m.version for m in removal.manifests])
    return removal


def _with_runtime_from_env(ctx: PipelineContext) -> PipelineContext:
    """Runtime settings from the same environment variables the code location's resources read (a
    judge's score cache folder), since no Dagster run binds them here."""
    runtime = {}
    for stage in ctx.stages.values():
        op_cls = type(stage.operator)
        if op_cls.Runtime is not None and op_cls.runtime_key:
            runtime[op_cls.runtime_key] = op_cls.Runtime.from_env().model_dump()
    return dataclasses.replace(ctx, runtime=runtime)
