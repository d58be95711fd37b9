"""Dynamic verification: the proposed spec runs on the sources' sample in an ephemeral Dagster
instance (the real assets and their blocking ledger checks), then the output is re-profiled and
held against the goal, the survival / drop-rate bounds and the cost limit."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_llmdata.defs.assets import build_pipeline_assets
from dagster_llmdata.defs.translator import LEDGER_CHECK
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.io.layout import PipelineLayout
from dagster_llmdata.io.logs import stderr_to
from dagster_llmdata.defs.resources import default_resources
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.config import ExecutorConfig
from dagster_llmdata.spec.intent import Goals
from dagster_llmdata.agent.planner import Finding
from dagster_llmdata.agent.profile import Profile, profile_dataset
from dagster_llmdata.agent.sample import SourceSample
from dagster_llmdata.spec.agent import Bounds


DEDUP_OPS = {"exact_dedup", "minhash_dedup"}




@dataclass
class DryRun:
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> n_in, n_out, rejected, quarantined, seconds, check
    output_profile: Profile | None = None
    findings: list[Finding] = field(default_factory=list)
    projection: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    data_dir: str = ""

    def to_dict(self) -> dict:
        return {"ledger": self.ledger, "output_profile": self.output_profile.to_dict() if self.output_profile else None,
                "findings": [f.to_dict() for f in self.findings], "projection": self.projection,
                "seconds": round(self.seconds, 2), "data_dir": self.data_dir}


def dry_spec(spec: PipelineSpec, folder: Path, samples: dict[str, SourceSample]) -> PipelineSpec:
    """The spec pointed at the samples and a scratch storage, one task in-process."""
    sources = [s.model_copy(update={"landing": str(samples[s.name].folder.parent)}) for s in spec.sources]
    return spec.model_copy(update={"storage": str(folder / "data"), "sources": sources,
                                   "executor": ExecutorConfig(tasks=1, workers=1, fuse=spec.executor.fuse)})


def run_dry(spec: PipelineSpec, folder: Path, samples: dict[str, SourceSample], goals: Goals, input_profile: Profile,
            bounds: Bounds, resources: dict | None = None) -> DryRun:
    """Materialise every stage for each source's sample partition and judge the outcome."""
    start = time.perf_counter()
    data = folder / "data"
    shutil.rmtree(data, ignore_errors=True)
    test_spec = dry_spec(spec, folder, samples)
    out = DryRun(data_dir=str(data / spec.pipeline))
    partitions = [f"{s.name}/{samples[s.name].folder.name}" for s in spec.sources]
    assets = build_pipeline_assets(test_spec, folder)
    errors: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance, stderr_to(folder / "dry_run.log"):
        instance.add_dynamic_partitions(f"{spec.pipeline}_files", partitions)
        for key in partitions:
            result = dg.materialize(assets, partition_key=key, instance=instance, resources=resources or default_resources(),
                                    raise_on_error=False)
            if not result.success:
                errors += [e.message or "" for e in result.all_events if e.is_failure][:3]
            _add_ledgers(out.ledger, result, {s.name for s in spec.stages})
    out.seconds = time.perf_counter() - start
    if errors:
        out.findings.append(Finding("dry_run_failed", False, " | ".join(errors)[:2000], phase="dynamic"))
    layout = PipelineLayout(data, spec.pipeline)
    last = spec.stages[-1].name
    files = [f for key in partitions for f in list_parquet(layout.data_dir(last, key))]
    out.output_profile = profile_dataset(files)
    out.findings += judge(spec, out, goals, input_profile, bounds, samples)
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


