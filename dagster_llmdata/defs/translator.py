"""How a pipeline's stages appear in Dagster: one overridable object (like dagster-sling's
`DagsterSlingTranslator`) maps a resolved Stage to its asset key, deps, code version, kinds,
automation and checks. Asset bodies, events and companions all ask it, so renaming keys is
overriding `get_asset_key`."""

from __future__ import annotations

import warnings

import dagster as dg

from dagster_llmdata.engine.stages import Stage
from dagster_llmdata.spec.pipeline import PipelineSpec

# partitioned asset checks are a Dagster preview feature; they are what a per-partition ledger needs
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

LEDGER_CHECK = "ledger_balances"
COMPARED_SUFFIX = "__compared_with"


def partitions_def_for(spec: PipelineSpec) -> dg.DynamicPartitionsDefinition:
    """One dynamic partition per landed file or folder. A pipeline whose source is another
    pipeline's stage shares the partitions of the pipeline at the head of that chain (the same
    keys, so its partition P reads the upstream's P, and a key registered upstream is here too)."""
    return dg.DynamicPartitionsDefinition(name=f"{spec.partitions_pipeline}_files")


def asset_key(spec: PipelineSpec, stage: str) -> dg.AssetKey:
    """The default key of a stage, `<pipeline>/<stage>`."""
    return dg.AssetKey([spec.pipeline, stage])


class StageTranslator:
    """The Dagster description of `spec`'s stages; subclass and override a `get_*` method."""

    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.partitions_def = partitions_def_for(spec)

    def get_asset_key(self, stage: Stage) -> dg.AssetKey:
        return asset_key(self.spec, stage.name)

    def get_compared_key(self, stage: Stage) -> dg.AssetKey:
        """A serial (dedup) stage's companion asset: per partition, what that partition was
        compared against (the kept data of the partitions that landed before it). Its data version
        changes when one of those is rewritten or removed, which marks that partition stale."""
        key = self.get_asset_key(stage)
        return dg.AssetKey([*key.path[:-1], f"{key.path[-1]}{COMPARED_SUFFIX}"])

    def get_source_key(self) -> dg.AssetKey | None:
        """The asset of another pipeline's stage that the first stage reads (None: landing folders)."""
        source = self.spec.source
        return dg.AssetKey([source.pipeline, source.stage]) if source is not None else None

    def get_deps(self, stage: Stage) -> list[dg.AssetKey | dg.AssetDep]:
        deps: list[dg.AssetKey | dg.AssetDep] = [self.get_asset_key(stage.upstream)] if stage.upstream is not None else []
        if stage.is_source and self.get_source_key() is not None:
            # across the two groups, partition P reads the upstream's P (they share one partitions definition)
            deps.append(dg.AssetDep(self.get_source_key(), partition_mapping=dg.IdentityPartitionMapping()))
        if stage.serial:
            deps.append(self.get_compared_key(stage))
        return deps

    def get_group_name(self, stage: Stage) -> str:
        return self.spec.pipeline

    def get_code_version(self, stage: Stage) -> str:
        return stage.code_version

    def get_description(self, stage: Stage) -> str:
        op = stage.operator
        return stage.spec.description or f"`{op.name}`: {op.description}"

    def get_kinds(self, stage: Stage) -> set[str]:
        return set(stage.operator.kinds) | {"parquet"}

    def get_metadata(self, stage: Stage) -> dict:
        op = stage.operator
        return {"operator": op.name, "params": dg.MetadataValue.json(op.params.model_dump(mode="json"))}

    def get_automation_condition(self, stage: Stage) -> dg.AutomationCondition | None:
        """The pipeline's `automation:` as Dagster's condition, the same on every stage: eager runs
        a newly landed partition's first stage and then each stage once its upstream has updated."""
        auto = self.spec.automation
        if auto is None:
            return None
        if auto.condition == "eager":
            return dg.AutomationCondition.eager()
        return dg.AutomationCondition.on_cron(auto.cron, auto.timezone)

    def get_asset_spec(self, stage: Stage) -> dg.AssetSpec:
        return dg.AssetSpec(
            self.get_asset_key(stage),
            deps=self.get_deps(stage),
            group_name=self.get_group_name(stage),
            partitions_def=self.partitions_def,
            code_version=self.get_code_version(stage),
            description=self.get_description(stage),
            kinds=self.get_kinds(stage),
            metadata=self.get_metadata(stage),
            skippable=True,  # a stage after a broken ledger in a fused run is not materialised
            automation_condition=self.get_automation_condition(stage),
        )

    def get_compared_spec(self, stage: Stage) -> dg.AssetSpec:
        return dg.AssetSpec(
            self.get_compared_key(stage),
            group_name=self.get_group_name(stage),
            partitions_def=self.partitions_def,
            description=f"What `{stage.name}` compares each partition against: the kept data of the partitions that landed "
                        "before it (first landed keeps). A new data version here marks that partition stale.",
            skippable=True,
            automation_condition=self.get_automation_condition(stage),  # materialised with its stage, never on its own
        )

    def get_ledger_check_spec(self, stage: Stage) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            LEDGER_CHECK,
            asset=self.get_asset_key(stage),
            blocking=True,
            partitions_def=self.partitions_def,
            description="n_in = n_out + rejected (by reason) + quarantined, recounted from the files on disk",
        )

    def get_operator_check_specs(self, stage: Stage) -> list[dg.AssetCheckSpec]:
        """The operator's own checks: they warn, never stop what comes downstream."""
        return [
            dg.AssetCheckSpec(name, asset=self.get_asset_key(stage), blocking=False, partitions_def=self.partitions_def, description=text)
            for name, text in type(stage.operator).checks.items()
        ]
