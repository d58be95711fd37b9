"""Pipelines that read another pipeline's stage (`source: {pipeline: web, stage: quality_filtered}`),
resolved across a project once every spec file has loaded on its own.

Each such source must name a loaded pipeline and one of its stages, and no chain of them may loop
back. A resolved pipeline learns the upstream's storage (where the engine finds the stage's
data), the columns that stage's dataset has (for the column-flow check a lone file cannot do)
and the pipeline at the head of its chain, whose partitions every pipeline of the chain shares."""

from __future__ import annotations

from pathlib import Path

from dagster_llmdata.errors import SpecError
from dagster_llmdata.operators import did_you_mean
from dagster_llmdata.spec.pipeline import PipelineSpec, ResolvedSource
from dagster_llmdata.spec.yaml_loader import line_of, parse_yaml


def resolve_pipeline_sources(pipelines: dict[str, PipelineSpec], files: dict[str, Path],
                             other_specs: dict[str, str] | None = None) -> dict[str, str]:
    """Resolve the `source:` of every pipeline in `pipelines` (name -> spec, read from `files`).
    Returns {pipeline: `file:line: field: message`} for each one that cannot be used: an unknown
    pipeline or stage, a cycle, columns a stage needs that the upstream stage lacks, or an
    upstream that is itself unusable. `other_specs`: names of loaded specs of other kinds (a
    mixture), so naming one says what it is."""
    problems: dict[str, str] = {}
    resolved: dict[str, ResolvedSource] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> ResolvedSource | None:
        spec = pipelines[name]
        source = spec.source
        if source is None or name in resolved or name in problems:
            return resolved.get(name)
        where = lambda field: f"{files[name]}:{_line(files[name], ['source', field])}: source.{field}"  # noqa: E731
        if source.pipeline in chain or source.pipeline == name:
            members = [*chain[chain.index(source.pipeline):], name] if source.pipeline in chain else [name]
            loop = " -> ".join([*members, members[0]])
            for member in members:  # each pipeline of the loop gets the error at its own `source:`
                problems[member] = (f"{files[member]}:{_line(files[member], ['source', 'pipeline'])}: source.pipeline: "
                                    f"pipelines read each other in a cycle ({loop}); a chain of sources must start at landing folders")
            return None
        upstream = pipelines.get(source.pipeline)
        if upstream is None:
            kind = (other_specs or {}).get(source.pipeline)
            problems[name] = f"{where('pipeline')}: " + (
                f"{source.pipeline!r} is a {kind}, not a pipeline" if kind else
                f"unknown pipeline {source.pipeline!r}{did_you_mean(source.pipeline, pipelines)}; loaded pipelines: "
                f"{', '.join(sorted(p for p in pipelines if p != name)) or 'none'}")
            return None
        stages = [s.name for s in upstream.stages]
        if source.stage not in stages:
            problems[name] = (f"{where('stage')}: pipeline {source.pipeline!r} has no stage {source.stage!r}"
                              f"{did_you_mean(source.stage, stages)}; its stages: {', '.join(stages)}")
            return None
        head = resolve(source.pipeline, (*chain, name)) if upstream.source is not None else None
        if upstream.source is not None and head is None:
            if name not in problems:  # a pipeline inside a cycle has its cycle error already
                problems[name] = (f"{where('pipeline')}: reads pipeline {source.pipeline!r}, which is not loaded "
                                  f"(see the problem reported for {files[source.pipeline]})")
            return None
        upstream_columns, _ = upstream.column_flow(head.columns if head else frozenset())
        columns = frozenset(upstream_columns[source.stage])
        missing = [c for c in ("id", "text") if c not in columns]
        if missing:
            problems[name] = f"{where('stage')}: {source.dataset} has no {' or '.join(missing)} column, so it holds no documents to read"
            return None
        _, flow = spec.column_flow(columns)
        if flow:
            index, message = flow[0]
            problems[name] = f"{files[name]}:{_line(files[name], ['stages', index])}: stages.{index}: {message}"
            return None
        resolved[name] = ResolvedSource(
            pipeline=source.pipeline, stage=source.stage, storage=upstream.storage,
            partitions_of=head.partitions_of if head else source.pipeline, columns=columns,
        )
        spec._resolved_source = resolved[name]
        return resolved[name]

    for name in sorted(pipelines):
        resolve(name, ())
    return problems


def _line(path: Path, loc: list) -> int:
    try:
        node, _ = parse_yaml(path, path.read_text(encoding="utf-8"))
    except (OSError, SpecError):  # the file loaded a moment ago; if it changed since, point at its top
        return 1
    return line_of(node, loc)
