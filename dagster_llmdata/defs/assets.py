"""PipelineSpec -> Dagster objects: one partitioned asset per stage (deps = lineage), a blocking
ledger check on each, a job per pipeline. The only module that turns specs into Dagster objects.

Consecutive per-document stages are one execution unit (a multi-asset that runs them in a single
datatrove pass) while each stays its own asset with its own data, metadata and check."""

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from dagster._core.definitions.data_version import DATA_VERSION_TAG

from dagster_llmdata.io.parquet_store import list_parquet, read_sample
from dagster_llmdata.io.layout import PipelineLayout, partition_folder
from dagster_llmdata.io.ledger import Ledger
from dagster_llmdata.operators.metadata import Markdown, Table
from dagster_llmdata.engine.materialise import PipelineContext, StageReport, materialise_chain, stage_run_for
from dagster_llmdata.errors import PartitionInputMissing, PartitionLocked, StageFailed
from dagster_llmdata.operators import get_operator, is_streaming
from dagster_llmdata.engine.report import drop_examples, explain_drop, funnel_markdown
from dagster_llmdata.spec.pipeline import PipelineSpec, StageSpec

# partitioned asset checks are a Dagster preview feature; they are what a per-partition ledger needs
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

LEDGER_CHECK = "ledger_balances"
SAMPLE_ROWS = 5
EXAMPLES_PER_REASON = 2


def partitions_def_for(spec: PipelineSpec) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{spec.pipeline}_files")


def asset_key(spec: PipelineSpec, stage: str) -> dg.AssetKey:
    return dg.AssetKey([spec.pipeline, stage])


def lineage_code_versions(spec: PipelineSpec) -> dict[str, str]:
    """A stage's code version = its operator version + params, chained with its upstream's: a spec
    change marks that stage and everything downstream of it stale in Dagster, nothing upstream."""
    versions: dict[str, str] = {}
    for stage in spec.stages:
        own = get_operator(stage.op)(stage.params).code_version
        upstream = versions.get(stage.input or "", "")
        versions[stage.name] = f"{own}.{hashlib.sha1(f'{upstream}|{own}'.encode()).hexdigest()[:8]}"
    return versions


def execution_units(spec: PipelineSpec) -> list[list[StageSpec]]:
    """Stages grouped into runs: a per-document stage joins the unit of its input when that is
    the unit's last stage and also per-document."""
    units: list[list[StageSpec]] = []
    for stage in spec.stages:
        last = units[-1][-1] if units else None
        if (
            spec.executor.fuse
            and last is not None
            and stage.input == last.name
            and is_streaming(get_operator(stage.op))
            and is_streaming(get_operator(last.op))
        ):
            units[-1].append(stage)
        else:
            units.append([stage])
    return units


def pipeline_context(spec: PipelineSpec, root: Path) -> PipelineContext:
    return PipelineContext(spec, root, PipelineLayout((root / spec.storage).resolve(), spec.pipeline), lineage_code_versions(spec))


def build_pipeline_assets(spec: PipelineSpec, root: Path) -> list[dg.AssetsDefinition]:
    ctx = pipeline_context(spec, root)
    partitions = partitions_def_for(spec)
    return [_unit_asset(ctx, unit, partitions) for unit in execution_units(spec)]


def build_pipeline_job(spec: PipelineSpec):
    return dg.define_asset_job(
        f"{spec.pipeline}_job",
        selection=dg.AssetSelection.groups(spec.pipeline),
        partitions_def=partitions_def_for(spec),
        description=f"Materialise every stage of pipeline {spec.pipeline!r} for one source partition.",
    )


def compared_key(spec: PipelineSpec, stage: str) -> dg.AssetKey:
    """A serial (dedup) stage's companion asset: per partition, what that partition was compared
    against (the kept data of the partitions that landed before it). Its data version changes
    when one of those is rewritten or removed, which marks that partition of the stage stale."""
    return dg.AssetKey([spec.pipeline, f"{stage}__compared_with"])


