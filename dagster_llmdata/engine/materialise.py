"""Materialise a chain of stages for one partition: skip what is up to date, run the rest
(fused into one datatrove pass where the operators allow), count every ledger from disk.
Dagster-free: the factory turns the reports into Dagster events."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_llmdata.engine.execute import StageOutcome, run_fused, run_stage
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.io.layout import PipelineLayout, partition_folder
from dagster_llmdata.io.ledger import Ledger, count_ledger, load_record, save_record
from dagster_llmdata.operators import Operator, get_operator, is_streaming
from dagster_llmdata.operators.source import SourceOperator
from dagster_llmdata.spec.pipeline import PipelineSpec, StageSpec
from dagster_llmdata.io.stage_run import StageContext, StageRun, clear_outputs


LOCK_TIMEOUT_ENV = "LLMDATA_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 3600.0
LOCK_POLL_S = 0.2

log = logging.getLogger(__name__)


class PartitionInputMissing(RuntimeError):
    """The partition's raw file or upstream dataset is not there."""


class PartitionLocked(RuntimeError):
    """Another process kept materialising the same stages of the partition past the lock timeout."""


@dataclass
class StageReport:
    stage: str
    run: StageRun
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
    code_versions: dict[str, str]  # lineage-chained, as Dagster sees them
    # runtime settings per `Operator.runtime_key` (from Dagster resources): where work runs, not data
    runtime: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the Dagster run materialising (stores tag what they write with it); None outside Dagster
    run_id: str | None = None

    def operator(self, stage: StageSpec, **param_overrides: Any) -> Operator:
        cls = get_operator(stage.op)
        runtime = self.runtime.get(cls.runtime_key) if cls.runtime_key else None
        return cls({**stage.params, **param_overrides}, runtime=runtime)


def stage_run_for(ctx: PipelineContext, stage: StageSpec, partition: str, require_input: bool = True) -> tuple[StageRun, Operator]:
    """The run of one stage over one partition, and the operator to run (a source operator takes
    its source's reading settings)."""
    spec, layout = ctx.spec, ctx.layout
    op = ctx.operator(stage)
    source_root = None
    if isinstance(op, SourceOperator):
        source_name, _, entry = partition.partition("/")
        try:
            source = spec.source(source_name)
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
        partition=partition_folder(partition), stage_root=layout.stage_root(stage.name), lineage=tuple(_lineage(spec, stage)),
        dagster_run_id=ctx.run_id, source_root=source_root, project_root=ctx.root,
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


def _lineage(spec: PipelineSpec, stage: StageSpec) -> list[str]:
    """The stages from the source to `stage`, as <pipeline>/<stage> names."""
    chain = [stage]
    while chain[-1].input:
        chain.append(spec.stage(chain[-1].input))
    return [f"{spec.pipeline}/{s.name}" for s in reversed(chain)]


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
    for stage in ctx.spec.stages:
        try:
            run, op = stage_run_for(ctx, stage, partition)
        except PartitionInputMissing:
            return False
        record = load_record(run.output_dir)
        if not record or record.get("fingerprint") != _fingerprint(ctx, stage, op, run):
            return False
    return True


def materialise_chain(ctx: PipelineContext, stages: list[StageSpec], partition: str, fuse: bool = True) -> list[StageReport]:
    """Materialise `stages` (a linear chain, each the input of the next) for one partition.
    Holds the chain's partition locks throughout: a second run of the same partition waits, then
    finds the work done (same fingerprints) and skips."""
    # a serial stage (dedup against earlier partitions) also holds its stage-wide lock
    serial = [s.name for s in stages if get_operator(s.op).serial]
    with stage_lock(ctx.layout, serial), partition_lock(ctx.layout, [s.name for s in stages], partition):
        return _materialise_locked(ctx, stages, partition, fuse)