def judge(spec: PipelineSpec, run: DryRun, goals: Goals, before: Profile, bounds: Bounds, samples: dict[str, SourceSample]) -> list[Finding]:
    """Every dynamic check, passed or not."""
    f: list[Finding] = []
    ops = {s.name: s.op for s in spec.stages}

    def check(name: str, ok: bool, detail: str, stage: str | None = None) -> None:
        f.append(Finding(name, bool(ok), detail, stage=stage, op=ops.get(stage) if stage else None, phase="dynamic"))

    missing = [s.name for s in spec.stages if s.name not in run.ledger]
    check("all_stages_ran", not missing, f"stages without a materialisation: {missing}" if missing else "every stage materialised")
    bad = [name for name, row in run.ledger.items() if not row.get("ledger_check", False)]
    check("ledger_checks", not bad, f"ledger check failed for {bad}" if bad else "n_in = n_out + rejected + quarantined for every stage")
    first, last = spec.stages[0].name, spec.stages[-1].name
    n_in = run.ledger.get(first, {}).get("n_in", 0)
    n_out = run.ledger.get(last, {}).get("n_out", 0)
    survival = n_out / n_in if n_in else 0.0
    # dedup drops what is duplicated, however much that is: only filters are held to the drop bound
    drops = {name: sum(row.get("rejected", {}).values()) / row["n_in"] for name, row in run.ledger.items()
             if row.get("n_in") and ops.get(name) not in DEDUP_OPS}
    worst = max(drops, key=drops.get) if drops else None
    check("survival", survival >= bounds.min_survival and n_out > 0,
          f"{n_out}/{n_in} kept ({survival:.1%}; bound {bounds.min_survival:.0%})", stage=None if survival >= bounds.min_survival else worst)
    if f[-1].passed is False:
        f[-1].check = "survival_too_low"
    for name, share in drops.items():
        if share > bounds.max_stage_drop:
            check("stage_drop_too_high", False, f"rejected {share:.0%} of its input (bound {bounds.max_stage_drop:.0%}): "
                  f"{run.ledger[name]['rejected']}", stage=name)
    check("stage_drops", all(s <= bounds.max_stage_drop for s in drops.values()),
          ", ".join(f"{k} {v:.0%}" for k, v in drops.items()))
    out = run.output_profile or Profile()
    if out.n_docs:
        if goals.no_pii:
            check("goal_pii" if out.pii_doc_share <= bounds.max_pii_doc_share else "goal_pii_left", out.pii_doc_share <= bounds.max_pii_doc_share,
                  f"docs with personal data: {before.pii_doc_share:.1%} in, {out.pii_doc_share:.1%} out")
        if goals.dedup:
            ok = out.exact_dup_rate <= bounds.max_exact_dup_rate
            check("goal_dups" if ok else "goal_dups_left", ok, f"exact duplicates {before.exact_dup_rate:.1%} in, {out.exact_dup_rate:.1%} out")
            ok = out.near_dup_rate <= bounds.max_near_dup_rate
            check("goal_near_dups" if ok else "goal_near_dups_left", ok,
                  f"near duplicates {before.near_dup_rate:.1%} in, {out.near_dup_rate:.1%} out (bound {bounds.max_near_dup_rate:.0%})")
        if goals.languages and not goals.code:
            share = sum(out.languages.get(lang, 0.0) for lang in goals.languages)
            check("goal_language" if share >= bounds.min_language_share else "goal_language_share", share >= bounds.min_language_share,
                  f"{share:.1%} of output docs in {goals.languages} (bound {bounds.min_language_share:.0%})")
        if goals.no_markup:
            ok = out.markup_share <= bounds.max_markup_share
            check("goal_markup" if ok else "goal_markup_left", ok, f"markup {before.markup_share:.1%} in, {out.markup_share:.1%} out")
        if goals.code:
            kept = out.code_share / before.code_share if before.code_share else 1.0
            check("goal_code_kept", kept >= bounds.min_code_retention,
                  f"code share {before.code_share:.0%} in, {out.code_share:.0%} out")
    # cost: measured seconds per record, scaled to the records of the whole source
    seconds = sum(row.get("seconds", 0.0) for row in run.ledger.values())
    total_records = sum(s.records_total for s in samples.values()) or n_in
    per_doc = seconds / n_in if n_in else 0.0
    projected_s = per_doc * total_records
    run.projection = {"records_total": total_records, "seconds_per_doc": round(per_doc, 6), "projected_cpu_s": round(projected_s, 1),
                      "projected_usd": round(projected_s / 3600 * bounds.cpu_hour_usd, 4), "projected_kept": int(survival * total_records)}
    if goals.max_cost is not None:
        ok = run.projection["projected_usd"] <= goals.max_cost
        costly = max((n for n in run.ledger if n != first), key=lambda n: run.ledger[n].get("seconds", 0), default=None)
        check("cost" if ok else "cost_too_high", ok, f"projected ${run.projection['projected_usd']} (limit ${goals.max_cost})",
              stage=None if ok else costly)
    if goals.target_size is not None:
        ok = run.projection["projected_kept"] >= goals.target_size
        check("target_size", ok, f"projected {run.projection['projected_kept']} docs kept of {total_records} (target {goals.target_size})")
    return f
