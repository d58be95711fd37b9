"""The one place where a document's fate is written down: kept (passed on), rejected with a reason,
or quarantined with a reason."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dagster_llmdata.io.docsteps import DatasetWriter
from dagster_llmdata.operators.verdict import Quarantine, Verdict, route_of


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
