"""ingest: raw files (JSONL, JSONL.gz/.zst, Parquet, CSV/TSV, WARC, .txt/.md/.html files, or a
folder of any of these) -> core columns.

Every record that was there becomes a row or a quarantine entry with a reason; `n_in` counts
records found, not records read.

Files. A partition is one file or a folder. In a folder every regular file is accounted for:
data files (jsonl/json/ndjson, csv/tsv, optionally .gz/.zst; parquet; warc/arc) are read as
containers, .txt/.md/.rst/.html/.htm files are one document each, and any other file is one
`unsupported_file_type` entry (its path in meta). Hidden files (a path part starting with '.')
are skipped and counted in the `skipped_hidden_files` stat.

Quarantine reasons: `malformed_json`, `not_an_object`, `malformed_csv`, `undecodable_bytes` (bytes
not in the encoding, a binary Parquet text that is not UTF-8, an HTML body no charset decodes),
`invalid_unicode` (a JSON escape that is no character, e.g. a lone "\\ud800", in any field),
`missing_text_field` (absent or null), `text_not_a_string`, `empty_text`, `too_large` (over
`max_doc_bytes`; `original_bytes` in meta; never read whole), `unsupported_file_type`,
`unsupported_content_type` (a WARC response that is not HTML or plain text), `http_error` (a
non-2xx WARC response; `status` in meta), `unreadable_row_group` (one entry per row the Parquet
footer says a damaged row group held), `unreadable_file` (a damaged footer, or a truncated
gzip/zstd/WARC: what came before the break is kept).

Ids. `id` is the source id printed as a string (JSON text for numbers, booleans, objects) when the
record has one and no earlier record of the same reader task (a file; the files of a folder that
one task reads) printed the same; 7 and "7" print the same. A repeat gets `<source id>#<position>`,
or a hash of source, file and position when that is taken too, and keeps its original value, JSON
type included, in meta `source_id`; repeats are counted in the `ids_repeated` stat. A record with
no id gets the hash of source, file and position. Seen ids are kept as 64-bit hashes."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import xxhash
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from pydantic import Field, field_validator

from dagster_llmdata.operators.routing import DropRouter
from dagster_llmdata.io.raw_readers import QUARANTINE_PREVIEW_CHARS, SURROGATES, RawReaders, RawRecord, detect_format, scrub
from dagster_llmdata.io.schema import CORE_SCHEMA
from dagster_llmdata.io.logs import progress_bar
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.source import SourceOperator, SourceRead
from dagster_llmdata.operators.verdict import Quarantine, Verdict
from dagster_llmdata.config import OperatorParams

Format = Literal["auto", "jsonl", "parquet", "csv", "text", "warc"]
READER_STATS = ("skipped_hidden_files", "ids_repeated", "warc_non_response_records")


class IngestParams(OperatorParams):
    format: Format = Field(
        "auto",
        description="Reader for every file of the partition; `auto` picks one by file name and quarantines "
        "files of unknown type as `unsupported_file_type`.",
    )
    text_field: str = Field("text", min_length=1, description="Field (JSONL), column (Parquet, CSV) holding the document text.")
    id_field: str | None = Field(
        "id", min_length=1,
        description="Field holding the source id (kept as the row id unless repeated); null: ids are hashes of source, file and position.",
    )
    domain: str | None = Field(None, description="Domain for records without one (default: the source name).")
    domain_field: str | None = Field("domain", min_length=1, description="Field holding a record's domain; null: ignore.")
    source: str | None = Field(None, description="Source name on every row (default: the input folder's name).")
    max_doc_bytes: int = Field(
        10_000_000, ge=1,
        description="Documents whose text is over this many UTF-8 bytes are quarantined as `too_large`; "
        "raw records are never read into memory much beyond it.",
    )
    encoding: str = Field("utf-8", min_length=1, description="Encoding of JSONL, CSV and text files (a Python codec name).")

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:  # a clear validation error, not a failed run
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


class RawSourceReader(PipelineStep):
    """Reads raw files, yields core-column Documents and quarantines what it cannot use."""

    name = "📥 ingest"
    type = "📖 - READER"

    def __init__(self, files: list[str], root: str, params: IngestParams, drops: DropRouter):
        super().__init__()
        self.files, self.root, self.params, self.drops = files, root, params, drops

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        p = self.params
        readers = RawReaders(p.text_field, p.encoding, p.max_doc_bytes, self.stat_update)
        seen: set[int] = set()  # 64-bit hashes of the ids given out by this task
        bar = progress_bar(f"{self.drops.stage} (records)", position=rank)
        with self.drops as drops, bar if bar is not None else contextlib.nullcontext():
            for path in map(Path, self.files[rank::world_size]):
                rel = os.path.relpath(path, self.root) if self.root else path.name
                if any(part.startswith(".") for part in Path(rel).parts):
                    self.stat_update("skipped_hidden_files")
                    continue
                source = p.source or Path(self.root or path).name
                for rec in self._records(readers, path, rel):
                    self.stat_update("records")
                    if bar is not None:
                        bar.update()
                    doc, reason = self._to_document(rec, source, rel, seen)
                    if reason:
                        self.stat_update(f"quarantined_{reason}")
                        drops.quarantine(doc, reason, rank=rank)
                    else:
                        self.stat_update("forwarded")
                        yield doc

    def _records(self, readers: RawReaders, path: Path, rel: str):
        fmt = self.params.format if self.params.format != "auto" else detect_format(path)
        if fmt is None or not path.is_file():  # a PDF, an image, a .bz2; a pipe or a broken link
            yield RawRecord("1", {"path": rel}, error="unsupported_file_type", raw=rel)
            return
        yield from readers.records(path, fmt)

    # -- judging ----------------------------------------------------------------------------
    def _to_document(self, rec: RawRecord, source: str, rel: str, seen: set[int]) -> tuple[Document, str | None]:
        p = self.params
        fields = rec.fields
        meta: dict[str, Any] = {"file": rel, "position": rec.position, **rec.meta}
        raw_id = fields.pop(p.id_field, None) if p.id_field else None
        doc_id = self._claim_id(raw_id, source, rel, rec.position, seen, meta)
        domain = fields.pop(p.domain_field, None) if p.domain_field else None
        domain = str(domain) if domain not in (None, "") else (p.domain or source)
        meta.update({k: v for k, v in fields.items() if v is not None})
        reason, text = rec.error, rec.text
        if reason is None:
            if text is None:
                reason, text = "missing_text_field", ""
            elif not isinstance(text, str):
                reason, text = "text_not_a_string", json.dumps(text, ensure_ascii=False, default=str)
            elif not text.strip():
                reason = "empty_text"
            elif len(text) > p.max_doc_bytes // 4 and len(text.encode("utf-8", "surrogatepass")) > p.max_doc_bytes:
                meta["original_bytes"] = len(text.encode("utf-8", "surrogatepass"))
                reason, text = "too_large", text[:QUARANTINE_PREVIEW_CHARS]
        else:
            text = rec.raw[:QUARANTINE_PREVIEW_CHARS] if len(rec.raw) > p.max_doc_bytes else rec.raw
        if reason:
            meta["error"] = reason
        meta_json = json.dumps(meta, ensure_ascii=False, default=str)
        if reason is None and any(SURROGATES.search(s) for s in (text, doc_id, domain, meta_json)):
            # a JSON escape that is no character: it would fail the whole Parquet write
            reason, meta["error"] = "invalid_unicode", "invalid_unicode"
            meta_json = json.dumps(meta, ensure_ascii=False, default=str)
            text = text[:QUARANTINE_PREVIEW_CHARS]
        if reason:
            text, doc_id, domain, meta_json = (scrub(s) for s in (text or "", doc_id, domain, meta_json))
        doc = Document(
            text=text or "",
            id=doc_id,
            metadata={"source": source, "domain": domain, "lang": None, "meta": meta_json},
        )
        return doc, reason

    def _claim_id(self, raw_id: Any, source: str, rel: str, position: str, seen: set[int], meta: dict) -> str:
        """The row id under the rule in the module docstring; `seen` grows by the id given out."""
        if raw_id not in (None, ""):
            printed = raw_id if isinstance(raw_id, str) else json.dumps(raw_id, ensure_ascii=False, sort_keys=True, default=str)
            if _take(printed, seen):
                return printed
            self.stat_update("ids_repeated")
            meta["source_id"] = raw_id
            if _take(renamed := f"{printed}#{position}", seen):
                return renamed
        # the hash of source, file and position, salted in the rare case a real id already took it
        salt = 0
        while not _take(hashed := xxhash.xxh3_64_hexdigest(f"{source}\x00{rel}\x00{position}" + salt * "\x00"), seen):
            salt += 1
        return hashed


def _take(doc_id: str, seen: set[int]) -> bool:
    """Claim `doc_id` unless this task gave it out already."""
    key = xxhash.xxh3_64_intdigest(doc_id.encode("utf-8", "surrogatepass"))
    if key in seen:
        return False
    seen.add(key)
    return True


class Ingest(SourceOperator):
    name = "ingest"
    version = "2"
    description = (
        "Read raw files (JSONL/JSON/NDJSON, optionally .gz/.zst; Parquet; CSV/TSV; WARC; .txt/.md/.rst/.html "
        "files; a folder of any of these) into the core columns id, text, source, domain, lang, meta. Every "
        "record found is kept or quarantined with a reason; other files in a folder are quarantined as "
        "`unsupported_file_type`, hidden files are skipped and counted. Id: the source id (`id_field`) as a "
        "string unless an earlier record of the same reader task printed the same (7 and \"7\" collide); a "
        "repeat gets `<id>#<position>` (or a hash if that is taken) with the original in meta `source_id`, "
        "counted as `ids_repeated`; records without an id get a hash of source, file and position. Malformed "
        "lines, undecodable bytes, invalid Unicode escapes, missing/empty/non-string text, docs over "
        "`max_doc_bytes` (never read whole), damaged Parquet row groups, non-HTML/non-2xx WARC responses and "
        "truncated files are quarantined with a reason."
    )
    Params = IngestParams
    reading_settings = frozenset({"format", "text_field", "id_field", "domain", "domain_field"})
    dataset_params = frozenset({"max_doc_bytes"})
    produces = {f.name: f.type for f in CORE_SCHEMA}
    kinds = ("datatrove", "ingest")

    def dataset_verdict(self, doc: Document) -> Verdict:
        """An upstream pipeline's document is held to this stage's `max_doc_bytes` too."""
        text = doc.text
        if isinstance(text, str) and len(text) > self.params.max_doc_bytes // 4:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.params.max_doc_bytes:
                return Quarantine("too_large", f"{size} UTF-8 bytes > max_doc_bytes {self.params.max_doc_bytes}")
        return super().dataset_verdict(doc)

    def read(self, run: StageRun) -> SourceRead:
        schema = self.input_schema
        root = str(run.context.source_root or "")
        reader = RawSourceReader(run.input_files, root, self.params, self.drops(run, schema))
        # raw files are split between tasks file by file
        stats = run.execute([reader, run.kept_writer(schema)], tasks=max(1, min(run.executor.tasks, len(run.input_files))))
        reader_stats = stats.get(reader.name, {})
        return SourceRead(int(reader_stats.get("records", 0)), {key: int(reader_stats.get(key, 0)) for key in READER_STATS})
