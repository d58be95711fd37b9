"""PipelineSpec -> Dagster assets: one partitioned asset per stage (deps = lineage), a blocking
ledger check on each, a job per pipeline. The Dagster description of a stage comes from a
`StageTranslator`; an asset body only calls the engine and hands its reports to `StageEvents`.

Consecutive per-document stages are one execution unit (a multi-asset that runs them in a single
datatrove pass) while each stays its own asset with its own data, metadata and check.

No `from __future__ import annotations` here: Dagster reads the asset body's `context` annotation."""

import dataclasses
from pathlib import Path

import dagster as dg

from dagster_llmdata.defs.events import StageEvents, compared_with_events, later_partition_keys
from dagster_llmdata.defs.translator import StageTranslator, partitions_def_for
from dagster_llmdata.engine.materialise import PipelineContext, StageReport, materialise_chain, pipeline_context
from dagster_llmdata.engine.stages import Stage, execution_units
from dagster_llmdata.errors import PartitionInputMissing, PartitionLocked, StageFailed
from dagster_llmdata.spec.pipeline import PipelineSpec


def build_pipeline_assets(spec: PipelineSpec, root: Path, translator: StageTranslator | None = None) -> list[dg.AssetsDefinition]:
    """One multi-asset per execution unit of `spec`'s pipeline, described by `translator`
    (default: `StageTranslator(spec)`)."""
    ctx = pipeline_context(spec, root)
    translator = translator or StageTranslator(spec)
    return [_unit_asset(ctx, unit, translator) for unit in execution_units(spec, ctx.stages)]


def build_pipeline_job(spec: PipelineSpec):
    return dg.define_asset_job(
        f"{spec.pipeline}_job",
        selection=dg.AssetSelection.groups(spec.pipeline),
        partitions_def=partitions_def_for(spec),
        description=f"Materialise every stage of pipeline {spec.pipeline!r} for one source partition.",
    )


def _unit_asset(ctx: PipelineContext, unit: list[Stage], translator: StageTranslator) -> dg.AssetsDefinition:
    spec = ctx.spec
    name = f"{spec.pipeline}__{unit[0].name}" + (f"__to__{unit[-1].name}" if len(unit) > 1 else "")
    check_specs = [translator.get_ledger_check_spec(s) for s in unit] + [c for s in unit for c in translator.get_operator_check_specs(s)]
    # operators with runtime settings (a judge's endpoint) get them from the resource of that name
    runtime_keys = sorted({key for s in unit if (key := type(s.operator).runtime_key)})
    serial = [s for s in unit if s.serial]
    events = StageEvents(ctx, translator)

    @dg.multi_asset(
        name=name,
        specs=[translator.get_compared_spec(s) for s in serial] + [translator.get_asset_spec(s) for s in unit],
        check_specs=check_specs,
        partitions_def=translator.partitions_def,
        can_subset=True,
        required_resource_keys=set(runtime_keys),
        # stages fused into one step share it: the first pool named in the unit applies; a dedup stage
        # without one queues in its own pool (set its limit to 1); a stage-wide lock serialises it anyway
        pool=next((s.spec.pool for s in unit if s.spec.pool), None) or (f"{spec.pipeline}__{serial[0].name}" if serial else None),
    )
    def _unit(context: dg.AssetExecutionContext):
        partition = context.partition_key
        run_ctx = dataclasses.replace(ctx, runtime={key: getattr(context.resources, key).settings() for key in runtime_keys},
                                      run_id=context.run_id)
        selected = [s for s in unit if translator.get_asset_key(s) in context.selected_asset_keys]
        for chain in _contiguous(unit, selected):
            try:
                reports = materialise_chain(run_ctx, chain, partition, fuse=spec.executor.fuse)
            except (PartitionInputMissing, PartitionLocked, StageFailed) as exc:  # a clear message, not a stack trace
                raise dg.Failure(str(exc)) from None
            for i, report in enumerate(reports):
                _log(context, report, partition)
                yield from events.materializations(report, context.selected_asset_keys, last=i == len(reports) - 1)
                stage = ctx.stages[report.stage]
                if stage.serial and not report.skipped:
                    _mark_later_partitions(context, run_ctx, stage, partition, translator)
                yield from events.check_results(report)
                if not report.ledger.balanced:
                    return  # blocking: nothing after a broken ledger is materialised

    return _unit


def _mark_later_partitions(context: dg.AssetExecutionContext, ctx: PipelineContext, stage: Stage, partition: str,
                           translator: StageTranslator) -> None:
    """A serial stage's partition changed: each partition that landed after it and compared
    against it gets a new `compared_with` data version, so Dagster shows it stale."""
    keys = context.instance.get_dynamic_partitions(translator.partitions_def.name)
    later = later_partition_keys(ctx, stage, partition, keys)
    for event in compared_with_events(ctx, stage, later, f"partition {partition} that landed before it was re-materialised", translator):
        context.log_event(event)


def _contiguous(unit: list[Stage], selected: list[Stage]) -> list[list[Stage]]:
    """Selected stages of a unit as runs of neighbours (a subset may leave gaps)."""
    chains: list[list[Stage]] = []
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
