"""One proposal, end to end: intent -> sample + profile -> plan -> verify (static, then a dry
run) with bounded repair rounds -> proposal files. Dagster-free apart from the dry run's
ephemeral instance; the sensor and the CLI both call `propose`."""

from __future__ import annotations

import re
import shutil
import time
import traceback
from pathlib import Path

from dagster_llmdata.errors import PlannerError, SpecError
from dagster_llmdata.io.logs import stderr_to
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.agent.dry_run import run_dry
from dagster_llmdata.spec.intent import Intent, default_name, read_goals
from dagster_llmdata.agent.planner import DeterministicPlanner, Finding, Plan, Planner, PlanRequest
from dagster_llmdata.agent.profile import profile_samples
from dagster_llmdata.agent.sample import SourceSample, sample_source
from dagster_llmdata.agent.proposal import approve, write_proposal
from dagster_llmdata.agent.result import ProposalResult, Round
from dagster_llmdata.agent.verify import VerifyContext, check_path, verify_context, verify_static

DRY_RUNS = Path("data") / "agent" / "dry_runs"
INFRA_FAILURES = {"planner_failed", "dry_run_error"}








def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def source_specs(intent: Intent, ctx: VerifyContext) -> tuple[list[dict], list[Finding]]:
    """Each intent source as a pipeline source (a landing folder), or why it is refused."""
    specs, problems, names = [], [], set()
    for i, raw in enumerate(intent.sources):
        problem = check_path(raw, ctx, f"sources[{i}]", scan_symlinks=True)
        if problem is not None:
            problems.append(problem)
            continue
        path = (ctx.root / raw).resolve() if not Path(raw).is_absolute() else Path(raw).resolve()
        if not path.exists():
            problems.append(Finding("source_missing", False, f"sources[{i}]: {raw} does not exist"))
            continue
        landing = path if path.is_dir() else path.parent  # a landing source is a folder; each entry a partition
        base = re.sub(r"[^A-Za-z0-9_]", "_", landing.name).strip("_") or "source"
        name = _unique(base if not base[0].isdigit() else f"s_{base}", names)
        names.add(name)
        rel = landing.relative_to(ctx.root) if landing.is_relative_to(ctx.root) else landing
        specs.append({"name": name, "landing": str(rel)})
    return specs, problems


def propose(intent: Intent, root: Path, config: AgentConfig, planner: Planner | None = None,
            resources: dict | None = None) -> ProposalResult:
    """Plan, verify and write one proposal; never raises for a bad intent or plan (the result
    says why), only for a bug."""
    start = time.perf_counter()
    root = root.resolve()
    planner = planner or DeterministicPlanner()
    ctx = verify_context(root, config)
    goals = read_goals(intent)
    taken = set(ctx.existing_names)
    name = intent.name or _unique(default_name(intent), taken)
    result = ProposalResult(name=name, status="failed", intent=intent.model_dump(), goals=goals.to_dict())
    if intent.name and intent.name in taken:
        result.status = "rejected"
        result.reasons = [f"name_clash: pipeline name {intent.name!r} is already used by {ctx.existing_names[intent.name]}"]
        return _finish(result, root, start)
    sources, problems = source_specs(intent, ctx)
    if problems:
        result.status = "rejected"
        result.reasons = [str(p) for p in problems]
        return _finish(result, root, start)
    folder = root / DRY_RUNS / name
    shutil.rmtree(folder, ignore_errors=True)
    result.dry_run_dir = str(folder / "data" / name)
    samples: dict[str, SourceSample] = {}
    per_source = max(1, config.sample_docs // len(sources))
    try:
        for s in sources:
            samples[s["name"]] = sample_source(root / s["landing"], folder / "landing" / s["name"] / "sample", per_source)
        with stderr_to(folder / "profile.log"):
            result.profile = profile_samples(list(samples.values()), folder)
    except Exception as exc:  # unreadable sources: the proposal fails with the reason, not a trace
        result.reasons = [f"profiling failed: {type(exc).__name__}: {exc}"]
        return _finish(result, root, start)
    history: list[list[Finding]] = []
    for n in range(config.max_repair_rounds + 1):
        request = PlanRequest(intent=intent, goals=goals, profile=result.profile, name=name, sources=sources,
                              storage="data/pipelines", round=n, history=history)
        rnd = _verify_round(planner, request, ctx, folder, samples, config, resources)
        result.rounds.append(rnd)
        if not rnd.failed:
            result.status = "verified"
            result.reasons = []
            result.name = rnd.spec["pipeline"]  # a model may name it (checked above); the files follow the spec
            break
        # the agent could not finish (no answer from the planner, a crash) vs. a plan that failed a check
        result.status = "failed" if all(f.check in INFRA_FAILURES for f in rnd.failed) else "rejected"
        result.reasons = [str(f) for f in rnd.failed]
        history.append(rnd.failed)
    return _finish(result, root, start, config)


def _verify_round(planner: Planner, request: PlanRequest, ctx: VerifyContext, folder: Path, samples: dict[str, SourceSample],
                  config: AgentConfig, resources: dict | None) -> Round:
    rnd = Round(round=request.round, planner=planner.name)
    try:
        plan: Plan = planner.plan(request)
    except PlannerError as exc:
        rnd.findings = [Finding("planner_failed", False, str(exc))]
        return rnd
    rnd.spec, rnd.notes, rnd.raw_answer = plan.spec, plan.notes, plan.raw
    if plan.problem:
        rnd.findings = [Finding("answer_malformed", False, plan.problem)]
        return rnd
    spec, rnd.findings = verify_static(plan.spec, ctx)
    if spec is None:
        return rnd
    # the dry run reads only the agent's own samples: a spec whose sources are not the intent's is refused
    wanted = {s["name"]: (ctx.root / s["landing"]).resolve() for s in request.sources}
    given = {s.name: (ctx.root / s.landing).resolve() for s in spec.sources}
    if given != wanted:
        rnd.findings.append(Finding("sources_changed", False, f"the spec reads {sorted((k, str(v)) for k, v in given.items())}, "
                                    f"not the intent's sources {sorted((k, str(v)) for k, v in wanted.items())}", phase="security"))
        return rnd
    try:
        rnd.dry_run = run_dry(spec, folder, samples, request.goals, request.profile, config.bounds, resources)
    except Exception as exc:  # a bug or an environment problem: recorded, the proposal fails
        rnd.findings.append(Finding("dry_run_error", False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", phase="dynamic"))
        return rnd
    rnd.findings += rnd.dry_run.findings
    return rnd


def _finish(result: ProposalResult, root: Path, start: float, config: AgentConfig | None = None) -> ProposalResult:
    result.seconds = time.perf_counter() - start
    write_proposal(result, root)
    if config is not None and config.auto_approve and result.status == "verified":
        try:
            result.approved = approve(result.name, root, config)
        except SpecError as exc:  # the project changed under the run (a pipeline of that name appeared)
            result.approved = {"error": str(exc)}
        write_proposal(result, root)
    return result
