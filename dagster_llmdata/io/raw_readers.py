"""Low-level readers of raw files for `ingest`: each turns one file into RawRecords and counts
what was there, not what could be read.

- Every record the file holds becomes one RawRecord: a usable one (fields + text) or one with an
  `error` (the quarantine reason). A break in the file (truncated gzip/zstd/WARC, damaged Parquet
  footer) ends the file with one `unreadable_file` record after everything read before it.
- Memory is bounded by the size limit, not by the input: lines, CSV fields, text files and WARC
  bodies are read at most `limit` bytes at a time; the rest of an over-long record is skipped in
  chunks while its bytes are counted (`too_large`, `original_bytes` in meta).
- A leading UTF-8 byte order mark is dropped in every text container.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dagster_llmdata.io.csv_lines import Line, RecordLines

TEXT_SUFFIXES = {".txt": "text", ".md": "markdown", ".rst": "text", ".html": "html", ".htm": "html"}
DATA_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}
COMPRESSED = (".gz", ".zst")
QUARANTINE_PREVIEW_CHARS = 4096  # a quarantined giant keeps its head; the raw file keeps the rest
SKIP_CHUNK = 1 << 20  # how much of an over-long record is held at once while it is skipped
# A JSON line may spell one byte of text in six (`\u0001`), so a doc under the limit can take up
# to six times its size on the line; only lines longer than that are cut without parsing.
JSON_ESCAPE_FACTOR = 6
ENVELOPE_BYTES = 1 << 16  # id, domain and other small fields around the text
HTML_TYPES = {"text/html", "application/xhtml+xml"}
UNREADABLE_ERRORS = (OSError, EOFError, zlib.error, ValueError, pa.ArrowException)
# a lone surrogate: a JSON escape that is no character, or a byte kept by `surrogateescape`
SURROGATES = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """Text safe to write: every lone surrogate becomes U+FFFD."""
    return SURROGATES.sub("\ufffd", text)


def detect_format(path: Path) -> str | None:
    """The reader for a file name, or None when it is no format ingest reads."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".warc", ".warc.gz", ".arc", ".arc.gz")):
        return "warc"
    inner = Path(name.removesuffix(".gz").removesuffix(".zst") if name.endswith(COMPRESSED) else name)
    return DATA_SUFFIXES.get(inner.suffix) or ("text" if inner.suffix in TEXT_SUFFIXES else None)


