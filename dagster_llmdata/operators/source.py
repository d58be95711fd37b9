"""What a source operator is: the first stage of a pipeline, which reads a source's raw files
instead of an upstream dataset. The engine, spec validation and standalone runs ask this class,
never an operator's name, what a source needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import json

import pyarrow as pa
from datatrove.data import Document

from dagster_llmdata.io.parquet_store import count_rows
from dagster_llmdata.io.schema import CORE_SCHEMA
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import DocFunction, Operator
from dagster_llmdata.operators.verdict import Quarantine, Verdict

# the meta key listing the pipeline stages a document was read from, nearest last
UPSTREAM_META = "upstream"


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
    # the params that still apply when the source is another pipeline's stage (its kept documents
    # are read as they are, so raw-file settings have nothing to act on)
    dataset_params: ClassVar[frozenset[str]] = frozenset()

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

    def read_input(self, run: StageRun) -> SourceRead:
        """Read the run's input: raw files (`read`), or the kept dataset of another pipeline's stage
        when the run's context names one (`read_stage_dataset`)."""
        return self.read_stage_dataset(run) if run.context.upstream_dataset else self.read(run)

    def read_stage_dataset(self, run: StageRun) -> SourceRead:
        """Another pipeline's kept documents (`run.input_files`, that stage's Parquet files of the
        partition) into the kept folder with every column as it was, ids included; each row's meta
        gains a hop under `upstream` (dataset, id, source) so it can be traced back. A row without
        usable text is quarantined, never lost (`dataset_verdict`)."""
        schema = run.output_schema(self.produced_columns())
        fn = UpstreamHop(run.context.upstream_dataset, self)
        stats = run.execute([run.reader(), self.routed_step(run, schema, fn), run.kept_writer(schema)])
        return SourceRead(count_rows(run.input_files), self.metadata_from_stats(stats) | {"llmdata/read_from": run.context.upstream_dataset})

    def dataset_verdict(self, doc: Document) -> Verdict:
        """What to do with one upstream document (kept by default); subclasses add their bounds."""
        if not isinstance(doc.text, str) or not doc.text.strip():
            return Quarantine("empty_text", "the upstream stage kept a document without text")
        return None

    def run(self, run: StageRun) -> dict[str, Any]:
        return self.read_input(run).metadata


class UpstreamHop(DocFunction):
    """Records where a document was read from in its meta (`upstream`: a list of hops, nearest
    last) and asks the source operator whether it can be used."""

    def __init__(self, dataset: str, source: SourceOperator):
        super().__init__()
        self.dataset, self.source = dataset, source

    def __call__(self, doc: Document) -> Verdict:
        raw = doc.metadata.get("meta")
        try:
            meta = json.loads(raw) if raw else {}
        except (TypeError, ValueError):
            meta = {"raw_meta": raw}
        if not isinstance(meta, dict):
            meta = {"raw_meta": meta}
        hops = meta.get(UPSTREAM_META) if isinstance(meta.get(UPSTREAM_META), list) else []
        meta[UPSTREAM_META] = [*hops, {"dataset": self.dataset, "id": doc.id, "source": doc.metadata.get("source")}]
        doc.metadata["meta"] = json.dumps(meta, ensure_ascii=False, default=str)
        return self.source.dataset_verdict(doc)
