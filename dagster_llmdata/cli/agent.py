"""`llmdata agent propose | approve | reject | list`."""

from __future__ import annotations

import json
from pathlib import Path

from dagster_llmdata.errors import IntentError
from dagster_llmdata.cli.common import project_root


def _root(args) -> Path:
    return project_root(args.project)


def _config(root: Path, args):
    from dagster_llmdata.spec.project import agent_config

    config = agent_config(root)
    planner = config.planner
    updates = {k: v for k, v in {"kind": getattr(args, "planner", None), "model": getattr(args, "model", None),
                                 "base_url": getattr(args, "base_url", None)}.items() if v}
    if updates:
        config = config.model_copy(update={"planner": planner.model_copy(update=updates)})
    return config


def cmd_propose(args) -> int:
    from dagster_llmdata.agent.agent import propose
    from dagster_llmdata.spec.intent import load_intent
    from dagster_llmdata.agent.planners import make_planner

    root = _root(args)
    try:
        intent = load_intent(args.intent)
    except IntentError as exc:
        print(json.dumps({"name": None, "status": "rejected", "reasons": [str(exc)], "spec_path": None, "report_path": None,
                          "dry_run_dir": None, "ledger": {}}, indent=1))
        return 1
    config = _config(root, args)
    if args.auto_approve:
        config = config.model_copy(update={"auto_approve": True})
    result = propose(intent, root, config, planner=make_planner(config))
    print(json.dumps(result.summary(), indent=1, default=str))
    return {"verified": 0, "rejected": 1}.get(result.status, 2)


def cmd_approve(args) -> int:
    from dagster_llmdata.agent.proposal import approve

    root = _root(args)
    config = _config(root, args)
    if args.url:
        config = config.model_copy(update={"webserver_url": args.url})
    outcome = approve(args.name, root, config, reload=not args.no_reload)
    print(json.dumps(outcome, indent=1))
    return 0


def cmd_reject(args) -> int:
    from dagster_llmdata.agent.proposal import reject

    print(json.dumps(reject(args.name, _root(args), args.why), indent=1))
    return 0


def cmd_list(args) -> int:
    from dagster_llmdata.agent.proposal import list_proposals

    print(json.dumps(list_proposals(_root(args)), indent=1))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("agent", help="propose pipelines from intents, approve or reject them")
    agent = p.add_subparsers(dest="agent_command", required=True)

    q = agent.add_parser("propose", help="profile, plan and verify a pipeline for an intent; prints one JSON object")
    q.add_argument("intent", help="intent YAML: goal, sources, optional constraints and name")
    q.add_argument("--project", default=".")
    q.add_argument("--planner", choices=["deterministic", "llm"], default=None, help="override sensors/agent.yaml's planner")
    q.add_argument("--model", default=None, help="model name for the llm planner")
    q.add_argument("--base-url", default=None, help="OpenAI-compatible server for the llm planner")
    q.add_argument("--auto-approve", action="store_true", help="approve at once when it verifies")
    q.set_defaults(func=cmd_propose)

    q = agent.add_parser("approve", help="move a verified proposal into assets/ and reload the code location")
    q.add_argument("name")
    q.add_argument("--project", default=".")
    q.add_argument("--url", default=None, help="Dagster webserver to reload (default: sensors/agent.yaml's webserver_url)")
    q.add_argument("--no-reload", action="store_true", help="only move the spec")
    q.set_defaults(func=cmd_approve)

    q = agent.add_parser("reject", help="set a proposal aside, keeping the reason")
    q.add_argument("name")
    q.add_argument("--why", required=True)
    q.add_argument("--project", default=".")
    q.set_defaults(func=cmd_reject)

    q = agent.add_parser("list", help="proposals and their status")
    q.add_argument("--project", default=".")
    q.set_defaults(func=cmd_list)


