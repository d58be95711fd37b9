"""What a source operator is: the first stage of a pipeline, which reads a source's raw files
instead of an upstream dataset. The engine, spec validation and standalone runs ask this class,
never an operator's name, what a source needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from dagster_llmdata.io.schema import CORE_SCHEMA
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import Operator


@dataclass(frozen=True)
class SourceRead:
    """What a source's run found: raw files have no row count, so the source counts its records
    (kept or quarantined) itself, and that count is the stage ledger's n_in."""

    records: int
    metadata: dict[str, Any] = field(default_factory=dict)


class SourceOperator(Operator):
    """An operator that reads raw input. Its Params have a `source` field (the source's name on
    every row). Subclasses implement `read`."""

    requires = ()
    # raw files have no schema of their own: a source run reads them as the core columns
    input_schema: ClassVar[pa.Schema] = CORE_SCHEMA
    # the source spec's reading settings this operator takes, for the params its stage leaves unset
    reading_settings: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def input_files(path: Path) -> list[str]:
        """The raw files of one partition: the file itself, or every file under a folder (hidden
        ones too, so the reader can count them; it reads none of them)."""
        if path.is_file():
            return [str(path)]
        if not path.exists():
            raise FileNotFoundError(f"input path does not exist: {path}")
        return sorted(str(p) for p in path.rglob("*") if not p.is_dir())

    def for_source(self, source: str, settings: Mapping[str, Any]) -> SourceOperator:
        """This operator reading `source`: the source's reading settings fill the params its stage
        left unset (what the stage sets wins), and `source` names the source."""
        given = self.params.model_dump(exclude_unset=True)
        unset = {k: v for k, v in settings.items() if k in self.reading_settings and k not in given}
        return type(self)({**given, **unset, "source": source}, runtime=self.runtime)

    def with_params(self, overrides: Mapping[str, Any]) -> SourceOperator:
        """This operator with `overrides` over all its params (a standalone run's ingest settings)."""
        return type(self)({**self.params.model_dump(), **overrides}, runtime=self.runtime)

    def read(self, run: StageRun) -> SourceRead:
        """Read `run.input_files` into the kept and quarantine folders, counting every record."""
        raise NotImplementedError(f"source operator {self.name} has no read")

    def run(self, run: StageRun) -> dict[str, Any]:
        return self.read(run).metadata