def _compared_spec(ctx: PipelineContext, stage: StageSpec, partitions: dg.DynamicPartitionsDefinition) -> dg.AssetSpec:
    return dg.AssetSpec(
        compared_key(ctx.spec, stage.name),
        group_name=ctx.spec.pipeline,
        partitions_def=partitions,
        description=f"What `{stage.name}` compares each partition against: the kept data of the partitions that landed "
                    "before it (first landed keeps). A new data version here marks that partition stale.",
        skippable=True,
        automation_condition=automation_condition(ctx.spec),  # materialised with its stage, never on its own
    )


def _asset_spec(ctx: PipelineContext, stage: StageSpec, partitions: dg.DynamicPartitionsDefinition) -> dg.AssetSpec:
    op = get_operator(stage.op)(stage.params)
    deps = [asset_key(ctx.spec, stage.input)] if stage.input else []
    if op.serial:
        deps.append(compared_key(ctx.spec, stage.name))
    return dg.AssetSpec(
        asset_key(ctx.spec, stage.name),
        deps=deps,
        group_name=ctx.spec.pipeline,
        partitions_def=partitions,
        code_version=ctx.code_versions[stage.name],
        description=stage.description or f"`{op.name}`: {op.description}",
        kinds=set(op.kinds) | {"parquet"},
        metadata={"operator": op.name, "params": dg.MetadataValue.json(op.params.model_dump(mode="json"))},
        skippable=True,  # a stage after a broken ledger in a fused run is not materialised
        automation_condition=automation_condition(ctx.spec),
    )


def automation_condition(spec: PipelineSpec) -> dg.AutomationCondition | None:
    """The pipeline's `automation:` as Dagster's condition, the same on every stage: eager runs a
    newly landed partition's first stage and then each stage once its upstream has updated."""
    auto = spec.automation
    if auto is None:
        return None
    if auto.condition == "eager":
        return dg.AutomationCondition.eager()
    return dg.AutomationCondition.on_cron(auto.cron, auto.timezone)


def _unit_asset(ctx: PipelineContext, unit: list[StageSpec], partitions: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    spec = ctx.spec
    name = f"{spec.pipeline}__{unit[0].name}" + (f"__to__{unit[-1].name}" if len(unit) > 1 else "")
    check_specs = [
        dg.AssetCheckSpec(
            LEDGER_CHECK,
            asset=asset_key(spec, s.name),
            blocking=True,
            partitions_def=partitions,
            description="n_in = n_out + rejected (by reason) + quarantined, recounted from the files on disk",
        )
        for s in unit
    ] + [
        # an operator's own checks warn; they never stop what comes downstream
        dg.AssetCheckSpec(name, asset=asset_key(spec, s.name), blocking=False, partitions_def=partitions, description=text)
        for s in unit for name, text in get_operator(s.op).checks.items()
    ]

    # operators with runtime settings (a judge's endpoint) get them from the resource of that name
    runtime_keys = sorted({key for s in unit if (key := get_operator(s.op).runtime_key)})
    serial = [s for s in unit if get_operator(s.op).serial]

    @dg.multi_asset(
        name=name,
        specs=[_compared_spec(ctx, s, partitions) for s in serial] + [_asset_spec(ctx, s, partitions) for s in unit],
        check_specs=check_specs,
        partitions_def=partitions,
        can_subset=True,
        required_resource_keys=set(runtime_keys),
        # stages fused into one step share it: the first pool named in the unit applies; a dedup stage
        # without one queues in its own pool (set its limit to 1); a stage-wide lock serialises it anyway
        pool=next((s.pool for s in unit if s.pool), None) or (f"{spec.pipeline}__{serial[0].name}" if serial else None),
    )
    def _unit(context: dg.AssetExecutionContext):
        partition = context.partition_key
        run_ctx = dataclasses.replace(ctx, runtime={key: getattr(context.resources, key).settings() for key in runtime_keys},
                                      run_id=context.run_id)
        selected = [s for s in unit if asset_key(spec, s.name) in context.selected_asset_keys]
        for chain in _contiguous(unit, selected):
            try:
                reports = materialise_chain(run_ctx, chain, partition, fuse=spec.executor.fuse)
            except (PartitionInputMissing, PartitionLocked, StageFailed) as exc:  # a clear message, not a stack trace
                raise dg.Failure(str(exc)) from None
            for i, report in enumerate(reports):
                _log(context, report, partition)
                key = asset_key(spec, report.stage)
                stage = spec.stage(report.stage)
                upstream = asset_key(spec, stage.input) if stage.input else None
                metadata = _metadata(report, upstream)
                if i == len(reports) - 1:  # the last stage of the step shows the whole pipeline
                    metadata["pipeline_funnel"] = dg.MetadataValue.md(funnel_markdown(spec, ctx.root))
                op = run_ctx.operator(stage)
                if op.serial and compared_key(spec, stage.name) in context.selected_asset_keys:
                    # first, so the stage's provenance records what it was compared against
                    yield dg.MaterializeResult(asset_key=compared_key(spec, stage.name),
                                               data_version=dg.DataVersion(op.compared_state(report.run) or "none"))
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata=metadata,
                    data_version=dg.DataVersion(report.data_version),
                )
                if op.serial and not report.skipped:
                    _mark_later_partitions(context, run_ctx, stage, partition, partitions)
                yield _ledger_check(key, report.ledger)
                checks = run_ctx.operator(stage).evaluate_checks(report.metadata) if get_operator(stage.op).checks else []
                for outcome in checks:
                    yield dg.AssetCheckResult(
                        asset_key=key, check_name=outcome.name, passed=outcome.passed, severity=dg.AssetCheckSeverity.WARN,
                        description=outcome.description, metadata=outcome.metadata,
                    )
                if not report.ledger.balanced:
                    return  # blocking: nothing after a broken ledger is materialised

    return _unit


