"""A bounded sample of a source, written as a landing folder of the same formats: what the
profiler reads and the dry run ingests. Lines are kept as raw bytes, so broken encodings and
malformed records reach ingest exactly as in the full source."""

from __future__ import annotations

import math
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dagster_llmdata.io.raw_readers import detect_format, open_stream

MAX_SCAN_BYTES = 512 * 2**20  # per file: past this the record count is extrapolated from bytes
MAX_COPY_BYTES = 32 * 2**20  # a WARC (or other whole file) over this is left out of the sample
MAX_OTHER_FILES = 5  # files of no known format: a few go in, so the profile shows them


@dataclass
class SourceSample:
    source: Path
    folder: Path  # the sample, one landing entry
    formats: Counter = field(default_factory=Counter)  # files per format
    bytes_total: int = 0
    records_total: int = 0  # records in the full source (estimated past MAX_SCAN_BYTES)
    records_sampled: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": str(self.source), "formats": dict(self.formats), "bytes_total": self.bytes_total,
                "records_total": self.records_total, "records_sampled": self.records_sampled, "notes": self.notes}


def source_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))


def sample_source(source: Path, dest: Path, n_docs: int, seed: int = 0) -> SourceSample:
    """Write about `n_docs` records of `source` (a file or a folder) under `dest`, spread evenly
    over its files; count what the full source holds."""
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    out = SourceSample(source=source, folder=dest)
    files = source_files(source)
    base = source if source.is_dir() else source.parent
    by_kind: dict[str, list[Path]] = {"container": [], "one_doc": [], "other": []}
    for f in files:
        fmt = detect_format(f)
        out.formats[fmt or f"other:{f.suffix.lower() or 'none'}"] += 1
        out.bytes_total += f.stat().st_size
        by_kind["one_doc" if fmt == "text" else "container" if fmt else "other"].append(f)
    units = len(by_kind["container"]) + (1 if by_kind["one_doc"] else 0)
    budget = max(1, math.ceil(n_docs / max(1, units)))
    for f in by_kind["container"]:
        target = dest / f.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        total, kept = _sample_container(f, target, budget, rng, out.notes)
        out.records_total += total
        out.records_sampled += kept
    one_doc = by_kind["one_doc"]
    step = max(1, len(one_doc) / budget) if one_doc else 1
    for i in range(min(budget, len(one_doc))):
        f = one_doc[int(i * step)]
        _copy(f, dest / f.relative_to(base))
    out.records_total += len(one_doc)
    out.records_sampled += min(budget, len(one_doc))
    for f in by_kind["other"][:MAX_OTHER_FILES]:
        _copy(f, dest / f.relative_to(base))
        out.records_sampled += 1
    out.records_total += len(by_kind["other"])
    return out


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _sample_container(f: Path, target: Path, budget: int, rng: random.Random, notes: list[str]) -> tuple[int, int]:
    fmt = detect_format(f)
    if fmt == "parquet":
        return _sample_parquet(f, target, budget, rng)
    if fmt == "warc":
        if f.stat().st_size > MAX_COPY_BYTES:
            notes.append(f"{f.name}: WARC over {MAX_COPY_BYTES >> 20} MiB left out of the sample")
            return 0, 0
        _copy(f, target)
        return 1, 1  # records unknown until read; counted as one unit
    return _sample_lines(f, target, budget, rng, header=fmt == "csv", notes=notes)


def _sample_lines(f: Path, target: Path, budget: int, rng: random.Random, header: bool, notes: list[str]) -> tuple[int, int]:
    """Reservoir sample of the file's lines (raw bytes), written uncompressed in file order."""
    name = target.name
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    target = target.with_name(name)
    reservoir: list[tuple[int, bytes]] = []
    first: bytes | None = None
    n = read = 0
    try:
        with open_stream(f) as stream:
            for line in stream:
                if header and first is None:
                    first = line
                    continue
                read += len(line)
                if not line.strip():
                    continue
                if len(reservoir) < budget:
                    reservoir.append((n, line))
                else:
                    j = rng.randrange(n + 1)
                    if j < budget:
                        reservoir[j] = (n, line)
                n += 1
                if read > MAX_SCAN_BYTES:
                    size = f.stat().st_size
                    n = int(n * size / max(1, stream.tell() if hasattr(stream, "tell") else read))
                    notes.append(f"{f.name}: record count extrapolated from the first {MAX_SCAN_BYTES >> 20} MiB")
                    break
    except (OSError, EOFError, ValueError, pa.ArrowInvalid) as exc:  # a truncated archive: what came before is the sample
        notes.append(f"{f.name}: read stopped early ({type(exc).__name__}: {exc})")
    with open(target, "wb") as out:
        if first is not None:
            out.write(first)
        for _, line in sorted(reservoir):
            out.write(line if line.endswith(b"\n") else line + b"\n")
    return n, len(reservoir)


def _sample_parquet(f: Path, target: Path, budget: int, rng: random.Random) -> tuple[int, int]:
    try:
        pf = pq.ParquetFile(f)
    except (OSError, pa.ArrowInvalid):
        _copy(f, target)  # ingest quarantines it as unreadable: the profile should show that
        return 1, 1
    total = pf.metadata.num_rows
    keep = set(sorted(rng.sample(range(total), min(budget, total)))) if total else set()
    parts, offset = [], 0
    for g in range(pf.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        wanted = [i - offset for i in range(offset, offset + rows) if i in keep]
        if wanted:
            parts.append(pf.read_row_group(g).take(pa.array(wanted)))
        offset += rows
    table = pa.concat_tables(parts) if parts else pf.schema_arrow.empty_table()
    pq.write_table(table, target)
    return total, table.num_rows
