"""A dataset is a folder of Parquet files; these helpers list, count and stream them.

A file only gets its final name once it is complete: writers write under a hidden name (or into
the hidden IN_PROGRESS folder) and rename when closed, so a killed writer leaves nothing a reader
would take for data."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

IN_PROGRESS = ".in-progress"  # sub-folder of a dataset where writers keep files until they are complete


def list_parquet(folder: str | os.PathLike) -> list[str]:
    """Complete Parquet files of a dataset folder (recursively), in a stable order. Hidden names
    (in-progress files) are skipped, and so are folders named *.parquet (a partition folder named
    after its landing file)."""
    folder = Path(folder)
    if folder.is_file():
        return [str(folder)]
    if not folder.is_dir():
        return []
    return sorted(
        str(p) for p in folder.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def count_rows(files: list[str]) -> int:
    """Row count from Parquet footers only (no data read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def count_by(files: list[str], column: str) -> Counter:
    """Rows per value of one column, reading only that column."""
    counts: Counter = Counter()
    for f in files:
        pf = pq.ParquetFile(f)
        if column not in pf.schema_arrow.names:
            counts[None] += pf.metadata.num_rows
            continue
        for batch in pf.iter_batches(columns=[column], batch_size=65536):
            counts.update(batch.column(0).to_pylist())
    return counts


def read_schema(files: list[str]) -> pa.Schema | None:
    return pq.read_schema(files[0]) if files else None


def iter_batches(files: list[str], batch_size: int = 2048, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    for f in files:
        yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)


def read_sample(files: list[str], n: int = 5, columns: list[str] | None = None) -> list[dict]:
    rows: list[dict] = []
    for batch in iter_batches(files, batch_size=max(n, 1), columns=columns):
        rows.extend(batch.to_pylist()[: n - len(rows)])
        if len(rows) >= n:
            break
    return rows


def write_table_atomic(table: pa.Table, path: str | os.PathLike, **kwargs) -> None:
    """pq.write_table under a hidden name, renamed into place once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_empty(folder: str | os.PathLike, schema: pa.Schema, name: str = "empty.parquet") -> str:
    """An empty dataset still has a file, so its schema is known downstream."""
    path = str(Path(folder) / name)
    write_table_atomic(schema.empty_table(), path)
    return path
