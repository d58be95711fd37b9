"""Materialise a chain of stages for one partition: skip what is up to date, run the rest
(fused into one datatrove pass where the operators allow), count every ledger from disk.
Dagster-free: the factory turns the reports into Dagster events."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .execute import StageOutcome, run_fused, run_stage
from .io.parquet_store import list_parquet
from .io.schema import CORE_SCHEMA
from .layout import PipelineLayout, partition_folder
from .ledger import Ledger, count_ledger, load_record, save_record
from .operators import Operator, get_operator, is_per_document
from .operators.ingest import expand_input
from .spec import PipelineSpec, StageSpec
from .stage_run import StageRun


class PartitionInputMissing(RuntimeError):
    """The partition's raw file or upstream dataset is not there."""


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


def stage_run_for(ctx: PipelineContext, stage: StageSpec, partition: str, require_input: bool = True) -> tuple[StageRun, Operator]:
    """The run of one stage over one partition, and the operator to run (ingest takes its
    source's settings)."""
    spec, layout = ctx.spec, ctx.layout
    op = get_operator(stage.op)(stage.params)
    context: dict[str, Any] = {}
    if stage.op == "ingest":
        source_name, _, entry = partition.partition("/")
        try:
            source = spec.source(source_name)
        except KeyError as exc:
            raise PartitionInputMissing(f"partition {partition!r}: {exc.args[0]}") from None
        path = ctx.root / source.landing / entry
        if not path.exists():
            raise PartitionInputMissing(f"partition {partition!r}: {path} does not exist (was the landing file removed?)")
        input_files = expand_input(path)
        params = {**source.model_dump(include={"format", "text_field", "id_field", "domain", "domain_field"}), **stage.params}
        op = type(op)({**params, "source": source_name})
        context["source_root"] = str(path.parent)
        input_schema = CORE_SCHEMA
    else:
        upstream_dir = layout.data_dir(stage.input, partition)
        input_files = list_parquet(upstream_dir)
        if require_input and not input_files:
            raise PartitionInputMissing(f"{stage.name}[{partition}]: upstream {stage.input!r} has no data at {upstream_dir}")
        input_schema = None
        own = partition_folder(partition)
        context["peer_output_dirs"] = [
            layout.stage_root(stage.name) / "data" / p for p in layout.partitions_on_disk(stage.name) if p != own
        ]
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


def materialise_chain(ctx: PipelineContext, stages: list[StageSpec], partition: str, fuse: bool = True) -> list[StageReport]:
    """Materialise `stages` (a linear chain, each the input of the next) for one partition."""
    reports: list[StageReport] = []
    # 1. leading stages whose inputs and code are unchanged are skipped
    first_run = None
    for stage in stages:
        run, op = stage_run_for(ctx, stage, partition)
        record = load_record(run.output_dir)
        fp = fingerprint(f"{ctx.code_versions[stage.name]}|{op.code_version}", run.input_files)
        if not record or record.get("fingerprint") != fp:
            first_run = (run, op)
            break
        ledger = count_ledger(record["ledger"]["n_in"], run.output_dir, run.rejected_dir, run.quarantine_dir)
        meta = {**record.get("metadata_plain", {}), "llmdata/skipped": True}
        reports.append(StageReport(stage.name, run, ledger, record["data_version"], True, None, meta))
    if first_run is None:
        return reports
    rest = stages[len(reports):]
    # 2. the rest runs: fused where every operator is per-document, else stage by stage
    if fuse and len(rest) > 1 and all(is_per_document(get_operator(s.op)) for s in rest):
        # later stages' inputs are written by this very pass, so they need not exist yet
        runs = [first_run] + [stage_run_for(ctx, s, partition, require_input=False) for s in rest[1:]]
        done = list(zip(rest, runs, run_fused([(op, run) for run, op in runs])))
    else:
        done = []
        for i, stage in enumerate(rest):
            run, op = stage_run_for(ctx, stage, partition) if i else first_run  # built once its input exists
            done.append((stage, (run, op), run_stage(op, run)))
            if not done[-1][2].ledger.balanced:
                break  # a broken ledger stops the chain: nothing downstream of it is built
    for stage, (run, op), outcome in done:
        ledger = outcome.ledger
        fp = fingerprint(f"{ctx.code_versions[stage.name]}|{op.code_version}", run.input_files)
        data_version = hashlib.sha1(f"{fp}{json.dumps(ledger.to_dict(), sort_keys=True)}".encode()).hexdigest()[:16]
        plain = {k: v for k, v in outcome.metadata.items() if isinstance(v, (int, float, str, bool))}
        if ledger.balanced:  # an unbalanced stage is never recorded as done, so it re-runs next time
            save_record(run.output_dir, {"fingerprint": fp, "ledger": ledger.to_dict(), "data_version": data_version,
                                         "metadata_plain": plain})
        reports.append(StageReport(stage.name, run, ledger, data_version, False, outcome, outcome.metadata))
        if not ledger.balanced:
            break
    return reports
