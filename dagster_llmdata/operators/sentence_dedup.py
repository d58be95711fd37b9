"""sentence_dedup: C4-style removal of repeated three-sentence spans. The first doc holding a span
keeps it; later docs (in this partition, or in a partition that landed later) lose the span's
sentences. A doc left too short by the removal is dropped."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from dagster_llmdata.dedup.index import IndexEntry
from dagster_llmdata.io.docsteps import row_to_document
from dagster_llmdata.io.parquet_store import iter_batches, list_parquet
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.operators.dedup import READ_BATCH, DedupOperator, _texts

# a sentence ends at . ! ? (and closing quotes/brackets) before whitespace, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\s*\n\s*")
_SPACE = re.compile(r"\s+")


def split_sentences(text: str) -> list[tuple[str, str]]:
    """(sentence, the whitespace after it) pairs; joining them gives the text back."""
    out, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], m.group()))
            pos = m.end()
    if pos < len(text):
        out.append((text[pos:], ""))
    return out


def _sentence_hash(sentence: str) -> int:
    return xxhash.xxh3_64_intdigest(_SPACE.sub(" ", sentence).strip().lower().encode("utf-8", "surrogatepass"))


def span_hashes(sentences: list[str], span: int) -> np.ndarray:
    """One uint64 per run of `span` consecutive sentences (none if the doc has fewer)."""
    if len(sentences) < span:
        return np.empty(0, np.uint64)
    h = np.array([_sentence_hash(s) for s in sentences], dtype=np.uint64)
    acc = np.zeros(len(h) - span + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(span):
            acc = acc * np.uint64(0x9E3779B97F4A7C15) + h[k : len(h) - span + 1 + k]
    return acc


class SentenceDedupParams(OperatorParams):
    span_sentences: int = Field(3, ge=1, le=20, description="Sentences per span: a span seen in an earlier doc is removed from later ones (C4 uses 3).")
    min_doc_words: int = Field(50, ge=0, description="A doc with fewer words left after removing repeated spans is dropped (one that lost nothing is always kept).")
    across_partitions: bool = Field(True, description="Also remove spans kept by partitions of this stage that landed earlier (first landed keeps).")


class SentenceDedup(DedupOperator):
    name = "sentence_dedup"
    version = "1"
    description = (
        "C4-style dedup of repeated sentence spans (3 consecutive sentences by default): the first doc holding a "
        "span keeps it, later docs lose its sentences, within the partition and against the partitions that "
        "landed before it. A doc left with fewer than min_doc_words words is dropped. Adds `removed_sentences`; "
        "metadata counts removed spans, sentences and characters."
    )
    Params = SentenceDedupParams
    produces = {"removed_sentences": pa.int64()}
    index_kind = "sentence_spans"

    def _spans(self, text: str | None) -> np.ndarray:
        return span_hashes([s for s, _ in split_sentences(text or "")], self.params.span_sentences)

    def build_entry(self, kept_files: list[str]) -> dict[str, np.ndarray]:
        parts = [self._spans(t) for texts in _texts(kept_files) for t in texts]
        return {"spans": np.unique(np.concatenate(parts)) if parts else np.empty(0, np.uint64)}

    def run(self, run: StageRun) -> dict[str, Any]:
        span = self.params.span_sentences
        doc_spans = [self._spans(t) for texts in _texts(run.input_files) for t in texts]
        n = len(doc_spans)
        all_spans = np.concatenate(doc_spans) if doc_spans else np.empty(0, np.uint64)
        owner = np.repeat(np.arange(n), [len(s) for s in doc_spans])
        # a span is repeated where an earlier doc of this partition, or an earlier partition, has it
        order = np.lexsort((owner, all_spans))
        repeated = np.zeros(len(all_spans), dtype=bool)
        sorted_spans = all_spans[order]
        later = np.zeros(len(all_spans), dtype=bool)  # every occurrence after the first (C4: one survives)
        later[1:] = sorted_spans[1:] == sorted_spans[:-1]
        repeated[order[later]] = True
        index = self.index(run)
        compared = 0
        for entry in index.entries_before(run.context.partition) if index is not None else []:
            compared += 1
            repeated |= _in_entry(entry, all_spans)
        starts = np.concatenate(([0], np.cumsum([len(s) for s in doc_spans])))
        counts = {"removed_spans": int(repeated.sum()), "removed_sentences": 0, "removed_chars": 0, "docs_changed": 0}

        schema = run.output_schema(self.produced_columns())
        ordinal = 0
        kept_spans = []
        with run.kept_writer(schema) as kept_out, self.drops(run, schema) as drops:
            for batch in iter_batches(run.input_files, READ_BATCH):
                for row in batch.to_pylist():
                    hit = np.flatnonzero(repeated[starts[ordinal] : starts[ordinal + 1]])
                    drop = {i + k for i in hit for k in range(span)}
                    row["removed_sentences"] = len(drop)
                    if drop:
                        pieces = split_sentences(row.get("text") or "")
                        new_text = "".join(s + sep for i, (s, sep) in enumerate(pieces) if i not in drop).strip()
                        counts["removed_sentences"] += len(drop)
                        counts["removed_chars"] += len(row.get("text") or "") - len(new_text)
                        counts["docs_changed"] += 1
                        row["text"] = new_text
                    doc = row_to_document(row)
                    words = len(doc.text.split())
                    if drop and words < self.params.min_doc_words:
                        drops.reject(doc, "too_short_after_sentence_dedup", value=words, threshold=self.params.min_doc_words)
                    else:
                        kept_out.write(doc)
                        kept_spans.append(self._spans(doc.text))
                    ordinal += 1
        if index is not None:
            spans = np.unique(np.concatenate(kept_spans)) if kept_spans else np.empty(0, np.uint64)
            index.commit(run.context.partition, list_parquet(run.output_dir), {"spans": spans})
        return {**counts, "partitions_compared": compared}


def _in_entry(entry: IndexEntry, spans: np.ndarray) -> np.ndarray:
    known = entry.array("spans")
    if len(known) == 0 or len(spans) == 0:
        return np.zeros(len(spans), dtype=bool)
    pos = np.minimum(np.searchsorted(known, spans), len(known) - 1)
    return known[pos] == spans
