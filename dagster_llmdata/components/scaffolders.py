"""`dg scaffold defs dagster_llmdata.<Kind>Component <path>`: a starter defs.yaml per spec kind that
loads as written (the mixture's reads the first pipeline scaffolded next to it), for a user to edit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

PIPELINE_TYPE_SUFFIX = ".PipelineComponent"


def spec_name(target: Path, default: str) -> str:
    """A spec name (letters, digits, underscores; no leading digit) from the scaffolded folder's name."""
    folder = target.parent if target.suffix else target  # appending to an existing defs.yaml
    name = re.sub(r"[^A-Za-z0-9_]", "_", folder.name).strip("_") or default
    return f"_{name}" if name[0].isdigit() else name


def starter_pipeline(name: str) -> dict[str, Any]:
    return {
        "pipeline": name,
        "description": f"Documents dropped in landing/{name}/, cleaned and exported as training shards.",
        "storage": "data",
        "sources": [{"name": "web", "landing": f"landing/{name}"}],
        "stages": [
            {"name": "raw", "op": "ingest"},
            {"name": "normalized", "op": "normalize"},
            {"name": "deduplicated", "op": "exact_dedup"},
            {"name": "quality_filtered", "op": "gopher_quality"},
            {"name": "shards", "op": "export_shards"},
        ],
        "landing_sensor": {"minimum_interval_seconds": 30},
    }


def nearby_pipeline_dataset(target: Path) -> str | None:
    """`<pipeline>/<last stage>` of a PipelineComponent defs.yaml beside the target, if any."""
    folder = target.parent if target.suffix else target
    for path in sorted({*folder.glob("defs.yaml"), *folder.parent.glob("*/defs.yaml")}):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue
        for doc in docs:
            attributes = doc.get("attributes") if isinstance(doc, dict) else None
            if str(doc.get("type", "")).endswith(PIPELINE_TYPE_SUFFIX) and isinstance(attributes, dict):
                stages = attributes.get("stages") or []
                if attributes.get("pipeline") and stages and isinstance(stages[-1], dict) and stages[-1].get("name"):
                    return f"{attributes['pipeline']}/{stages[-1]['name']}"
    return None


def starter_mixture(name: str, dataset: str | None) -> dict[str, Any]:
    return {
        "mixture": name,
        "description": f"A training mixture over {dataset}." if dataset else
                       "A training mixture: replace the input with the `<pipeline>/<stage>` datasets to mix.",
        "inputs": [{"dataset": dataset or "my_pipeline/shards", "domain_column": "domain", "tokens_column": "n_tokens"}],
        "token_budget": 1_000_000,
        "algorithm": {"name": "static"},
        "storage": "data/mixtures",
    }


def starter_agent(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "inbox": "agent/inbox",
        "planner": {"kind": "deterministic"},
        "sample_docs": 1000,
        "max_repair_rounds": 2,
        "auto_approve": False,
        "minimum_interval_seconds": 30,
    }


class PipelineScaffolder(dg.Scaffolder):
    """A five-stage pipeline reading landing/<name>/, with its landing sensor."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, starter_pipeline(spec_name(request.target_path, "pipeline")))


class MixtureScaffolder(dg.Scaffolder):
    """A static mixture over a pipeline scaffolded beside it (or a placeholder input to replace)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        target = request.target_path
        dg.scaffold_component(request, starter_mixture(spec_name(target, "mixture"), nearby_pipeline_dataset(target)))


class AgentScaffolder(dg.Scaffolder):
    """The agent with its default inbox and the deterministic planner."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, starter_agent(spec_name(request.target_path, "agent")))
