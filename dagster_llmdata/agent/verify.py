"""Verification of a proposed spec. Static: shape and size, names, known operators, param types
and ranges, column flow, paths only under the allowed roots (symlinks resolved), no clash with an
existing pipeline. Dynamic (dry_run.py): the spec runs on a sample in an ephemeral Dagster
instance and its output is re-profiled against the goal. A spec is data: nothing in it runs
before it passes the static checks."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dagster_llmdata.operators import REGISTRY, describe_params_error, did_you_mean, get_operator
from dagster_llmdata.spec.pipeline import NAME, PipelineSpec
from dagster_llmdata.agent.planner import Finding
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.spec.project import read_project

SHELL_META = re.compile(r"[;&|`$<>(){}\[\]*?!~\\'\"\n\r\t\x00]")
MAX_SPEC_BYTES = 64 * 1024
MAX_STRING = 4096
MAX_LIST = 256
MAX_NUMBER = 10**12
MAX_DEPTH = 8
MAX_STAGES = 40
MAX_WORKERS = 64
TOP_LEVEL = set(PipelineSpec.model_fields)
# params that name files: they must stay under the allowed roots (`spacy:` tokenizers name no file)
PATH_PARAMS = {"model_path", "tokenizer", "cache_dir", "classifier_path", "uri", "index_uri"}


@dataclass
class VerifyContext:
    root: Path
    allowed_roots: list[Path]
    existing_names: dict[str, str] = field(default_factory=dict)  # name -> file that holds it

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.allowed_roots = [r.resolve() for r in self.allowed_roots] or [self.root]


def check_path(value: Any, ctx: VerifyContext, what: str, scan_symlinks: bool = False) -> Finding | None:
    """None when `value` is a path inside an allowed root (after resolving symlinks), else why not."""
    if not isinstance(value, str) or not value.strip():
        return Finding("path_invalid", False, f"{what}: {value!r} is not a path", phase="security")
    if SHELL_META.search(value):
        return Finding("shell_metacharacters", False, f"{what}: {value!r} holds shell metacharacters", phase="security")
    if "://" in value:
        return Finding("path_escape", False, f"{what}: {value!r} is a remote URI; a proposal may only name local paths "
                       "under the allowed roots", phase="security")
    path = Path(value)
    if ".." in path.parts:
        return Finding("path_escape", False, f"{what}: {value!r} climbs out with '..'", phase="security")
    full = path if path.is_absolute() else ctx.root / path
    try:
        resolved = full.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return Finding("path_escape", False, f"{what}: {value!r} cannot be resolved ({exc})", phase="security")
    if not any(resolved.is_relative_to(r) for r in ctx.allowed_roots):
        return Finding("path_escape", False, f"{what}: {value!r} resolves to {resolved}, outside the allowed roots "
                       f"{[str(r) for r in ctx.allowed_roots]}", phase="security")
    if scan_symlinks and resolved.is_dir():
        for i, p in enumerate(resolved.rglob("*")):
            if i > 100_000:
                break
            if p.is_symlink():
                try:
                    target = p.resolve()
                except (OSError, RuntimeError):
                    return Finding("path_escape", False, f"{what}: symlink {p} cannot be resolved", phase="security")
                if not any(target.is_relative_to(r) for r in ctx.allowed_roots):
                    return Finding("path_escape", False, f"{what}: symlink {p} points outside the allowed roots (to {target})",
                                   phase="security")
    return None


def _walk_sizes(value: Any, where: str, depth: int = 0) -> list[Finding]:
    """Enormous or deeply nested values anywhere in the spec."""
    if depth > MAX_DEPTH:
        return [Finding("enormous_param", False, f"{where}: nested deeper than {MAX_DEPTH}", phase="security")]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value) or abs(value) > MAX_NUMBER:
            return [Finding("enormous_param", False, f"{where}: {value!r} is beyond ±{MAX_NUMBER:.0e}", phase="security")]
        return []
    if isinstance(value, str):
        return [Finding("enormous_param", False, f"{where}: a string of {len(value)} characters (at most {MAX_STRING})",
                        phase="security")] if len(value) > MAX_STRING else []
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            return [Finding("enormous_param", False, f"{where}: a list of {len(value)} items (at most {MAX_LIST})", phase="security")]
        return [f for i, v in enumerate(value) for f in _walk_sizes(v, f"{where}[{i}]", depth + 1)]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _walk_sizes(v, f"{where}.{k}", depth + 1)]
    return [Finding("spec_shape", False, f"{where}: {type(value).__name__} is not a YAML value", phase="security")]


def _check_name(value: Any, what: str) -> Finding | None:
    if not isinstance(value, str):
        return Finding("name_invalid", False, f"{what}: {value!r} is not a name")
    if SHELL_META.search(value):
        return Finding("shell_metacharacters", False, f"{what}: {value!r} holds shell metacharacters", phase="security")
    if not re.fullmatch(NAME, value) or len(value) > 64:
        return Finding("name_invalid", False, f"{what}: {value!r} is not a name (letters, digits, underscores; at most 64)")
    return None


def verify_static(data: Any, ctx: VerifyContext) -> tuple[PipelineSpec | None, list[Finding]]:
    """Every static check; the spec only when all of them pass."""
    failed: list[Finding] = []
    if not isinstance(data, dict):
        return None, [Finding("spec_shape", False, f"a spec is a mapping, got {type(data).__name__}")]
    try:
        size = len(json.dumps(data, default=str))
    except (TypeError, ValueError) as exc:
        return None, [Finding("spec_shape", False, f"not plain data: {exc}")]
    if size > MAX_SPEC_BYTES:
        return None, [Finding("enormous_param", False, f"the spec is {size} bytes (at most {MAX_SPEC_BYTES})", phase="security")]
    failed += _walk_sizes(data, "spec")
    unknown = set(data) - TOP_LEVEL
    if unknown:
        failed.append(Finding("spec_shape", False, f"unknown top-level keys {sorted(unknown)}; known: {sorted(TOP_LEVEL)}"))
    name = data.get("pipeline")
    if (f := _check_name(name, "pipeline")) is not None:
        failed.append(f)
    elif name in ctx.existing_names:
        failed.append(Finding("name_clash", False, f"pipeline name {name!r} is already used by {ctx.existing_names[name]}",
                              phase="security"))
    if "storage" in data and (f := check_path(data["storage"], ctx, "storage")):
        failed.append(f)
    executor = data.get("executor") or {}
    if isinstance(executor, dict) and isinstance(executor.get("workers"), int) and executor["workers"] > MAX_WORKERS:
        failed.append(Finding("enormous_param", False, f"executor.workers {executor['workers']} (at most {MAX_WORKERS})", phase="security"))
    sources = data.get("sources")
    for i, src in enumerate(sources if isinstance(sources, list) else []):
        if not isinstance(src, dict):
            continue
        if (f := _check_name(src.get("name"), f"sources[{i}].name")) is not None:
            failed.append(f)
        if (f := check_path(src.get("landing"), ctx, f"sources[{i}].landing", scan_symlinks=True)) is not None:
            failed.append(f)
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        failed.append(Finding("spec_shape", False, "`stages` must be a non-empty list"))
        stages = []
    if len(stages) > MAX_STAGES:
        failed.append(Finding("enormous_param", False, f"{len(stages)} stages (at most {MAX_STAGES})", phase="security"))
    for i, stage in enumerate(stages):
        failed += _check_stage(i, stage, ctx)
    if failed:
        return None, failed
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:  # graph and column flow (stage names, inputs, required columns)
        return None, [Finding("column_flow" if "needs columns" in str(exc) else "spec_invalid", False,
                              "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))]
    if (f := _column_params_flow(spec)) is not None:
        return None, [f]
    return spec, [Finding(c, True, "ok") for c in ("spec_shape", "sizes", "names", "name_clash", "paths", "operators", "params", "column_flow")]


def _column_params_flow(spec: PipelineSpec) -> Finding | None:
    """A param that names a column (select's `column`) must name one its input has: the spec's
    own flow check knows only each operator's fixed `requires`."""
    columns: dict[str, set[str]] = {}
    for stage in spec.stages:
        op = get_operator(stage.op)(stage.params)
        have = columns.get(stage.input, set()) if stage.input else set()
        column = stage.params.get("column")
        if isinstance(column, str) and column not in have:
            return Finding("column_flow", False, f"stage {stage.name!r} selects on column {column!r}, which {stage.input!r} "
                           f"does not have (it has {sorted(have)})", stage=stage.name, op=stage.op)
        columns[stage.name] = have | set(op.produced_columns())
    return None


def _check_stage(i: int, stage: Any, ctx: VerifyContext) -> list[Finding]:
    where = f"stages[{i}]"
    if not isinstance(stage, dict):
        return [Finding("spec_shape", False, f"{where}: a stage is a mapping with name, op, params")]
    out = []
    label = stage.get("name") if isinstance(stage.get("name"), str) else where
    if (f := _check_name(stage.get("name"), f"{where}.name")) is not None:
        out.append(f)
    op = stage.get("op")
    if not isinstance(op, str) or op not in REGISTRY:
        shown = op if isinstance(op, str) and not SHELL_META.search(op) else repr(op)[:80]
        hint = did_you_mean(op, REGISTRY) if isinstance(op, str) else ""
        out.append(Finding("unknown_operator", False, f"{where}: operator {shown!r} is not registered{hint}; known: {', '.join(sorted(REGISTRY))}",
                           stage=label, phase="security"))
        return out
    params = stage.get("params", {})
    if not isinstance(params, dict):
        return out + [Finding("param_invalid", False, f"{where}: params must be a mapping", stage=label, op=op)]
    cls = REGISTRY[op]
    try:
        cls.Params.model_validate(params)
    except ValidationError as exc:
        out.append(Finding("param_invalid", False, describe_params_error(cls, exc).replace("\n", "; "), stage=label, op=op))
    for key, value in params.items():
        if key in PATH_PARAMS and isinstance(value, str) and not value.startswith("spacy:"):
            if (f := check_path(value, ctx, f"{where}.params.{key}")) is not None:
                f.stage, f.op = label, op
                out.append(f)
    if stage.get("input") is not None and (f := _check_name(stage.get("input"), f"{where}.input")) is not None:
        out.append(f)
    extra = set(stage) - {"name", "op", "params", "input", "description"}
    if extra:
        out.append(Finding("spec_shape", False, f"{where}: unknown keys {sorted(extra)}", stage=label))
    return out


def verify_context(root: Path, config: AgentConfig) -> VerifyContext:
    project = read_project(root)
    existing = {name: str(path.relative_to(project.root)) for name, path in project.files.items()}
    for problem in project.problems:  # a broken spec still holds its file's name
        if problem.path.parent == project.root / "assets":
            existing.setdefault(problem.path.stem, str(problem.path.relative_to(project.root)))
    roots = [Path(r) if Path(r).is_absolute() else root / r for r in config.allowed_roots]
    return VerifyContext(root=root, allowed_roots=roots, existing_names=existing)
