"""Proposal files: assets/proposed/NAME.yaml (only a verified spec), NAME.report.md (profile,
graph, dry-run table, verdicts, repair history) and NAME.report.json; approving moves the spec
into assets/ and reloads the code location; rejecting keeps a record of why."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from dagster_llmdata.errors import SpecError
from dagster_llmdata.agent.reload import reload_code_location
from dagster_llmdata.agent.result import ProposalResult
from dagster_llmdata.agent.verify import verify_context, verify_static
from dagster_llmdata.spec.agent import AgentConfig

PROPOSED = Path("assets") / "proposed"
AGENT_SENSORS = Path("sensors") / "agent_pipelines.yaml"


def proposed_dir(root: Path) -> Path:
    return root / PROPOSED


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_proposal(result: ProposalResult, root: Path) -> None:
    folder = proposed_dir(root)
    report_json = folder / f"{result.name}.report.json"
    report_md = folder / f"{result.name}.report.md"
    spec_path = folder / f"{result.name}.yaml"
    if result.status == "verified" and result.approved is None:
        spec = result.rounds[-1].spec
        header = (f"# Proposed by the llmdata agent for: {result.intent.get('goal', '')[:200]!r}\n"
                  f"# Verified (dry run on a sample); report: {report_md.name}. Approve: llmdata agent approve {result.name}\n")
        _atomic_write(spec_path, header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        result.spec_path = str(spec_path)
    elif result.approved is None:
        spec_path.unlink(missing_ok=True)  # an older verified spec of the same name is no longer the proposal
    result.report_path = str(report_md)
    _atomic_write(report_json, json.dumps(result.to_dict(), indent=1, default=str))
    _atomic_write(report_md, report_markdown(result))


def report_markdown(result: ProposalResult) -> str:
    lines = [f"# Proposal `{result.name}`: **{result.status}**", "", f"Goal: {result.intent.get('goal')}", ""]
    if result.reasons:
        lines += ["## Why not verified", *[f"- {r}" for r in result.reasons], ""]
    lines += ["## Goals as read", *[f"- {n}" for n in result.goals.get("notes", [])], ""]
    if result.profile:
        lines += ["## Source profile", "", result.profile.summary(), ""]
    for rnd in result.rounds:
        lines += [f"## Round {rnd.round} ({rnd.planner})", ""]
        if isinstance(rnd.spec, dict) and isinstance(rnd.spec.get("stages"), list):
            graph = " -> ".join(f"{s.get('name')} ({s.get('op')})" for s in rnd.spec["stages"] if isinstance(s, dict))
            lines += [f"Graph: {graph}", ""]
        lines += [f"- plan: {n}" for n in rnd.notes]
        if rnd.dry_run:
            lines += ["", "| stage | in | kept | rejected | quarantined | s | ledger |", "| --- | --- | --- | --- | --- | --- | --- |"]
            for stage, row in rnd.dry_run.ledger.items():
                lines.append(f"| {stage} | {row.get('n_in')} | {row.get('n_out')} | {row.get('rejected')} | {row.get('quarantined')} "
                             f"| {row.get('seconds')} | {'ok' if row.get('ledger_check') else 'FAILED'} |")
            if rnd.dry_run.output_profile:
                lines += ["", f"Output profile: {rnd.dry_run.output_profile.summary()}"]
            lines += ["", f"Projection for the full source: {rnd.dry_run.projection}"]
        lines += ["", "| check | verdict | detail |", "| --- | --- | --- |"]
        for f in rnd.findings:
            lines.append(f"| {f.check}{' [' + f.stage + ']' if f.stage else ''} | {'pass' if f.passed else '**FAIL**'} | "
                         f"{str(f.detail).replace('|', '/').replace(chr(10), ' ')[:400]} |")
        lines.append("")
    if result.approved:
        lines += ["## Approval", "", f"```\n{json.dumps(result.approved, indent=1)}\n```"]
    return "\n".join(lines) + "\n"


def load_report(root: Path, name: str) -> dict[str, Any]:
    path = proposed_dir(root) / f"{name}.report.json"
    if not path.exists():
        known = sorted(p.name.removesuffix(".report.json") for p in proposed_dir(root).glob("*.report.json"))
        raise SpecError(f"no proposal {name!r} in {proposed_dir(root)} (proposals: {known or 'none'})")
    return json.loads(path.read_text())


def approve(name: str, root: Path, config: AgentConfig, reload: bool = True) -> dict[str, Any]:
    """Move a verified proposal into assets/ (re-checked against the project as it is now), add its
    landing sensor, and reload the code location. Returns what happened."""
    report = load_report(root, name)
    src = proposed_dir(root) / f"{name}.yaml"
    if report.get("approved") and not src.exists():
        raise SpecError(f"proposal {name!r} was already approved: {report['approved'].get('spec')}")
    if report.get("status") != "verified" or not src.exists():
        raise SpecError(f"proposal {name!r} is {report.get('status')}, not verified: only a verified proposal can be approved")
    spec_data = yaml.safe_load(src.read_text())
    spec, findings = verify_static(spec_data, verify_context(root, config))
    if spec is None:  # the project changed since (a pipeline of that name appeared, a path moved)
        raise SpecError(f"proposal {name!r} no longer passes the static checks: " + "; ".join(str(f) for f in findings if not f.passed))
    dest = root / "assets" / f"{name}.yaml"
    os.replace(src, dest)
    outcome: dict[str, Any] = {"spec": str(dest), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if config.add_landing_sensor:
        outcome["sensor"] = _add_landing_sensor(root, name)
    outcome["reload"] = reload_code_location(config.webserver_url, config.location_name) if reload else "skipped"
    report["approved"] = outcome
    _atomic_write(proposed_dir(root) / f"{name}.report.json", json.dumps(report, indent=1, default=str))
    return outcome


def _add_landing_sensor(root: Path, pipeline: str) -> str:
    path = root / AGENT_SENSORS
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    entries = (data or {}).get("sensors") or []
    if not any(e.get("pipeline") == pipeline for e in entries if isinstance(e, dict)):
        entries.append({"type": "landing", "pipeline": pipeline, "minimum_interval_seconds": 30, "default_status": "running"})
    _atomic_write(path, "# Landing sensors of pipelines approved from agent proposals (written by `llmdata agent approve`).\n"
                  + yaml.safe_dump({"sensors": entries}, sort_keys=False))
    return str(path)


def reject(name: str, root: Path, why: str) -> dict[str, Any]:
    """Set a proposal aside with the reason: the spec moves to assets/proposed/rejected/, the
    record (who-knows-why, when) is appended to its report."""
    report = load_report(root, name)
    folder = proposed_dir(root) / "rejected"
    folder.mkdir(parents=True, exist_ok=True)
    src = proposed_dir(root) / f"{name}.yaml"
    record = {"rejected_by": "user", "why": why, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if src.exists():
        os.replace(src, folder / f"{name}.yaml")
        record["spec"] = str(folder / f"{name}.yaml")
    report["status"] = "rejected_by_user"
    report.setdefault("user_rejections", []).append(record)
    for suffix in (".report.json", ".report.md"):
        p = proposed_dir(root) / f"{name}{suffix}"
        if p.exists():
            os.replace(p, folder / p.name)
    _atomic_write(folder / f"{name}.report.json", json.dumps(report, indent=1, default=str))
    with open(folder / f"{name}.report.md", "a", encoding="utf-8") as fh:
        fh.write(f"\n## Rejected by the user ({record['at']})\n\n{why}\n")
    return record


def list_proposals(root: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(proposed_dir(root).glob("*.report.json")):
        try:
            report = json.loads(path.read_text())
        except ValueError:
            continue
        rows.append({"name": report.get("name"), "status": report.get("status"), "reasons": report.get("reasons", [])[:3],
                     "spec_path": report.get("spec_path"), "approved": bool(report.get("approved"))})
    return rows
