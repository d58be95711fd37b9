"""A stage's report -> Dagster events: its MaterializeResult with metadata (ledger, schema, column
lineage, samples, dropped examples, the operator's own), its ledger and operator check results,
and the `compared_with` materialisations that mark later partitions of a dedup stage stale."""

from __future__ import annotations

from collections.abc import Iterator, Set
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from dagster_llmdata.defs.translator import LEDGER_CHECK, StageTranslator
from dagster_llmdata.engine.materialise import PipelineContext, StageReport, stage_run_for
from dagster_llmdata.engine.report import drop_examples, explain_drop, funnel_markdown
from dagster_llmdata.engine.stages import Stage
from dagster_llmdata.io.layout import partition_folder
from dagster_llmdata.io.ledger import Ledger
from dagster_llmdata.io.parquet_store import list_parquet, read_sample
from dagster_llmdata.operators.metadata import Markdown, Table

SAMPLE_ROWS = 5
EXAMPLES_PER_REASON = 2


class StageEvents:
    """The events of one pipeline's reports, keyed as `translator` says."""

    def __init__(self, ctx: PipelineContext, translator: StageTranslator):
        self.ctx, self.translator = ctx, translator

    def materializations(self, report: StageReport, selected: Set[dg.AssetKey], last: bool) -> Iterator[dg.MaterializeResult]:
        """The stage's materialisation (after its `compared_with` companion's, so the stage's
        provenance records what it was compared against); `last`: the step's last stage, which
        shows the whole pipeline's funnel."""
        stage = self.ctx.stages[report.stage]
        upstream = self.translator.get_asset_key(stage.upstream) if stage.upstream is not None else (
            self.translator.get_source_key() if stage.is_source else None)
        metadata = stage_metadata(report, upstream)
        if last:
            metadata["pipeline_funnel"] = dg.MetadataValue.md(funnel_markdown(self.ctx.spec, self.ctx.root))
        compared = self.translator.get_compared_key(stage)
        if stage.serial and compared in selected:
            yield dg.MaterializeResult(asset_key=compared, data_version=dg.DataVersion(report.operator.compared_state(report.run) or "none"))
        yield dg.MaterializeResult(
            asset_key=self.translator.get_asset_key(stage), metadata=metadata, data_version=dg.DataVersion(report.data_version),
        )

    def check_results(self, report: StageReport) -> Iterator[dg.AssetCheckResult]:
        """The blocking ledger check, then the operator's own (warnings)."""
        key = self.translator.get_asset_key(self.ctx.stages[report.stage])
        yield ledger_check(key, report.ledger)
        op = report.operator
        for outcome in op.evaluate_checks(report.metadata) if type(op).checks else []:
            yield dg.AssetCheckResult(
                asset_key=key, check_name=outcome.name, passed=outcome.passed, severity=dg.AssetCheckSeverity.WARN,
                description=outcome.description, metadata=outcome.metadata,
            )


def later_partition_keys(ctx: PipelineContext, stage: Stage, partition: str, keys: list[str]) -> list[str]:
    """The partition keys (among `keys`) that a serial stage compared against `partition`."""
    run, op = stage_run_for(ctx, stage, partition, require_input=False)
    later = set(op.later_partitions(run))
    return [k for k in keys if k != partition and partition_folder(k) in later]


def compared_with_events(ctx: PipelineContext, stage: Stage, keys: list[str], why: str,
                         translator: StageTranslator | None = None) -> list[dg.AssetMaterialization]:
    """A `compared_with` materialisation per partition key, carrying what it compares against now
    as its data version: a partition whose version moved shows stale in Dagster."""
    translator = translator or StageTranslator(ctx.spec)
    events = []
    for key in keys:
        run, op = stage_run_for(ctx, stage, key, require_input=False)
        events.append(dg.AssetMaterialization(
            asset_key=translator.get_compared_key(stage), partition=key,
            tags={DATA_VERSION_TAG: op.compared_state(run) or "none"}, description=why,
        ))
    return events


