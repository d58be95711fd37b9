"""A pipeline's stages resolved once: each spec stage with its operator, lineage and code version,
and the execution units they fuse into. Materialisation and the Dagster layer read these, so no
one looks an operator up by name again."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dagster_llmdata.operators import Operator, get_operator, is_streaming
from dagster_llmdata.operators.source import SourceOperator
from dagster_llmdata.spec.pipeline import PipelineSpec, StageSpec


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of a pipeline. `operator` holds the params only: runtime settings (a judge's
    endpoint, from a Dagster resource) are bound per run by `bind`."""

    spec: StageSpec
    operator: Operator
    # operator version + params, chained with the upstream's: a change marks this stage and
    # everything downstream of it stale in Dagster, nothing upstream
    code_version: str
    lineage: tuple[str, ...]  # <pipeline>/<stage> from the source to this stage
    upstream: Stage | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input(self) -> str | None:
        return self.spec.input

    @property
    def is_source(self) -> bool:
        return isinstance(self.operator, SourceOperator)

    @property
    def serial(self) -> bool:
        return type(self.operator).serial

    @property
    def streaming(self) -> bool:
        return is_streaming(type(self.operator))

    def bind(self, runtime: Mapping[str, Mapping[str, Any]]) -> Operator:
        """The operator to run, with the runtime settings supplied under its `runtime_key`."""
        cls = type(self.operator)
        settings = runtime.get(cls.runtime_key) if cls.runtime_key else None
        return cls(self.operator.params, runtime=settings)


def resolve_stages(spec: PipelineSpec) -> dict[str, Stage]:
    """Every stage of `spec` by name, in pipeline order."""
    stages: dict[str, Stage] = {}
    for s in spec.stages:
        op = get_operator(s.op)(s.params)
        upstream = stages.get(s.input) if s.input else None
        own = op.code_version
        chained = hashlib.sha1(f"{upstream.code_version if upstream else ''}|{own}".encode()).hexdigest()[:8]
        # a pipeline reading another's stage starts its lineage there
        start = (spec.source.dataset,) if spec.source is not None else ()
        lineage = (upstream.lineage if upstream else start) + (f"{spec.pipeline}/{s.name}",)
        stages[s.name] = Stage(s, op, f"{own}.{chained}", lineage, upstream)
    return stages


def execution_units(spec: PipelineSpec, stages: Mapping[str, Stage] | None = None) -> list[list[Stage]]:
    """Stages grouped into runs: a streaming stage joins the unit of its input when that is the
    unit's last stage and also streaming."""
    stages = stages if stages is not None else resolve_stages(spec)
    units: list[list[Stage]] = []
    for s in spec.stages:
        stage = stages[s.name]
        last = units[-1][-1] if units else None
        if spec.executor.fuse and last is not None and stage.input == last.name and stage.streaming and last.streaming:
            units[-1].append(stage)
        else:
            units.append([stage])
    return units
