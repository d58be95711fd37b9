"""Materialise a chain of stages for one partition: skip what is up to date, run the rest
(fused into one datatrove pass where the operators allow), count every ledger from disk.
Dagster-free: the Dagster layer turns the reports into events."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import PartitionInputMissing, SpecError
from dagster_llmdata.engine.execute import StageOutcome, run_fused, run_stage
from dagster_llmdata.engine.locks import partition_lock, stage_lock
from dagster_llmdata.engine.stages import Stage, resolve_stages
from dagster_llmdata.io.parquet_store import list_parquet, read_schema
from dagster_llmdata.io.layout import PipelineLayout, partition_folder
from dagster_llmdata.io.ledger import Ledger, count_ledger, load_record, save_record
from dagster_llmdata.operators import Operator
from dagster_llmdata.operators.source import SourceOperator
from dagster_llmdata.spec.pipeline import PipelineSpec, StageSpec
from dagster_llmdata.spec.project import read_project
from dagster_llmdata.io.stage_run import StageContext, StageRun, clear_outputs


@dataclass
class StageReport:
    stage: str
    run: StageRun
    operator: Operator  # the runtime-bound operator of the run (the one it would have used, when skipped)
    ledger: Ledger
    data_version: str
    skipped: bool
    outcome: StageOutcome | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineContext:
    spec: PipelineSpec
    root: Path
    layout: PipelineLayout
    stages: dict[str, Stage]  # resolved once per pipeline (`resolve_stages`)
    # runtime settings per `Operator.runtime_key` (from Dagster resources): where work runs, not data
    runtime: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the Dagster run materialising (stores tag what they write with it); None outside Dagster
    run_id: str | None = None
    # for a pipeline whose source is another pipeline's stage: where that stage's datasets live
    upstream: UpstreamStage | None = None


@dataclass(frozen=True)
class UpstreamStage:
    """Another pipeline's stage that a pipeline's first stage reads, partition by partition."""

    layout: PipelineLayout
    stage: str

    @property
    def dataset(self) -> str:
        return f"{self.layout.pipeline}/{self.stage}"

    def data_dir(self, partition: str) -> Path:
        return self.layout.data_dir(self.stage, partition)

    def is_complete(self, partition: str) -> bool:
        """Only a recorded partition is complete: without its record it may be a killed run's leftovers."""
        return load_record(self.data_dir(partition)) is not None


def pipeline_context(spec: PipelineSpec, root: Path) -> PipelineContext:
    return PipelineContext(spec, root, PipelineLayout((root / spec.storage).resolve(), spec.pipeline), resolve_stages(spec),
                           upstream=upstream_stage(spec, root))


def upstream_stage(spec: PipelineSpec, root: Path) -> UpstreamStage | None:
    """The stage `spec`'s `source:` names, located through the project (resolved when the project
    was read; a spec read on its own is resolved against the project at `root` here)."""
    if spec.source is None:
        return None
    resolved = spec.resolved_source
    if resolved is None:
        project = read_project(root)
        loaded = project.pipelines.get(spec.pipeline)
        resolved = loaded.resolved_source if loaded is not None and loaded.source == spec.source else None
        if resolved is None:
            problem = next((str(p) for p in project.problems if p.path == project.files.get(spec.pipeline)), None)
            raise SpecError(problem or f"pipeline {spec.pipeline!r}: its source {spec.source.dataset} is not a stage of a "
                                       f"pipeline loaded from {root / 'assets'}")
    return UpstreamStage(PipelineLayout((root / resolved.storage).resolve(), resolved.pipeline), resolved.stage)


def stage_run_for(ctx: PipelineContext, stage: Stage, partition: str, require_input: bool = True) -> tuple[StageRun, Operator]:
    """The run of one stage over one partition, and the operator to run: the one place that binds
    an operator's runtime settings (and a source operator's reading settings)."""
    spec, layout = ctx.spec, ctx.layout
    op = stage.bind(ctx.runtime)
    source_root = None
    upstream_dataset = None
    if isinstance(op, SourceOperator) and ctx.upstream is not None:
        up = ctx.upstream
        if not up.is_complete(partition):
            raise PartitionInputMissing(
                f"{stage.name}[{partition}]: upstream {up.dataset} (pipeline {up.layout.pipeline!r}) has not materialised "
                f"partition {partition!r} yet: materialise it first (`llmdata materialize {up.layout.pipeline}`)"
            )
        # the stage's dataset only: its ledger record, rejected and quarantine folders are not documents
        input_files = list_parquet(up.data_dir(partition))
        input_schema, upstream_dataset = read_schema(input_files), up.dataset
    elif isinstance(op, SourceOperator):
        source_name, _, entry = partition.partition("/")
        try:
            source = spec.landing_source(source_name)
        except KeyError as exc:
            raise PartitionInputMissing(f"partition {partition!r}: {exc.args[0]}") from None
        path = ctx.root / source.landing / entry
        if not path.exists():
            raise PartitionInputMissing(f"partition {partition!r}: {path} does not exist (was the landing file removed?)")
        input_files = op.input_files(path)
        op = op.for_source(source_name, source.model_dump())
        source_root = path.parent
        input_schema = op.input_schema
    else:
        upstream_dir = layout.data_dir(stage.input, partition)
        # only a recorded upstream is complete: without it the folder may hold a killed run's leftovers
        if require_input and load_record(upstream_dir) is None:
            raise PartitionInputMissing(
                f"{stage.name}[{partition}]: upstream {stage.input!r} has no complete materialisation at {upstream_dir}"
            )
        input_files = list_parquet(upstream_dir)
        input_schema = None
    context = StageContext(
        partition=partition_folder(partition), stage_root=layout.stage_root(stage.name), lineage=stage.lineage,
        dagster_run_id=ctx.run_id, source_root=source_root, project_root=ctx.root, upstream_dataset=upstream_dataset,
    )
    run = StageRun(
        stage=stage.name,
        input_files=input_files,
        output_dir=layout.data_dir(stage.name, partition),
        rejected_dir=layout.rejected_dir(stage.name, partition),
        quarantine_dir=layout.quarantine_dir(stage.name, partition),
        work_dir=layout.work_dir(stage.name, partition),
        executor=spec.executor,
        input_schema=input_schema,
        context=context,
    )
    return run, op