def ledger_check(key: dg.AssetKey, ledger: Ledger) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=LEDGER_CHECK,
        passed=ledger.balanced,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if ledger.balanced else f"{ledger.missing} documents are unaccounted for",
        metadata={
            "n_in": ledger.n_in,
            "n_out": ledger.n_out,
            "n_rejected": ledger.n_rejected,
            "n_quarantined": ledger.n_quarantined,
            "unaccounted": ledger.missing,
        },
    )


def stage_metadata(report: StageReport, upstream: dg.AssetKey | None) -> dict[str, Any]:
    ledger, run = report.ledger, report.run
    files = list_parquet(run.output_dir)
    schema = pa.unify_schemas([pq.read_schema(f) for f in files]) if files else run.input_schema
    md: dict[str, Any] = {
        "dagster/row_count": ledger.n_out,
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema]),
        "n_in": ledger.n_in,
        "n_out": ledger.n_out,
        "n_rejected": ledger.n_rejected,
        "n_quarantined": ledger.n_quarantined,
        "data_path": dg.MetadataValue.path(str(run.output_dir)),
        "rejected_path": dg.MetadataValue.path(str(run.rejected_dir)),
    }
    for reason, n in ledger.rejected.items():
        md[f"dropped/{reason}"] = n
    for reason, n in ledger.quarantined.items():
        md[f"quarantined/{reason}"] = n
    if upstream is not None:
        inherited = set(run.input_schema.names)
        md["dagster/column_lineage"] = dg.TableColumnLineage(
            deps_by_column={
                # a column the stage adds is derived from the text it read
                f.name: [dg.TableColumnDep(asset_key=upstream, column_name=f.name if f.name in inherited else "text")]
                for f in schema
            }
        )
    if report.outcome is not None:
        md["runtime_s"] = round(report.outcome.seconds, 3)
        md["docs_per_s"] = round(report.outcome.docs_per_second, 1)
    sample = read_sample(files, SAMPLE_ROWS, columns=[c for c in ("id", "text", "domain", "lang") if c in schema.names])
    if sample:
        cols = list(sample[0])
        md["sample"] = dg.MetadataValue.table(
            records=[dg.TableRecord({c: _short(r[c]) for c in cols}) for r in sample],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in cols]),
        )
    for name, folder in (("rejected_examples", run.rejected_dir), ("quarantined_examples", run.quarantine_dir)):
        table = _examples_table(folder)
        if table is not None:
            md[name] = table
    for k, v in report.metadata.items():
        if isinstance(v, (int, float, str, bool)):
            md[k] = v
        elif isinstance(v, (dict, list)):
            md[k] = dg.MetadataValue.json(v)
        elif isinstance(v, Markdown):
            md[k] = dg.MetadataValue.md(v.text)
        elif isinstance(v, Table):
            md[k] = dg.MetadataValue.table(
                records=[dg.TableRecord({c: _short(r.get(c)) if isinstance(r.get(c), str) else r.get(c) for c in v.columns}) for r in v.rows],
                schema=dg.TableSchema(columns=[dg.TableColumn(c, _column_type(v.rows, c)) for c in v.columns]),
            )
    return md


def _examples_table(folder: Path) -> dg.TableMetadataValue | None:
    """A few dropped docs per reason with the value and threshold that failed: what a user tunes from."""
    _, examples = drop_examples(folder, EXAMPLES_PER_REASON)
    rows = [row for rows in examples.values() for row in rows]
    if not rows:
        return None
    columns = ["reason", "id", "why", "text"]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"reason": r["reason"], "id": _short(r.get("id"), 40), "why": explain_drop(r), "text": _short(r.get("text"))})
                 for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _column_type(rows: list[dict], column: str) -> str:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float" if any(isinstance(v, float) for v in values) else "int"
    return "string"


def _short(value: Any, n: int = 160) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"
