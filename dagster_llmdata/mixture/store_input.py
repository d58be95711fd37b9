"""The `lance` input kind of a mixture: a LanceDB sample table pinned at one version.

A Lance version never changes once written, so a manifest that names (uri, table, version) reads
the same rows in the same order however far the table has moved on since, as long as the version
is kept: planning tags it (`mixture-<name>-v<version>`), and Lance's cleanup never deletes a
tagged version. The manifest records the version's row count and a digest of its ids in row
order, checked before any row is read.

Manifest entry: {kind: "lance", dataset, uri, table, version, tag, domain_column, tokens_column,
files: [{path, rows, sha256 (of the ids), partition: null, data_version}]}: the whole version is
one "file", addressed by row offset in its scan order."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from dagster_llmdata.errors import ManifestError, StoreError
from dagster_llmdata.store.lance_store import SampleStore, tag_name
from dagster_llmdata.engine.datasets import split_dataset_name, stage_layout
from dagster_llmdata.mixture.manifest import pin_path, read_manifest, resolved_inputs
from dagster_llmdata.spec.project import read_project

ID_BATCH = 65536


def lance_location(inp, root: Path, pipelines: dict | None) -> tuple[str, str]:
    """(uri, table) of a mixture input `pipeline/stage` whose stage is a lance_table: the stage's
    own `uri`/`table` params, else <storage>/<pipeline>/lance and the stage's name."""

    if pipelines is None:

        pipelines = read_project(Path(root).resolve()).pipelines
    layout, stage = stage_layout(root, inp.dataset, pipelines)
    pipeline, _ = split_dataset_name(inp.dataset)
    params = pipelines[pipeline].stage(stage).params
    uri = params.get("uri") or str(layout.storage / pipeline / "lance")
    return str(uri), params.get("table") or stage


def ids_digest(dataset) -> str:
    h = hashlib.sha256()
    for batch in dataset.to_batches(columns=["id"], batch_size=ID_BATCH):
        for doc_id in batch.column(0).to_pylist():
            h.update(doc_id.encode())
            h.update(b"\n")
    return h.hexdigest()


def scan_lance_input(inp, index: int, root: Path, pipelines: dict | None, mixture: str, domains: dict, scan_factory) -> dict[str, Any]:
    """Pin the table's latest version (tagged for the mixture), and add its rows per domain as
    ranges (index, 0, row_start, row_end) to `domains` (DomainScan per domain)."""
    uri, table = lance_location(inp, root, pipelines)
    store = SampleStore(uri, table)
    tbl = store.table()
    version = tbl.version
    tag = store.tag(f"mixture-{mixture}-v{version}", version)
    ds = tbl.to_lance()
    names = ds.schema.names
    cols = [c for c in (inp.domain_column, inp.tokens_column if inp.tokens_column in names else "text") if c in names]
    row = 0
    for batch in ds.to_batches(columns=cols or ["id"], batch_size=ID_BATCH):
        n = batch.num_rows
        dom = batch.column(inp.domain_column).to_pylist() if inp.domain_column in names else [None] * n
        if inp.tokens_column in names:
            tok = pc.fill_null(batch.column(inp.tokens_column), 0).to_pylist()
        elif "text" in names:  # about 4 bytes a token, as for Parquet inputs
            tok = [math.ceil(b / 4) for b in pc.fill_null(pc.binary_length(batch.column("text")), 0).to_pylist()]
        else:
            tok = [0] * n
        for k in range(n):
            s = domains.setdefault(dom[k] or "unknown", scan_factory())
            s.docs += 1
            s.tokens += int(tok[k])
            if s.ranges and s.ranges[-1][:2] == [index, 0] and s.ranges[-1][3] == row + k:
                s.ranges[-1][3] += 1
            else:
                s.ranges.append([index, 0, row + k, row + k + 1])
        row += n
    pinned = uri if "://" in uri else pin_path(uri, root)  # a local table: relative to the project root
    return {"kind": "lance", "dataset": inp.dataset, "uri": pinned, "table": table, "version": version, "tag": tag,
            "domain_column": inp.domain_column, "tokens_column": inp.tokens_column,
            "files": [{"path": f"{pinned}#{table}@v{version}", "rows": row, "sha256": ids_digest(ds), "partition": None,
                       "data_version": f"lance-v{version}"}]}


class LanceInput:
    """Rows of a `lance` manifest input by row offset, read at the pinned version (by its tag when
    the number alone is gone)."""

    CACHE_ROWS = 8

    def __init__(self, spec: dict[str, Any], columns: list[str] | None):
        self.spec = spec
        self.columns = columns
        self.files = spec["files"]
        self._ds = None
        self._cache: OrderedDict[int, dict] = OrderedDict()

    @property
    def dataset(self):
        if self._ds is None:
            s = self.spec
            try:
                tbl = SampleStore(s["uri"], s["table"]).table(s["version"])
            except StoreError:
                if not s.get("tag"):
                    raise
                tbl = SampleStore(s["uri"], s["table"]).table(s["tag"])
            self._ds = tbl.to_lance()
        return self._ds

    def check(self, verify_hashes: bool) -> None:
        if problems := self.problems(verify_hashes):
            raise ManifestError("\n".join(problems))

    def problems(self, verify_hashes: bool) -> list[str]:
        """The one line saying how the pinned version is not what the manifest pinned (none if it is)."""
        s, f = self.spec, self.files[0]
        try:
            ds = self.dataset
            tag_at = SampleStore(s["uri"], s["table"]).tags().get(s["tag"]) if s.get("tag") else None
        except StoreError as exc:
            return [f"lance input {s['table']!r} at {s['uri']}: {exc}"]
        if ds.version != s["version"]:
            return [f"lance input {s['table']!r} at {s['uri']}: tag {s.get('tag')!r} points at version {ds.version}, the manifest pins {s['version']}"]
        if tag_at is not None and tag_at != s["version"]:
            return [f"lance input {s['table']!r} at {s['uri']}: tag {s['tag']!r} now points at version {tag_at}, the manifest pins {s['version']}"]
        if ds.count_rows() != f["rows"]:
            return [f"lance input {s['table']!r} at {s['uri']} v{s['version']} has {ds.count_rows()} rows, the manifest says {f['rows']}"]
        if verify_hashes and ids_digest(ds) != f["sha256"]:
            return [f"lance input {s['table']!r} at {s['uri']} v{s['version']}: its ids differ from the manifest's digest"]
        return []

    def rows(self, j: int, rows: list[int]) -> list[dict[str, Any]]:
        cols = None
        if self.columns is not None:
            cols = [c for c in self.columns if c in self.dataset.schema.names]
        elif "vector" in self.dataset.schema.names:  # a stream of samples has no use for the vectors
            cols = [c for c in self.dataset.schema.names if c != "vector"]
        return self.dataset.take(rows, columns=cols).to_pylist()


def pinned_versions(manifests: list[str | Path], uri: str, table: str) -> set[int]:
    """Versions of (uri, table) that these manifests pin."""
    out = set()
    for path in manifests:
        for inp in resolved_inputs(read_manifest(path)):
            if inp.get("kind") == "lance" and _same_uri(inp["uri"], uri) and inp["table"] == table:
                out.add(int(inp["version"]))
    return out


def _same_uri(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


__all__ = ["LanceInput", "pinned_versions", "scan_lance_input", "tag_name"]