def fingerprint(code_version: str, files: list[str]) -> str:
    """Code + the exact input files (path, size, mtime): equal fingerprints mean nothing to do."""
    h = hashlib.sha1(code_version.encode())
    for f in files:
        paths = [Path(f)] if Path(f).is_file() else sorted(p for p in Path(f).rglob("*") if p.is_file())
        for p in paths:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def partition_is_current(ctx: PipelineContext, partition: str) -> bool:
    """Every stage of the pipeline holds a complete materialisation of this partition made from its
    current input and code: a run of it would only skip."""
    for stage in ctx.stages.values():
        try:
            run, op = stage_run_for(ctx, stage, partition)
        except PartitionInputMissing:
            return False
        record = load_record(run.output_dir)
        if not record or record.get("fingerprint") != _fingerprint(stage, op, run):
            return False
    return True


def materialise_chain(ctx: PipelineContext, stages: Sequence[Stage | StageSpec], partition: str, fuse: bool = True) -> list[StageReport]:
    """Materialise `stages` (a linear chain, each the input of the next; taken by name from
    `ctx.stages`) for one partition. Holds the chain's partition locks throughout: a second run of
    the same partition waits, then finds the work done (same fingerprints) and skips."""
    chain = [ctx.stages[s.name] for s in stages]
    # a serial stage (dedup against earlier partitions) also holds its stage-wide lock
    serial = [s.name for s in chain if s.serial]
    # a first stage reading another pipeline's stage holds that partition too, so a re-run upstream
    # never rewrites it mid-read (no cycles between pipelines, so no two chains wait on each other)
    up = ctx.upstream if chain and chain[0].is_source else None
    with stage_lock(ctx.layout, serial), partition_lock(ctx.layout, [s.name for s in chain], partition), \
            (partition_lock(up.layout, [up.stage], partition) if up is not None else contextlib.nullcontext()):
        return _materialise_locked(ctx, chain, partition, fuse)


def _materialise_locked(ctx: PipelineContext, stages: list[Stage], partition: str, fuse: bool) -> list[StageReport]:
    reports: list[StageReport] = []
    # 1. leading stages whose inputs and code are unchanged are skipped
    first_run = None
    for stage in stages:
        run, op = stage_run_for(ctx, stage, partition)
        # taken BEFORE the stage reads: input that changes meanwhile makes the next run redo it
        fp = _fingerprint(stage, op, run)
        record = load_record(run.output_dir)
        if not record or record.get("fingerprint") != fp:
            first_run = (run, op, fp)
            break
        ledger = count_ledger(record["ledger"]["n_in"], run.output_dir, run.rejected_dir, run.quarantine_dir)
        meta = {**record.get("metadata_plain", {}), "llmdata/skipped": True}
        reports.append(StageReport(stage.name, run, op, ledger, record["data_version"], True, None, meta))
    if first_run is None:
        return reports
    rest = stages[len(reports):]
    # 2. the rest runs: fused where every operator is per-document, else stage by stage
    if fuse and len(rest) > 1 and all(s.streaming for s in rest):
        # later stages read what this very pass writes: clear what an interrupted pass left first
        for stage in rest:
            clear_outputs(*ctx.layout.partition_dirs(stage.name, partition))
        runs = [first_run[:2]] + [stage_run_for(ctx, s, partition, require_input=False) for s in rest[1:]]
        outcomes = run_fused([(op, run) for run, op in runs])
        for i, (stage, (run, op), outcome) in enumerate(zip(rest, runs, outcomes)):
            fp = first_run[2] if i == 0 else _fingerprint(stage, op, run)  # its input is this pass's output
            reports.append(_finish(stage, run, op, fp, outcome))
            if not outcome.ledger.balanced:
                break
    else:
        run, op, fp = first_run
        for i, stage in enumerate(rest):
            if i:  # built once its input exists
                run, op = stage_run_for(ctx, stage, partition)
                fp = _fingerprint(stage, op, run)
            reports.append(_finish(stage, run, op, fp, run_stage(op, run)))
            if not reports[-1].ledger.balanced:
                break  # a broken ledger stops the chain: nothing downstream of it is built
    return reports


def _fingerprint(stage: Stage, op: Operator, run: StageRun) -> str:
    return fingerprint(f"{stage.code_version}|{op.code_version}|{op.compared_state(run)}", run.input_files)


def _finish(stage: Stage, run: StageRun, op: Operator, fp: str, outcome: StageOutcome) -> StageReport:
    """Record a stage's run; the record is what marks its data complete for skips and downstream."""
    ledger = outcome.ledger
    data_version = hashlib.sha1(f"{fp}{json.dumps(ledger.to_dict(), sort_keys=True)}".encode()).hexdigest()[:16]
    plain = {k: v for k, v in outcome.metadata.items() if isinstance(v, (int, float, str, bool))}
    if ledger.balanced:  # an unbalanced stage is never recorded as done, so it re-runs next time
        save_record(run.output_dir, {"fingerprint": fp, "ledger": ledger.to_dict(), "data_version": data_version,
                                     "metadata_plain": plain})
    return StageReport(stage.name, run, op, ledger, data_version, False, outcome, outcome.metadata)
