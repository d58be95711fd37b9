"""ingest: raw files (JSONL, JSONL.gz, Parquet, CSV, WARC, folders of .txt/.md/.html) -> core columns.

Every raw record becomes a row or a quarantine entry with a reason: malformed JSON, bytes that
are not UTF-8, a missing or empty text field, a document over the size limit."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
import xxhash
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from ..io.docsteps import DatasetWriter, mark_dropped
from ..io.schema import CORE_SCHEMA
from ..stage_run import StageRun
from .base import Operator, OperatorParams

Format = Literal["auto", "jsonl", "parquet", "csv", "text", "warc"]
TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".rst": "text", ".html": "html", ".htm": "html"}
QUARANTINE_PREVIEW_CHARS = 4096  # a quarantined giant keeps its head; the raw file keeps the rest


class IngestParams(OperatorParams):
    format: Format = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    domain: str | None = None
    domain_field: str | None = "domain"
    source: str | None = None
    max_doc_bytes: int = 10_000_000
    encoding: str = "utf-8"


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "text"
    for suffixes, fmt in (
        ((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".jsonl.zst"), "jsonl"),
        ((".parquet",), "parquet"),
        ((".csv", ".csv.gz", ".tsv"), "csv"),
        ((".warc", ".warc.gz", ".arc.gz"), "warc"),
        (tuple(TEXT_SUFFIXES), "text"),
    ):
        if name.endswith(suffixes):
            return fmt
    raise ValueError(f"cannot tell the format of {path}; set `format:` to one of jsonl, parquet, csv, text, warc")


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


class RawRecord:
    """One record as read from a raw file, before it is judged."""

    __slots__ = ("fields", "text", "position", "error", "raw")

    def __init__(self, position: str, fields: dict | None = None, text: Any = None, error: str | None = None, raw: str = ""):
        self.position, self.fields, self.text, self.error, self.raw = position, fields or {}, text, error, raw


class RawSourceReader(PipelineStep):
    """Reads raw files, yields core-column Documents and quarantines what it cannot use."""

    name = "📥 ingest"
    type = "📖 - READER"

    def __init__(self, files: list[str], root: str, params: IngestParams, stage: str, quarantine: DatasetWriter):
        super().__init__()
        self.files, self.root, self.params, self.stage, self.quarantine = files, root, params, stage, quarantine

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        p = self.params
        with self.quarantine as quarantine:
            for path in map(Path, self.files[rank::world_size]):
                rel = os.path.relpath(path, self.root) if self.root else path.name
                source = p.source or Path(self.root or path).name
                fmt = p.format if p.format != "auto" else detect_format(path)
                for rec in self._records(path, fmt):
                    self.stat_update("records")
                    doc, reason = self._to_document(rec, source, rel)
                    if reason:
                        self.stat_update(f"quarantined_{reason}")
                        quarantine.write(mark_dropped(doc, self.stage, reason), rank)
                    else:
                        self.stat_update("forwarded")
                        yield doc

    # -- reading --------------------------------------------------------------------------
    def _records(self, path: Path, fmt: str) -> Iterator[RawRecord]:
        try:
            if path.stat().st_size == 0:
                return  # an empty file holds no records; the ledger counts zero
            yield from getattr(self, f"_read_{fmt}")(path)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            # a truncated/corrupt file: what was read is kept, the break itself is recorded
            yield RawRecord(f"{path.name}:unreadable", error="unreadable_file", raw=f"{type(exc).__name__}: {exc}")

    def _read_jsonl(self, path: Path) -> Iterator[RawRecord]:
        with _open_bytes(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    decoded = line.decode(self.params.encoding)
                except UnicodeDecodeError:
                    yield RawRecord(str(lineno), error="undecodable_bytes", raw=line.decode("utf-8", "replace"))
                    continue
                try:
                    obj = json.loads(decoded)
                except (ValueError, RecursionError):  # RecursionError: hostile nesting
                    yield RawRecord(str(lineno), error="malformed_json", raw=decoded)
                    continue
                if not isinstance(obj, dict):
                    yield RawRecord(str(lineno), error="not_an_object", raw=decoded)
                    continue
                yield RawRecord(str(lineno), obj, obj.pop(self.params.text_field, None))

    def _read_parquet(self, path: Path) -> Iterator[RawRecord]:
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield RawRecord(str(n), row, row.pop(self.params.text_field, None))

    def _read_csv(self, path: Path) -> Iterator[RawRecord]:
        csv.field_size_limit(2**31 - 1)
        with _open_bytes(path) as raw:
            text = io.TextIOWrapper(raw, encoding=self.params.encoding, errors="surrogateescape", newline="")
            delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
            for n, row in enumerate(csv.DictReader(text, delimiter=delimiter), 1):
                blob = "\x00".join(v for v in row.values() if isinstance(v, str))
                if _has_surrogates(blob):
                    yield RawRecord(str(n), error="undecodable_bytes", raw=_unsurrogate(json.dumps(row, ensure_ascii=False)))
                    continue
                yield RawRecord(str(n), dict(row), row.pop(self.params.text_field, None))

    def _read_text(self, path: Path) -> Iterator[RawRecord]:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            kind = TEXT_SUFFIXES.get(f.suffix.lower())
            rel = str(f.relative_to(path)) if path.is_dir() else f.name
            if kind is None:
                yield RawRecord(rel, error="unsupported_file_type", raw=rel)
                continue
            data = f.read_bytes()
            try:
                text = data.decode(self.params.encoding)
            except UnicodeDecodeError:
                yield RawRecord(rel, error="undecodable_bytes", raw=data.decode("utf-8", "replace"))
                continue
            yield RawRecord(rel, {"format": kind, "path": rel}, text)

    def _read_warc(self, path: Path) -> Iterator[RawRecord]:
        from datatrove.pipeline.readers import WarcReader

        reader = WarcReader(str(path.parent), glob_pattern=path.name, recursive=False)
        for n, doc in enumerate(reader.read_file(path.name), 1):
            fields = {"warc_id": doc.id, **doc.metadata, "format": "html"}
            yield RawRecord(str(n), fields, doc.text)

    # -- judging ----------------------------------------------------------------------------
    def _to_document(self, rec: RawRecord, source: str, rel: str) -> tuple[Document, str | None]:
        p = self.params
        fields = rec.fields
        meta: dict[str, Any] = {"file": rel, "position": rec.position}
        raw_id = fields.pop(p.id_field, None) if p.id_field else None
        doc_id = str(raw_id) if raw_id not in (None, "") else xxhash.xxh3_64_hexdigest(f"{source}\x00{rel}\x00{rec.position}".encode())
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
            elif _has_surrogates(text):
                reason, text = "undecodable_bytes", _unsurrogate(text)
        else:
            text = rec.raw[:QUARANTINE_PREVIEW_CHARS] if len(rec.raw) > p.max_doc_bytes else rec.raw
        if reason:
            meta["error"] = reason
        doc = Document(
            text=text or "",
            id=doc_id,
            metadata={"source": source, "domain": domain, "lang": None, "meta": json.dumps(meta, ensure_ascii=False, default=str)},
        )
        return doc, reason


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unsurrogate(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def expand_input(path: Path) -> list[str]:
    """The raw files of one partition: a file, or the data files inside a folder (a folder of
    .txt/.md/.html is one text collection)."""
    if path.is_file():
        return [str(path)]
    if not path.exists():
        raise FileNotFoundError(f"input path does not exist: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    data_files = [str(p) for p in files if _is_data_file(p)]
    return data_files or [str(path)]


def _is_data_file(path: Path) -> bool:
    try:
        return detect_format(path) in {"jsonl", "parquet", "csv", "warc"}
    except ValueError:
        return False


class Ingest(Operator):
    name = "ingest"
    version = "1"
    description = (
        "Read raw files (JSONL, JSONL.gz, Parquet, CSV, WARC, folders of .txt/.md/.html) into the core "
        "columns id, text, source, domain, lang, meta. Ids come from `id_field` or a hash of source, file "
        "and position. Malformed lines, undecodable bytes, missing/empty text and docs over "
        "`max_doc_bytes` are quarantined with a reason."
    )
    Params = IngestParams
    requires = ()
    produces = {f.name: f.type for f in CORE_SCHEMA}
    kinds = ("datatrove", "ingest")

    def run(self, run: StageRun) -> dict[str, Any]:
        schema = CORE_SCHEMA
        root = run.context.get("source_root", "")
        reader = RawSourceReader(run.input_files, root, self.params, run.stage, run.quarantine_writer(schema))
        # raw files are split between tasks file by file
        stats = run.execute([reader, run.kept_writer(schema)], tasks=max(1, min(run.executor.tasks, len(run.input_files))))
        run.n_in_override = int(stats.get(reader.name, {}).get("records", 0))
        run.input_schema = schema
        return {}
