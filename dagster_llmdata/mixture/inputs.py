"""Row readers of a manifest's inputs by kind: `parquet` (pinned files) and `lance` (a pinned
table version, store_input.LanceInput). Each reads rows by (file, row) and checks that what it
reads is still what the manifest pinned."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dagster_llmdata.errors import ManifestError
from dagster_llmdata.mixture.manifest import file_sha256
from dagster_llmdata.mixture.store_input import LanceInput

OPEN_FILES = 8


class ParquetInput:
    """Rows of a `parquet` input by (file, row); keeps a few files' columns in memory."""

    def __init__(self, spec: dict[str, Any], columns: list[str] | None):
        self.files = spec["files"]
        self.columns = columns
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def check(self, verify_hashes: bool) -> None:
        if problems := self.problems(verify_hashes):
            raise ManifestError("\n".join(problems))

    def problems(self, verify_hashes: bool) -> list[str]:
        """One line per pinned file that is gone or no longer what the manifest pinned; nothing is
        parsed before its bytes are known to match (a changed file may not be Parquet any more)."""
        out = []
        for f in self.files:
            path = Path(f["path"])
            if not path.is_file():
                out.append(f"manifest input file is gone: {path} (re-materialise the mixture)")
            elif f.get("bytes") is not None and path.stat().st_size != f["bytes"]:
                out.append(f"{path} has changed since the manifest was written ({path.stat().st_size} bytes, it pinned {f['bytes']})")
            elif verify_hashes and file_sha256(path) != f["sha256"]:
                out.append(f"{path} has changed since the manifest was written (sha256)")
            elif not verify_hashes:
                try:
                    rows = pq.ParquetFile(path).metadata.num_rows
                except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                    out.append(f"{path} has changed since the manifest was written (not readable as Parquet: {exc})")
                    continue
                if rows != f["rows"]:
                    out.append(f"{path} has changed since the manifest was written (row count)")
        return out

    def table(self, j: int):
        if j not in self._cache:
            pf = pq.ParquetFile(self.files[j]["path"])
            cols = None if self.columns is None else [c for c in self.columns if c in pf.schema_arrow.names]
            self._cache[j] = pf.read(columns=cols)
            if len(self._cache) > OPEN_FILES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(j)
        return self._cache[j]

    def rows(self, j: int, rows: list[int]) -> list[dict[str, Any]]:
        return self.table(j).take(rows).to_pylist()


INPUT_KINDS: dict[str, type] = {"parquet": ParquetInput, "lance": LanceInput}  # another input kind adds its row reader here
