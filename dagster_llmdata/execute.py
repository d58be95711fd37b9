"""Run one operator over one dataset and account for every document. Used by the Dagster
assets, the CLI and plain Python alike."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .io.parquet_store import count_rows, list_parquet, read_schema
from .io.schema import CORE_SCHEMA, drop_schema
from .ledger import Ledger, count_ledger
from .operators import Operator, get_operator, is_per_document
from .operators.ingest import Ingest, expand_input
from .stage_run import ExecutorConfig, StageRun


@dataclass
class StageOutcome:
    ledger: Ledger
    seconds: float
    schema: pa.Schema
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        return self.ledger.n_in / self.seconds if self.seconds > 0 else 0.0


def run_stage(op: Operator, run: StageRun) -> StageOutcome:
    run.reset_outputs()
    start = time.perf_counter()
    extra = op.run(run)
    seconds = time.perf_counter() - start
    schema = read_schema(list_parquet(run.output_dir)) or run.output_schema(op.produced_columns())
    run.finalize(schema)
    n_in = run.n_in_override if run.n_in_override is not None else count_rows(run.input_files)
    ledger = count_ledger(n_in, run.output_dir, run.rejected_dir, run.quarantine_dir)
    return StageOutcome(ledger=ledger, seconds=seconds, schema=schema, metadata=extra)


def run_fused(chain: list[tuple[Operator, StageRun]]) -> list[StageOutcome]:
    """Run a linear chain of per-document stages in ONE datatrove pass: read once, and after each
    stage write its kept docs to its own dataset (so every stage is still its own asset with its
    own data, rejected docs and ledger). Consecutive filters then share datatrove's per-text
    tokenisation cache instead of re-tokenising every doc per stage."""
    if not all(is_per_document(type(op)) for op, _ in chain):
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
        meta = {**op.metadata_from_stats(stats), "llmdata/fused_with": [r.stage for _, r in chain],
                "llmdata/fused_run_s": round(seconds, 3)}
        share = seconds * step_times[run.stage] / total_step_time
        outcomes.append(StageOutcome(ledger=ledger, seconds=share, schema=schema, metadata=meta))
        upstream_files = list_parquet(run.output_dir)
    return outcomes


def apply_operator(
    name: str,
    in_path: str | Path,
    out_path: str | Path,
    params: dict[str, Any] | None = None,
    executor: ExecutorConfig | None = None,
) -> StageOutcome:
    """Use one operator on its own: `in_path` is a JSONL(.gz)/Parquet file or a folder; kept rows go to
    `out_path` (every input column plus the produced ones) and dropped rows to
    `<out>.rejected.parquet` (same columns plus stage, reason, kept_id). Quarantined rows, if any, go
    to `<out>.quarantine.parquet`."""
    op = get_operator(name)(params)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="llmdata-op-") as tmp:
        tmp = Path(tmp)
        if isinstance(op, Ingest):
            files, input_schema = expand_input(Path(in_path)), CORE_SCHEMA
            context = {"source_root": str(Path(in_path) if Path(in_path).is_dir() else Path(in_path).parent)}
        else:
            files = [str(load_as_dataset(Path(in_path), tmp / "input"))]
            input_schema, context = read_schema(files), {}
        run = StageRun(
            stage=name,
            input_files=files,
            output_dir=tmp / "out",
            rejected_dir=tmp / "rejected",
            quarantine_dir=tmp / "quarantine",
            work_dir=tmp / "work",
            executor=executor or ExecutorConfig(),
            input_schema=input_schema,
            context=context,
        )
        outcome = run_stage(op, run)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _concat(list_parquet(run.output_dir), out_path, outcome.schema)
        stem = out_path.with_suffix("")
        _concat(list_parquet(run.rejected_dir), Path(f"{stem}.rejected.parquet"), drop_schema(outcome.schema))
        if outcome.ledger.n_quarantined:
            _concat(list_parquet(run.quarantine_dir), Path(f"{stem}.quarantine.parquet"), drop_schema(outcome.schema))
    return outcome


def load_as_dataset(path: Path, tmp: Path) -> Path:
    """A standalone input as one Parquet file with every input column and an `id`."""
    tmp.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.name.endswith(".parquet"):
        table = pq.read_table(path)
    else:
        # JSONL / folders go through ingest (so bad lines are quarantined), then their extra
        # fields come back out of `meta` as columns
        outcome_dir = tmp / "ingested"
        apply_operator("ingest", path, outcome_dir / "data.parquet")
        table = _meta_to_columns(pq.read_table(outcome_dir / "data.parquet"))
    if "text" not in table.column_names:
        raise ValueError(f"{path} has no `text` column (columns: {', '.join(table.column_names)})")
    if "id" not in table.column_names:
        import xxhash

        ids = [xxhash.xxh3_64_hexdigest(f"{path.name}\x00{i}".encode()) for i in range(table.num_rows)]
        table = table.add_column(0, "id", pa.array(ids, pa.string()))
    elif table.schema.field("id").type != pa.string():
        table = table.set_column(table.column_names.index("id"), "id", table.column("id").cast(pa.string()))
    out = tmp / "input.parquet"
    pq.write_table(table, out)
    return out


def _meta_to_columns(table: pa.Table) -> pa.Table:
    import json

    metas = [json.loads(m) if m else {} for m in table.column("meta").to_pylist()]
    keys = sorted({k for m in metas for k in m} - {"file", "position"} - set(table.column_names))
    for key in keys:
        values = [m.get(key) for m in metas]
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            column = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
        table = table.append_column(key, column)
    return table


def _concat(files: list[str], dest: Path, schema: pa.Schema) -> None:
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="default") if tables else schema.empty_table()
    if dest.exists():
        dest.unlink()
    pq.write_table(table, dest)


__all__ = ["StageOutcome", "run_stage", "apply_operator"]