def _mark_later_partitions(context: dg.AssetExecutionContext, ctx: PipelineContext, stage: StageSpec, partition: str,
                           partitions: dg.DynamicPartitionsDefinition) -> None:
    """A serial stage's partition changed: each partition that landed after it and compared
    against it gets a new `compared_with` data version, so Dagster shows it stale."""
    keys = context.instance.get_dynamic_partitions(partitions.name)
    later = later_partition_keys(ctx, stage, partition, keys)
    for event in compared_with_events(ctx, stage, later, f"partition {partition} that landed before it was re-materialised"):
        context.log_event(event)


def later_partition_keys(ctx: PipelineContext, stage: StageSpec, partition: str, keys: list[str]) -> list[str]:
    """The partition keys (among `keys`) that a serial stage compared against `partition`."""
    later = set(ctx.operator(stage).later_partitions(stage_run_for(ctx, stage, partition, require_input=False)[0]))
    return [k for k in keys if k != partition and partition_folder(k) in later]


def compared_with_events(ctx: PipelineContext, stage: StageSpec, keys: list[str], why: str) -> list[dg.AssetMaterialization]:
    """A `compared_with` materialisation per partition key, carrying what it compares against now
    as its data version: a partition whose version moved shows stale in Dagster."""
    events = []
    for key in keys:
        run, op = stage_run_for(ctx, stage, key, require_input=False)
        events.append(dg.AssetMaterialization(
            asset_key=compared_key(ctx.spec, stage.name), partition=key,
            tags={DATA_VERSION_TAG: op.compared_state(run) or "none"}, description=why,
        ))
    return events


def _contiguous(unit: list[StageSpec], selected: list[StageSpec]) -> list[list[StageSpec]]:
    """Selected stages of a unit as runs of neighbours (a subset may leave gaps)."""
    chains: list[list[StageSpec]] = []
    names = [s.name for s in unit]
    for stage in selected:
        if chains and names.index(stage.name) == names.index(chains[-1][-1].name) + 1:
            chains[-1].append(stage)
        else:
            chains.append([stage])
    return chains


def _log(context: dg.AssetExecutionContext, report: StageReport, partition: str) -> None:
    led = report.ledger
    if report.skipped:
        context.log.info(f"{report.stage}[{partition}] is up to date; skipped")
    else:
        context.log.info(
            f"{report.stage}[{partition}]: in {led.n_in}, kept {led.n_out}, rejected {led.rejected}, "
            f"quarantined {led.quarantined} in {report.outcome.seconds:.1f}s"
        )


def _ledger_check(key: dg.AssetKey, ledger: Ledger) -> dg.AssetCheckResult:
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


def _metadata(report: StageReport, upstream: dg.AssetKey | None) -> dict[str, Any]:
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
