"""datatrove pipeline steps that move documents between our Parquet datasets and datatrove.

A Document carries `id` and `text`; every other column of the row rides in `metadata`,
so a stage keeps all input columns and adds its own.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.parquet import ParquetWriter

from ..logs import progress_bar
from ..verdict import Quarantine, Verdict, route_of
from .parquet_store import IN_PROGRESS



def row_to_document(row: dict) -> Document:
    text = row.pop("text", None)
    doc_id = row.pop("id", None)
    return Document(text=text if text is not None else "", id=str(doc_id), metadata=row)


def document_to_row(_writer, doc: Document) -> dict:
    """datatrove writer adapter: back to a flat row (writer's schema picks the columns)."""
    return {"id": doc.id, "text": doc.text, **doc.metadata}


class ParquetDocReader(PipelineStep):
    """Reads the Parquet files of a dataset. Work is split by row group, not by file, so a
    partition that is one file still spreads over every task; the split is deterministic, so
    multi-pass steps (MinHash signatures, then its filter) see the same docs in the same order."""

    name = "📖 Parquet dataset"
    type = "📖 - READER"

    def __init__(self, files: list[str], progress_label: str = "docs"):
        super().__init__()
        self.files = list(files)
        self.progress_label = progress_label

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        mine = [(path, group, rows) for unit, (path, group, rows) in enumerate(self._row_groups()) if unit % world_size == rank]
        bar = progress_bar(self.progress_label, sum(rows for _, _, rows in mine), position=rank)
        open_path, pf = None, None
        for path, group, _ in mine:
            if path != open_path:
                open_path, pf = path, pq.ParquetFile(path)
            for row in pf.read_row_group(group).to_pylist():
                self.stat_update("documents")
                if bar is not None:
                    bar.update()
                yield row_to_document(row)
        if bar is not None:
            bar.close()

    def _row_groups(self):
        """(file, row group, rows) over every row group of every file, in a stable order (footers only)."""
        for path in self.files:
            meta = pq.read_metadata(path)
            for group in range(meta.num_row_groups):
                yield path, group, meta.row_group(group).num_rows


class DatasetWriter(ParquetWriter):
    """datatrove's ParquetWriter with a fixed schema, so every part file of a dataset agrees.
    Parts are written inside the dataset's hidden IN_PROGRESS folder and moved into the dataset
    only once closed complete: a killed task leaves no half-written part where readers look."""

    name = "💽 Parquet dataset"

    def __init__(self, folder: str, schema: pa.Schema):
        super().__init__(
            folder,
            output_filename=f"{IN_PROGRESS}/part-${{rank}}.parquet",
            adapter=document_to_row,
            schema=schema,
            batch_size=512,
            compression="zstd",
            use_content_defined_chunking=False,
        )

    def close_file(self, filename: str) -> None:
        super().close_file(filename)  # writes the footer and closes the file
        self.output_folder.mv(filename, posixpath.basename(filename))


def mark_dropped(
    doc: Document,
    stage: str,
    reason: str,
    kept_id: str | None = None,
    detail: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
) -> Document:
    doc.metadata["stage"] = stage
    doc.metadata["reason"] = reason
    doc.metadata["kept_id"] = kept_id
    doc.metadata["value"] = None if value is None else float(value)
    doc.metadata["threshold"] = None if threshold is None else float(threshold)
    if detail:
        meta = _meta_dict(doc.metadata.get("meta"))
        meta["error"] = detail
        doc.metadata["meta"] = json.dumps(meta, ensure_ascii=False)
    return doc


def _meta_dict(raw) -> dict:
    if isinstance(raw, dict):
        return dict(raw)
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        value = {"raw_meta": raw}
    return value if isinstance(value, dict) else {"raw_meta": value}


class RoutedStep(PipelineStep):
    """Runs one operator's document function (or batch function, with `batch_size`) and routes
    every document: kept (yielded), rejected with a reason, or quarantined with a reason. The one
    place where routing happens: nothing leaves this step unaccounted."""

    type = "🔀 - ROUTE"

    def __init__(
        self,
        stage: str,
        operator: str,
        fn: Callable,
        rejected: DatasetWriter,
        quarantine: DatasetWriter,
        batch_size: int | None = None,
    ):
        self.name = f"{operator} ({stage})"  # before super().__init__, which names the stats
        super().__init__()
        self.stage = stage
        self.operator = operator
        self.fn = fn
        self.batch_size = batch_size  # None: `fn` takes one document, else a list of them
        self.rejected = rejected
        self.quarantine = quarantine

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # a function may hold a resource for the whole run (a sandbox process, a model, a client)
        lifecycle = self.fn if hasattr(self.fn, "__enter__") else contextlib.nullcontext()
        with self.rejected as rejected, self.quarantine as quarantine, lifecycle:
            for batch in self._batches(data):
                for doc, verdict in zip(batch, self._verdicts(batch)):
                    outcome = route_of(verdict, self.operator)
                    if outcome is None:
                        self.stat_update("forwarded")
                        yield doc
                    elif isinstance(outcome, Quarantine):
                        self.stat_update(f"quarantined_{outcome.reason}")
                        quarantine.write(mark_dropped(doc, self.stage, outcome.reason, detail=outcome.detail), rank)
                    else:
                        self.stat_update(f"dropped_{outcome.reason}")
                        rejected.write(
                            mark_dropped(doc, self.stage, outcome.reason, value=outcome.value, threshold=outcome.threshold), rank
                        )
        for key, value in getattr(self.fn, "counters", {}).items():
            self.stat_update(key, value=value)

    def _batches(self, data: DocumentsPipeline) -> Iterator[list[Document]]:
        if self.batch_size is None:
            for doc in data:
                yield [doc]
            return
        batch: list[Document] = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _verdicts(self, batch: list[Document]) -> list[Verdict]:
        self.stat_update("total", value=len(batch))
        try:
            with self.track_time():
                verdicts = [self.fn(batch[0])] if self.batch_size is None else list(self.fn(batch))
        except Exception as exc:  # a doc (or batch) that breaks the operator is quarantined, not fatal
            return [Quarantine(f"error:{type(exc).__name__}", str(exc)[:500])] * len(batch)
        if len(verdicts) != len(batch):
            return [Quarantine("error:wrong_verdict_count", f"{len(verdicts)} verdicts for {len(batch)} documents")] * len(batch)
        return verdicts
