"""The agent in Dagster: a sensor that picks up intents dropped in the inbox (and landing folders
no pipeline reads) and requests a run of the `agent_proposals` asset, which profiles, plans,
verifies and writes the proposal; its materialisation's metadata is the report."""


import json
import re
import time
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from dagster_llmdata.errors import IntentError
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.agent.agent import propose
from dagster_llmdata.agent.planners import make_planner
from dagster_llmdata.agent.proposal import list_proposals, report_markdown
from dagster_llmdata.spec.intent import load_intent
from dagster_llmdata.spec.project import agent_config
from dagster_llmdata.spec.project import read_project

PROPOSALS_ASSET = dg.AssetKey("agent_proposals")
ACCEPTED, REJECTED = "accepted", "rejected"


class ProposalRunConfig(dg.Config):
    intent_path: str = ""  # unset: the materialisation only lists the proposals


def build_agent(entry: AgentConfig, project, jobs: dict[str, Any]):
    asset = build_proposals_asset(entry, project.root)
    job = dg.define_asset_job(f"{entry.name}_job", selection=[PROPOSALS_ASSET], description="Profile, plan and verify one intent.")
    return dg.Definitions(assets=[asset], jobs=[job], sensors=[build_agent_sensor(entry, project, job)])


def build_proposals_asset(config: AgentConfig, root: Path) -> dg.AssetsDefinition:
    @dg.asset(key=PROPOSALS_ASSET, group_name="llmdata_agent", required_resource_keys={"judge"},
              description="Pipelines the agent proposed (assets/proposed/): each run profiles, plans and verifies one intent; "
                          "the metadata is its report. Approve with `llmdata agent approve NAME`.")
    def agent_proposals(context: dg.AssetExecutionContext, config: ProposalRunConfig) -> dg.MaterializeResult:
        md: dict[str, Any] = {}
        if config.intent_path:
            try:
                intent = load_intent(config.intent_path)
            except IntentError as exc:
                raise dg.Failure(str(exc)) from None
            planner = make_planner(config_for(root), runtime=context.resources.judge.settings())
            result = propose(intent, root, config_for(root), planner=planner)
            context.log.info(f"proposal {result.name}: {result.status} {result.reasons[:3]}")
            md = {"name": result.name, "status": result.status, "reasons": dg.MetadataValue.json(result.reasons),
                  "rounds": len(result.rounds), "seconds": round(result.seconds, 1),
                  "report": dg.MetadataValue.md(report_markdown(result)[:60_000]),
                  "dry_run_ledger": dg.MetadataValue.json(result.ledger),
                  "intent": dg.MetadataValue.path(config.intent_path)}
            if result.spec_path:
                md["spec_path"] = dg.MetadataValue.path(result.spec_path)
            if result.approved:
                md["approved"] = dg.MetadataValue.json(result.approved)
        rows = list_proposals(root)
        table = ["| name | status | approved | reasons |", "| --- | --- | --- | --- |"]
        table += [f"| {r['name']} | {r['status']} | {r['approved']} | {'; '.join(map(str, r['reasons']))[:200].replace('|', '/')} |" for r in rows]
        md["proposals"] = dg.MetadataValue.md("\n".join(table))
        md["n_proposals"] = len(rows)
        return dg.MaterializeResult(metadata=md)

    return agent_proposals


def config_for(root: Path) -> AgentConfig:
    """Re-read at run time, so an edited sensors/agent.yaml applies without a reload."""
    return agent_config(root)


def _claim(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{time.strftime('%Y%m%dT%H%M%S')}_{path.name}"
    path.replace(dest)
    return dest


def scan_inbox(inbox: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Intent files that parse (moved to accepted/) and the rest (moved to rejected/, with a
    `<file>.reason.txt` beside each)."""

    accepted, rejected = [], []
    inbox.mkdir(parents=True, exist_ok=True)
    for path in sorted(inbox.iterdir()):
        if path.name.startswith(".") or path.name in (ACCEPTED, REJECTED) or path.name.endswith((".tmp", ".part")):
            continue
        try:
            if not path.is_file() or path.is_symlink():
                raise IntentError(f"{path.name}: not a regular file (an intent is one YAML file)")
            if path.suffix.lower() not in (".yaml", ".yml"):
                raise IntentError(f"{path.name}: not a YAML file (.yaml / .yml)")
            load_intent(path)
        except IntentError as exc:
            dest = _claim(path, inbox / REJECTED)
            dest.with_name(dest.name + ".reason.txt").write_text(str(exc) + "\n")
            rejected.append((dest, str(exc)))
            continue
        accepted.append(_claim(path, inbox / ACCEPTED))
    return accepted, rejected


def uncovered_landing(root: Path, landing_root: Path, pipelines) -> list[Path]:
    """Non-empty sub-folders of `landing_root` that no pipeline's sources read."""
    covered = [(root / s.landing).resolve() for p in pipelines for s in p.sources]
    out = []
    for d in sorted(landing_root.iterdir()) if landing_root.is_dir() else []:
        if not d.is_dir() or d.name.startswith((".", "_")):
            continue
        r = d.resolve()
        if any(r == c or r.is_relative_to(c) or c.is_relative_to(r) for c in covered):
            continue
        if any(True for _ in d.iterdir()):
            out.append(d)
    return out


def build_agent_sensor(config: AgentConfig, project, job) -> dg.SensorDefinition:
    root = project.root

    @dg.sensor(
        name=config.name, job=job, minimum_interval_seconds=config.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if config.default_status == "running" else dg.DefaultSensorStatus.STOPPED,
        description=f"Intents dropped in {config.inbox}/ (and landing folders no pipeline reads) -> one proposal run each.",
    )
    def _agent(context: dg.SensorEvaluationContext):
        accepted, rejected = scan_inbox(root / config.inbox)
        for path, why in rejected:
            context.log.warning(f"intent {path.name} rejected: {why}")
        done = set(json.loads(context.cursor)) if context.cursor else set()
        if config.landing_root:
            for folder in uncovered_landing(root, root / config.landing_root, read_project(root).pipelines.values()):
                rel = str(folder.relative_to(root))
                if rel in done:
                    continue
                done.add(rel)
                name = re.sub(r"[^A-Za-z0-9_]", "_", folder.name).strip("_") or "landing"
                intent = {"goal": config.default_goal, "sources": [rel], "name": name if not name[0].isdigit() else f"l_{name}"}
                path = root / config.inbox / ACCEPTED / f"{time.strftime('%Y%m%dT%H%M%S')}_landing_{name}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"# written by the agent sensor: landing folder {rel} is read by no pipeline\n"
                                + yaml.safe_dump(intent, sort_keys=False))
                accepted.append(path)
        if not accepted:
            return dg.SkipReason(f"no intents in {config.inbox}" + (f"; rejected {len(rejected)}" if rejected else ""))
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=p.name, run_config={"ops": {"agent_proposals": {"config": {"intent_path": str(p)}}}},
                                        tags={"llmdata/intent": p.name}) for p in accepted],
            cursor=json.dumps(sorted(done)),
        )

    return _agent
