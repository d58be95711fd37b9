"""A pipeline materialised for a few partitions in an ephemeral Dagster instance: the real assets
and their blocking ledger checks, nothing written to the project's instance. The agent's dry run
verifies a proposal this way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_llmdata.defs.assets import build_pipeline_assets
from dagster_llmdata.defs.translator import LEDGER_CHECK
from dagster_llmdata.defs.resources import default_resources
from dagster_llmdata.io.logs import stderr_to
from dagster_llmdata.spec.pipeline import PipelineSpec


@dataclass
class TrialRun:
    """Per-stage counts summed over the partitions, and the first failures' messages."""

    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> n_in, n_out, rejected, quarantined, seconds, check
    errors: list[str] = field(default_factory=list)


def materialise_in_ephemeral_instance(spec: PipelineSpec, root: Path, partitions: list[str], log_path: Path,
                                      resources: dict | None = None) -> TrialRun:
    """Every stage of `spec` for each partition key, one run per partition (Dagster's output to `log_path`)."""
    assets = build_pipeline_assets(spec, root)
    out = TrialRun()
    stages = {s.name for s in spec.stages}
    with dg.DagsterInstance.ephemeral() as instance, stderr_to(log_path):
        instance.add_dynamic_partitions(f"{spec.pipeline}_files", partitions)
        for key in partitions:
            result = dg.materialize(assets, partition_key=key, instance=instance, resources=resources or default_resources(),
                                    raise_on_error=False)
            if not result.success:
                out.errors += [e.message or "" for e in result.all_events if e.is_failure][:3]
            _add_ledgers(out.ledger, result, stages)
    return out


def _add_ledgers(ledger: dict[str, dict[str, Any]], result: dg.ExecuteInProcessResult, stages: set[str]) -> None:
    """Per-stage counts summed over partitions (other assets a stage brings along are left out)."""
    for event in result.get_asset_materialization_events():
        stage = event.materialization.asset_key.path[-1]
        if stage not in stages:
            continue
        md = {k: v.value for k, v in event.materialization.metadata.items()}
        row = ledger.setdefault(stage, {"n_in": 0, "n_out": 0, "rejected": {}, "quarantined": {}, "seconds": 0.0,
                                        "ledger_check": True})
        row["n_in"] += int(md.get("n_in", 0))
        row["n_out"] += int(md.get("n_out", 0))
        row["seconds"] = round(row["seconds"] + float(md.get("runtime_s", 0.0)), 3)
        for k, v in md.items():
            if k.startswith("dropped/"):
                row["rejected"][k[8:]] = row["rejected"].get(k[8:], 0) + int(v)
            elif k.startswith("quarantined/"):
                row["quarantined"][k[12:]] = row["quarantined"].get(k[12:], 0) + int(v)
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == LEDGER_CHECK and evaluation.asset_key.path[-1] in stages:
            row = ledger.setdefault(evaluation.asset_key.path[-1], {"ledger_check": True})
            row["ledger_check"] = row.get("ledger_check", True) and evaluation.passed
