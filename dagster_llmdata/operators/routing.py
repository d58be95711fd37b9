"""The one place where a document's fate is written down: kept (passed on), rejected with a reason,
or quarantined with a reason. `DropRouter` writes every rejected and quarantined row, for the
routing step and for whole-dataset operators alike."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import pyarrow as pa
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dagster_llmdata.io.docsteps import row_to_document
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.verdict import Quarantine, Reject, Verdict, route_of

# `kept_partition` not given: the row's column stays as it was (only dedup records one)
_UNSET = object()


def mark_dropped(
    doc: Document,
    stage: str,
    reason: str,
    kept_id: str | None = None,
    detail: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
) -> Document:
    """Set the drop columns on `doc` (the router's job; no operator calls this)."""
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


class DropRouter:
    """Writes one stage's rejected and quarantined rows (the drop columns set on them) into the
    run's rejected / quarantine datasets; operators get one from `Operator.drops(run, schema)` and
    never open those writers themselves. Takes a datatrove Document or a row dict (the row is
    consumed). Use it as a context manager: entering opens both writers, leaving closes both.
    Picklable until entered, so a datatrove step can carry it to its tasks; `rank` names the part
    file a task writes."""

    def __init__(self, run: StageRun, schema: pa.Schema):
        self.stage = run.stage
        self._rejected = run.rejected_writer(schema)
        self._quarantined = run.quarantine_writer(schema)

    def __enter__(self) -> DropRouter:
        self._rejected.__enter__()
        self._quarantined.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:  # closed in the reverse order, as nested `with`s would
            self._quarantined.close()
        finally:
            self._rejected.close()

    def reject(self, doc: Document | dict, reason: str, kept_id: str | None = None, kept_partition: str | None | object = _UNSET,
               value: float | None = None, threshold: float | None = None, rank: int = 0) -> None:
        """Drop `doc` for `reason`: a duplicate names the doc kept in its place (`kept_id`, and for
        dedup across partitions `kept_partition`); a failed bound gives `value` and `threshold`."""
        doc = mark_dropped(_document(doc), self.stage, reason, kept_id=kept_id, value=value, threshold=threshold)
        if kept_partition is not _UNSET:
            doc.metadata["kept_partition"] = kept_partition
        self._rejected.write(doc, rank)

    def quarantine(self, doc: Document | dict, reason: str, detail: str | None = None, rank: int = 0) -> None:
        """Set `doc` aside undecided for `reason`; `detail` goes into its `meta.error`."""
        self._quarantined.write(mark_dropped(_document(doc), self.stage, reason, detail=detail), rank)

    def quarantine_error(self, doc: Document | dict, exc: BaseException, rank: int = 0) -> None:
        """A doc that broke the operator: quarantined as `error:<ExceptionType>`, not fatal."""
        self.route(doc, error_quarantine(exc), rank)

    def route(self, doc: Document | dict, outcome: Reject | Quarantine, rank: int = 0) -> None:
        """Write a verdict's outcome (see `operators.verdict.route_of`)."""
        if isinstance(outcome, Quarantine):
            self.quarantine(doc, outcome.reason, detail=outcome.detail, rank=rank)
        else:
            self.reject(doc, outcome.reason, value=outcome.value, threshold=outcome.threshold, rank=rank)


def error_quarantine(exc: BaseException) -> Quarantine:
    return Quarantine(f"error:{type(exc).__name__}", str(exc)[:500])


def _document(doc: Document | dict) -> Document:
    return doc if isinstance(doc, Document) else row_to_document(doc)


class RoutedStep(PipelineStep):
    """Runs one operator's document function (or batch function, with `batch_size`) and routes
    every document: kept (yielded), rejected with a reason, or quarantined with a reason. The one
    place where routing happens: nothing leaves this step unaccounted."""

    type = "🔀 - ROUTE"

    def __init__(self, operator: str, fn: Callable, drops: DropRouter, batch_size: int | None = None):
        self.name = f"{operator} ({drops.stage})"  # before super().__init__, which names the stats
        super().__init__()
        self.operator = operator
        self.fn = fn
        self.batch_size = batch_size  # None: `fn` takes one document, else a list of them
        self.drops = drops

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # a function may hold a resource for the whole run (a sandbox process, a model, a client)
        lifecycle = self.fn if hasattr(self.fn, "__enter__") else contextlib.nullcontext()
        with self.drops as drops, lifecycle:
            for batch in self._batches(data):
                for doc, verdict in zip(batch, self._verdicts(batch)):
                    outcome = route_of(verdict, self.operator)
                    if outcome is None:
                        self.stat_update("forwarded")
                        yield doc
                        continue
                    kind = "quarantined" if isinstance(outcome, Quarantine) else "dropped"
                    self.stat_update(f"{kind}_{outcome.reason}")
                    drops.route(doc, outcome, rank)
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
            return [error_quarantine(exc)] * len(batch)
        if len(verdicts) != len(batch):
            return [Quarantine("error:wrong_verdict_count", f"{len(verdicts)} verdicts for {len(batch)} documents")] * len(batch)
        return verdicts
