"""Run one operator over one dataset and account for every document. Used by the Dagster
assets, the CLI and plain Python alike."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dagster_llmdata.io.parquet_store import count_rows, list_parquet, read_schema
from dagster_llmdata.io.ledger import Ledger, count_ledger
from dagster_llmdata.operators import Operator, is_streaming
from dagster_llmdata.operators.source import SourceOperator
from dagster_llmdata.io.stage_run import StageRun


@dataclass
class StageOutcome:
    ledger: Ledger
    seconds: float  # this stage's own time (its share of a fused pass)
    schema: pa.Schema
    metadata: dict[str, Any] = field(default_factory=dict)

    # wall time of the step the stage ran in: a fused pass's whole time, else `seconds`
    step_seconds: float | None = None

    @property
    def docs_per_second(self) -> float:
        """Docs through the step per second of its wall time. A stage fused with slower neighbours
        shares their pace: its own share of the pass can be near zero (a pass-through stage)."""
        wall = self.step_seconds if self.step_seconds is not None else self.seconds
        return self.ledger.n_in / wall if wall > 0 else 0.0


def run_stage(op: Operator, run: StageRun) -> StageOutcome:
    run.reset_outputs()
    start = time.perf_counter()
    if isinstance(op, SourceOperator):  # raw files have no row count: a source counts what it found
        read = op.read_input(run)
        extra, n_in = read.metadata, read.records
    else:
        extra, n_in = op.run(run), None
    seconds = time.perf_counter() - start
    if run.executor.kind != "local":
        # a whole-dataset operator that works in the step process itself (export, select) says so
        extra["llmdata/executor"] = (run.executor.kind if run.executions else
                                     f"the step process (operator {op.name} does not run on {run.executor.kind})")
    schema = read_schema(list_parquet(run.output_dir)) or run.output_schema(op.produced_columns())
    run.finalize(schema)
    extra.update(op.dataset_metadata(run))
    n_in = count_rows(run.input_files) if n_in is None else n_in
    ledger = count_ledger(n_in, run.output_dir, run.rejected_dir, run.quarantine_dir)
    return StageOutcome(ledger=ledger, seconds=seconds, schema=schema, metadata=extra)


def run_fused(chain: list[tuple[Operator, StageRun]]) -> list[StageOutcome]:
    """Run a linear chain of per-document stages in ONE datatrove pass: read once, and after each
    stage write its kept docs to its own dataset (so every stage is still its own asset with its
    own data, rejected docs and ledger). Consecutive filters then share datatrove's per-text
    tokenisation cache instead of re-tokenising every doc per stage."""
    if not all(is_streaming(type(op)) for op, _ in chain):
        raise ValueError("only per-document operators can run fused")
    first = chain[0][1]
    pipeline: list = [first.reader()]
    schema = first.input_schema
    for op, run in chain:
        run.reset_outputs()
        run.input_schema = schema
        schema = run.output_schema(op.produced_columns())
        pipeline += [op.routed_step(run, schema), run.kept_writer(schema)]
    start = time.perf_counter()
    stats = first.execute(pipeline, name="fused")
    seconds = time.perf_counter() - start
    # the pass's wall time, shared out by each stage's own measured time in it
    step_times = {run.stage: stats.get(f"{op.name} ({run.stage})", {}).get("time_s", 0.0) for op, run in chain}
    total_step_time = sum(step_times.values()) or 1.0
    outcomes, upstream_files = [], first.input_files
    for op, run in chain:
        schema = run.output_schema(op.produced_columns())
        run.finalize(schema)
        run.input_files = upstream_files  # what this stage actually read, now that it exists
        ledger = count_ledger(count_rows(upstream_files), run.output_dir, run.rejected_dir, run.quarantine_dir)
        meta = {**op.metadata_from_stats(stats), **op.dataset_metadata(run), "llmdata/fused_with": [r.stage for _, r in chain],
                **({"llmdata/executor": first.executor.kind} if first.executor.kind != "local" else {}),
                "llmdata/fused_run_s": round(seconds, 3)}
        share = seconds * step_times[run.stage] / total_step_time
        outcomes.append(StageOutcome(ledger=ledger, seconds=share, schema=schema, metadata=meta, step_seconds=seconds))
        upstream_files = list_parquet(run.output_dir)
    return outcomes


__all__ = ["StageOutcome", "run_stage", "run_fused"]