def _materialise_locked(ctx: PipelineContext, stages: list[StageSpec], partition: str, fuse: bool) -> list[StageReport]:
    reports: list[StageReport] = []
    # 1. leading stages whose inputs and code are unchanged are skipped
    first_run = None
    for stage in stages:
        run, op = stage_run_for(ctx, stage, partition)
        # taken BEFORE the stage reads: input that changes meanwhile makes the next run redo it
        fp = _fingerprint(ctx, stage, op, run)
        record = load_record(run.output_dir)
        if not record or record.get("fingerprint") != fp:
            first_run = (run, op, fp)
            break
        ledger = count_ledger(record["ledger"]["n_in"], run.output_dir, run.rejected_dir, run.quarantine_dir)
        meta = {**record.get("metadata_plain", {}), "llmdata/skipped": True}
        reports.append(StageReport(stage.name, run, ledger, record["data_version"], True, None, meta))
    if first_run is None:
        return reports
    rest = stages[len(reports):]
    # 2. the rest runs: fused where every operator is per-document, else stage by stage
    if fuse and len(rest) > 1 and all(is_streaming(get_operator(s.op)) for s in rest):
        # later stages read what this very pass writes: clear what an interrupted pass left first
        for stage in rest:
            clear_outputs(*ctx.layout.partition_dirs(stage.name, partition))
        runs = [first_run[:2]] + [stage_run_for(ctx, s, partition, require_input=False) for s in rest[1:]]
        outcomes = run_fused([(op, run) for run, op in runs])
        for i, (stage, (run, op), outcome) in enumerate(zip(rest, runs, outcomes)):
            fp = first_run[2] if i == 0 else _fingerprint(ctx, stage, op, run)  # its input is this pass's output
            reports.append(_finish(stage, run, fp, outcome))
            if not outcome.ledger.balanced:
                break
    else:
        run, op, fp = first_run
        for i, stage in enumerate(rest):
            if i:  # built once its input exists
                run, op = stage_run_for(ctx, stage, partition)
                fp = _fingerprint(ctx, stage, op, run)
            reports.append(_finish(stage, run, fp, run_stage(op, run)))
            if not reports[-1].ledger.balanced:
                break  # a broken ledger stops the chain: nothing downstream of it is built
    return reports


def _fingerprint(ctx: PipelineContext, stage: StageSpec, op: Operator, run: StageRun) -> str:
    return fingerprint(f"{ctx.code_versions[stage.name]}|{op.code_version}|{op.compared_state(run)}", run.input_files)


def _finish(stage: StageSpec, run: StageRun, fp: str, outcome: StageOutcome) -> StageReport:
    """Record a stage's run; the record is what marks its data complete for skips and downstream."""
    ledger = outcome.ledger
    data_version = hashlib.sha1(f"{fp}{json.dumps(ledger.to_dict(), sort_keys=True)}".encode()).hexdigest()[:16]
    plain = {k: v for k, v in outcome.metadata.items() if isinstance(v, (int, float, str, bool))}
    if ledger.balanced:  # an unbalanced stage is never recorded as done, so it re-runs next time
        save_record(run.output_dir, {"fingerprint": fp, "ledger": ledger.to_dict(), "data_version": data_version,
                                     "metadata_plain": plain})
    return StageReport(stage.name, run, ledger, data_version, False, outcome, outcome.metadata)


@contextlib.contextmanager
def partition_lock(layout: PipelineLayout, stages: list[str], partition: str, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock per (stage, partition) for every stage of a chain, taken in pipeline
    order (so two chains never wait on each other in a circle). Waits up to `timeout` (default
    $LLMDATA_LOCK_TIMEOUT_S); a lock held by a dead process is released by the OS."""
    timeout = _lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        for stage in stages:
            fd = _acquire(layout.lock_file(stage, partition), deadline, f"{stage}[{partition}]", timeout)
            held.callback(os.close, fd)  # closing the descriptor releases the lock
        yield


@contextlib.contextmanager
def stage_lock(layout: PipelineLayout, stages: list[str], timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock per stage, over all its partitions (taken before any partition lock)."""
    timeout = _lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        for stage in stages:
            fd = _acquire(layout.stage_root(stage) / "work" / ".locks" / "_stage.lock", deadline, f"{stage}[all partitions]", timeout)
            held.callback(os.close, fd)
        yield


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(raw) if raw.strip() else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        raise ValueError(f"${LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def _acquire(path: Path, deadline: float, what: str, timeout: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if time.monotonic() >= deadline:
                os.close(fd)
                raise PartitionLocked(
                    f"{what} is being materialised by another process (pid {holder}); gave up after {timeout:g}s "
                    f"(lock file {path}; ${LOCK_TIMEOUT_ENV} sets the wait)"
                ) from None
            if not waiting:
                log.info("%s is being materialised by pid %s; waiting up to %gs", what, holder, timeout)
                waiting = True
            time.sleep(LOCK_POLL_S)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)  # who holds it, for the waiters' messages
    return fd