def open_stream(path: Path) -> io.BufferedIOBase:
    """A buffered binary stream of the file's bytes, decompressed by suffix."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        # pyarrow raises at a truncated frame instead of returning the partial read, so a small
        # buffer keeps all but the last few KiB before the break
        return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path)), "zstd"), io.DEFAULT_BUFFER_SIZE)
    return open(path, "rb")


class RawRecord:
    """One record as read from a raw file, before it is judged. `meta` is provenance the reader
    adds (sizes, row group, HTTP status); `raw` is what a quarantined record shows as text."""

    __slots__ = ("fields", "text", "position", "error", "raw", "meta")

    def __init__(self, position: str, fields: dict | None = None, text: Any = None, error: str | None = None,
                 raw: str = "", meta: dict | None = None):
        self.position, self.fields, self.text, self.error, self.raw = position, fields or {}, text, error, raw
        self.meta = meta or {}


class OverLong:
    """A line longer than the limit: its head, its full size and its count of `"` (the CSV reader
    needs the quote parity to stay in step)."""

    __slots__ = ("head", "size", "quotes")

    def __init__(self, head: bytes, size: int, quotes: int):
        self.head, self.size, self.quotes = head, size, quotes


def bounded_lines(fh, limit: int) -> Iterator[bytes | OverLong]:
    """The lines of a binary stream; a line over `limit` bytes is never held whole."""
    while line := fh.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        head, size, quotes, tail = line[: QUARANTINE_PREVIEW_CHARS * 4], len(line), line.count(b'"'), line[-2:]
        del line
        while chunk := fh.readline(SKIP_CHUNK):
            size += len(chunk)
            quotes += chunk.count(b'"')
            tail = (tail + chunk)[-2:]
            if chunk.endswith(b"\n"):
                break
        size -= 2 if tail == b"\r\n" else tail.endswith(b"\n")  # the line break is not part of the record
        yield OverLong(head, size, quotes)


def preview(data: bytes) -> str:
    return data.decode("utf-8", "replace")[:QUARANTINE_PREVIEW_CHARS]


def _count_rest(stream) -> int:
    size = 0
    while chunk := stream.read(SKIP_CHUNK):
        size += len(chunk)
    return size


class RawReaders:
    """The readers of one ingest run. `stat` counts things that are not records (hidden files,
    WARC request records); records themselves are counted by the caller."""

    def __init__(self, text_field: str, encoding: str, max_doc_bytes: int, stat: Callable[[str], None]):
        self.text_field, self.encoding, self.max_doc_bytes, self.stat = text_field, encoding, max_doc_bytes, stat
        self.line_limit = JSON_ESCAPE_FACTOR * max_doc_bytes + ENVELOPE_BYTES

    def records(self, path: Path, fmt: str) -> Iterator[RawRecord]:
        try:
            if path.stat().st_size == 0:
                return  # an empty file holds no records; the ledger counts zero
            yield from getattr(self, f"_read_{fmt}")(path)
        except UNREADABLE_ERRORS as exc:
            # a truncated/corrupt file: what was read is kept, the break itself is recorded
            yield RawRecord(f"{path.name}:unreadable", error="unreadable_file", raw=f"{type(exc).__name__}: {exc}")

    def _decode_line(self, line: bytes, first: bool) -> str:
        text = line.decode(self.encoding)
        return text.removeprefix("\ufeff") if first else text

    def _too_large(self, position: str, over: OverLong) -> RawRecord:
        return RawRecord(position, error="too_large", raw=preview(over.head), meta={"original_bytes": over.size})

    # -- JSONL -------------------------------------------------------------------------------
    def _read_jsonl(self, path: Path) -> Iterator[RawRecord]:
        with open_stream(path) as fh:
            for lineno, line in enumerate(bounded_lines(fh, self.line_limit), 1):
                pos = str(lineno)
                if isinstance(line, OverLong):
                    yield self._too_large(pos, line)
                    continue
                if not line.strip():
                    continue
                try:
                    decoded = self._decode_line(line, lineno == 1)
                except UnicodeDecodeError:
                    yield RawRecord(pos, error="undecodable_bytes", raw=line.decode("utf-8", "replace"))
                    continue
                try:
                    obj = json.loads(decoded)
                except (ValueError, RecursionError):  # RecursionError: hostile nesting
                    yield RawRecord(pos, error="malformed_json", raw=decoded)
                    continue
                if not isinstance(obj, dict):
                    yield RawRecord(pos, error="not_an_object", raw=decoded)
                    continue
                yield RawRecord(pos, obj, obj.pop(self.text_field, None))

    # -- CSV / TSV ---------------------------------------------------------------------------
    def _read_csv(self, path: Path) -> Iterator[RawRecord]:
        # The csv module pulls one physical line at a time and ends a record at a line end
        # outside quotes. An over-long line is replaced by a stand-in with the same quote parity,
        # so the parser stays in step, and the record it ends up in is flagged too large. Strict
        # mode raises where a stray quote shows (text after a closing quote, the end of the file
        # inside quotes); then only the record's first line is set aside and the rest re-read.
        csv.field_size_limit(self.line_limit)
        delimiter = "\t" if ".tsv" in path.name.lower() else ","
        with open_stream(path) as fh:
            lines = RecordLines(self._csv_lines(fh), cap=2 * self.line_limit)
            rows = csv.reader(lines, delimiter=delimiter, strict=True)
            header: list[str] | None = None
            n = 0
            while True:
                try:
                    row, error = next(rows), None
                except StopIteration:
                    return
                except csv.Error as exc:
                    row, error = [], exc
                taken = lines.take()
                if header is None:
                    if error or taken.over:
                        raise ValueError(f"unreadable CSV header: {error or 'over the size limit'}")
                    header = row or None
                    continue
                if not row and not error and not taken.over:
                    continue  # a blank line is not a record
                n += 1
                first, over = taken.lines[0], taken.over
                if error and taken.complete and len(taken.lines) > 1:
                    # the lines a stray quote ran on are records of their own; a record past the
                    # memory cap (not complete) cannot be undone and is quarantined as one
                    lines.push_back(taken.lines[1:])
                    over = first.over
                if over is not None:
                    yield self._too_large(str(n), over)
                elif error:
                    # a stray quote or carriage return; "field larger": a quoted field past the limit
                    reason = "too_large" if "field larger" in str(error) else "malformed_csv"
                    yield RawRecord(str(n), error=reason, raw=first.text.rstrip("\r\n"),
                                    meta={"csv_error": str(error), "line": first.number})
                else:
                    yield self._csv_row(str(n), header, row)

    def _csv_lines(self, fh) -> Iterator[Line]:
        """Decoded physical lines; an over-long one becomes a stand-in with its quote parity."""
        for number, line in enumerate(bounded_lines(fh, self.line_limit), 1):
            if isinstance(line, OverLong):
                yield Line(number, '"\n' if line.quotes % 2 else "\n", line)
            else:
                text = line.decode(self.encoding, "surrogateescape")
                yield Line(number, text.removeprefix("\ufeff") if number == 1 else text)

    def _csv_row(self, position: str, header: list[str], row: list[str]) -> RawRecord:
        fields: dict[str, Any] = dict(zip(header, row))
        if len(row) > len(header):
            fields["_extra_fields"] = row[len(header):]
        if SURROGATES.search("\x00".join(row)):  # bytes that are not in the encoding
            return RawRecord(position, error="undecodable_bytes", raw=scrub(json.dumps(fields, ensure_ascii=False)))
        return RawRecord(position, fields, fields.pop(self.text_field, None))

    # -- single text files -------------------------------------------------------------------
    def _read_text(self, path: Path) -> Iterator[RawRecord]:
        inner = path.name.lower().removesuffix(".gz").removesuffix(".zst")
        kind = TEXT_SUFFIXES.get(Path(inner).suffix, "text")
        with open_stream(path) as fh:
            data = fh.read(self.max_doc_bytes + 1)
            if not data:
                return  # an empty file holds no document
            if len(data) > self.max_doc_bytes:
                size = len(data) + _count_rest(fh)
                yield RawRecord("1", {"format": kind}, error="too_large", raw=preview(data[: QUARANTINE_PREVIEW_CHARS * 4]),
                                meta={"original_bytes": size})
                return
        try:
            text = self._decode_line(data, True)
        except UnicodeDecodeError:
            yield RawRecord("1", {"format": kind}, error="undecodable_bytes", raw=data.decode("utf-8", "replace"))
            return
        yield RawRecord("1", {"format": kind}, text)

    # -- Parquet -----------------------------------------------------------------------------
    def _read_parquet(self, path: Path) -> Iterator[RawRecord]:
        pf = pq.ParquetFile(path)  # a broken footer raises: one unreadable_file record
        n = 0
        for group in range(pf.num_row_groups):
            expected = pf.metadata.row_group(group).num_rows
            read = 0
            try:
                for batch in pf.iter_batches(batch_size=1024, row_groups=[group]):
                    for row in batch.to_pylist():
                        read += 1
                        n += 1
                        yield self._parquet_row(str(n), row)
            except UNREADABLE_ERRORS as exc:
                # the footer says how many rows the damaged group held: each is accounted for
                detail = f"{type(exc).__name__}: {exc}"[:500]
                for _ in range(expected - read):
                    n += 1
                    yield RawRecord(str(n), error="unreadable_row_group", raw=detail, meta={"row_group": group})

    def _parquet_row(self, position: str, row: dict) -> RawRecord:
        text = row.pop(self.text_field, None)
        if isinstance(text, bytes):  # a binary text column: UTF-8 or quarantined
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                return RawRecord(position, row, error="undecodable_bytes", raw=preview(text))
        return RawRecord(position, row, text)

    # -- WARC --------------------------------------------------------------------------------
    def _read_warc(self, path: Path) -> Iterator[RawRecord]:
        # warcio stops quietly at a cut gzip member or a short last record, so the reader checks
        # that every record got its full length and the last one ended where the file ends.
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed
        from warcio.statusandheaders import StatusAndHeadersParserException

        size = path.stat().st_size
        with open(path, "rb") as fh:
            archive = ArchiveIterator(fh, arc2warc=True)
            n = 0
            try:
                for rec in archive:
                    if rec.rec_type not in ("response", "conversion"):  # requests, warcinfo, metadata
                        self.stat("warc_non_response_records")
                        continue
                    n += 1
                    out = self._warc_record(str(n), rec)
                    archive.read_to_end()
                    if getattr(rec.raw_stream, "limit", 0) > 0:
                        raise EOFError(f"WARC record {n} is cut short")
                    yield out
            except (ArchiveLoadFailed, StatusAndHeadersParserException) as exc:
                raise ValueError(str(exc)) from None
            if archive.offset < size:
                raise EOFError(f"{size - archive.offset} bytes after the last complete WARC record cannot be read")

    def _warc_record(self, position: str, rec) -> RawRecord:
        headers = rec.rec_headers
        fields: dict[str, Any] = {
            "warc_id": headers.get_header("WARC-Record-ID"),
            "url": headers.get_header("WARC-Target-URI"),
            "date": headers.get_header("WARC-Date"),
        }
        http = rec.http_headers
        status = http.get_statuscode() if http else None
        if status and not status.startswith("2"):
            return RawRecord(position, fields, error="http_error", raw=f"HTTP {http.statusline}", meta={"status": int(status) if status.isdigit() else status})
        declared = (headers.get_header("WARC-Identified-Payload-Type")
                    or (http.get_header("Content-Type") if http else headers.get_header("Content-Type")) or "")
        from warcio.bufferedreaders import ChunkedDataException

        stream = rec.content_stream()
        try:
            body = stream.read(self.max_doc_bytes + 1)
            extra = _count_rest(stream) if len(body) > self.max_doc_bytes else 0
        except (OSError, EOFError, zlib.error, ValueError, ChunkedDataException) as exc:  # a bad HTTP content-encoding
            return RawRecord(position, fields, error="undecodable_bytes", raw=f"{type(exc).__name__}: {exc}")
        mime = declared.split(";")[0].strip().lower() or _sniff(body)
        if mime not in HTML_TYPES and mime != "text/plain":
            return RawRecord(position, fields, error="unsupported_content_type", raw=preview(body[:4096]),
                             meta={"content_type": mime})
        fields["format"] = "html" if mime in HTML_TYPES else "text"
        if extra:
            return RawRecord(position, fields, error="too_large", raw=preview(body[: QUARANTINE_PREVIEW_CHARS * 4]),
                             meta={"original_bytes": len(body) + extra})
        text = _decode_body(body, http.get_header("Content-Type") if http else None)
        if text is None:
            return RawRecord(position, fields, error="undecodable_bytes", raw=preview(body))
        return RawRecord(position, fields, text.removeprefix("\ufeff"))


def _sniff(body: bytes) -> str:
    import magic

    return magic.from_buffer(body[:65536], mime=True) if body else ""


def _decode_body(body: bytes, content_type: str | None) -> str | None:
    """Charset from the HTTP header, else UTF-8, else what cchardet guesses; None if none fits."""
    import cchardet

    declared = None
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            declared = value.strip().strip("\"'")
    for charset in (declared, "utf-8"):
        if charset and (text := _try_decode(body, charset)) is not None:
            return text
    guess = cchardet.detect(body)["encoding"]
    return _try_decode(body, guess) if guess else None


def _try_decode(body: bytes, charset: str) -> str | None:
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return None
