"""MixtureDataset: stream documents in a manifest's proportions, deterministically for a seed and
resumable from any sample offset.

Sample i is drawn from block i // BLOCK, whose random numbers come from a generator seeded by
(seed, block): the domain of every sample is fixed by the seed alone, so resuming at `start`
replays only the cheap domain draws of the blocks before it (no data is read). Within a domain,
documents are visited in a fresh permutation per epoch (without replacement until the domain is
exhausted, then again: repetition), or, when the manifest carries per-document weights, drawn with
probability proportional to their weight.

A plain iterable; when torch is installed it is also a `torch.utils.data.IterableDataset`, and
DataLoader workers split the samples between them (sample i goes to worker i % num_workers)."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dagster_llmdata.errors import ManifestError
from dagster_llmdata.mixture.store_input import LanceInput
from dagster_llmdata.mixture.manifest import Manifest, file_sha256, read_manifest, resolve_path, resolved_inputs

BLOCK = 4096
OPEN_FILES = 8

if importlib.util.find_spec("torch") is not None:
    from torch.utils.data import IterableDataset as _Base
else:  # torch is optional: without it this is a plain iterable
    class _Base:  # type: ignore[no-redef]
        pass


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


class MixtureDataset(_Base):
    """`for row in MixtureDataset(manifest, seed=0, start=0)`: dicts of the input columns plus
    `_sample` (the position in the stream) and `_domain`. `manifest` is a Manifest, a path to one,
    or a mixture's manifests folder (its latest). `limit` (default: the manifest's n_samples for its
    token budget; None-like 0 = endless) bounds the stream."""

    def __init__(self, manifest: Manifest | str | Path | dict, seed: int | None = None, start: int = 0,
                 limit: int | None = None, columns: list[str] | None = None, check_files: bool = True,
                 verify_hashes: bool = False, project: str | Path | None = None):
        super().__init__()
        # `project`: where the manifest's relative paths resolve (default: the project it lies in)
        self.manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, project)
        self.seed = self.manifest.seed if seed is None else int(seed)
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.start = int(start)
        self.limit = self.manifest.n_samples if limit is None else int(limit)
        self.columns = columns
        m = self.manifest
        self.domains = [d for d in m.domains if m.domains[d]["probability"] > 0 and m.draw.get(d)]
        if not self.domains:
            raise ManifestError(f"manifest {m.version or '(unwritten)'} has no domain to draw from")
        p = np.array([m.domains[d]["probability"] for d in self.domains], dtype=float)
        self._cdf = np.cumsum(p / p.sum())
        self._ranges = [np.array(m.draw[d], dtype=np.int64) for d in self.domains]
        self._cum = [np.cumsum(r[:, 3] - r[:, 2]) for r in self._ranges]
        self._sizes = [int(c[-1]) for c in self._cum]
        self._inputs = []
        self._specs = resolved_inputs(m)
        for spec in self._specs:
            if spec.get("kind") not in INPUT_KINDS:
                raise ManifestError(f"manifest input kind {spec.get('kind')!r} is not known here; known: {sorted(INPUT_KINDS)}")
            self._inputs.append(INPUT_KINDS[spec["kind"]](spec, columns))
        if check_files:
            if problems := [p for inp in self._inputs for p in inp.problems(verify_hashes)]:
                raise ManifestError("\n".join(problems))
        self._perms: dict[int, tuple[int, np.ndarray]] = {}
        self._doc_p = self._doc_probabilities() if m.doc_weights else None

    # ---- locating samples (no data read) --------------------------------------------------------

    def _block_draws(self, block: int) -> tuple[np.ndarray, np.random.Generator]:
        rng = np.random.default_rng([self.seed, block])
        dom = np.searchsorted(self._cdf, rng.random(BLOCK), side="right")
        return np.minimum(dom, len(self.domains) - 1), rng

    def _counts_before(self, block: int) -> np.ndarray:
        counts = np.zeros(len(self.domains), dtype=np.int64)
        for b in range(block):
            counts += np.bincount(self._block_draws(b)[0], minlength=len(self.domains))
        return counts

    def _locate(self, d: int, k: int) -> tuple[int, int, int]:
        """The k-th document of domain d (k in [0, size)) as (input, file, row)."""
        j = int(np.searchsorted(self._cum[d], k, side="right"))
        before = int(self._cum[d][j - 1]) if j else 0
        r = self._ranges[d][j]
        return int(r[0]), int(r[1]), int(r[2] + k - before)

    def _permutation(self, d: int, epoch: int) -> np.ndarray:
        """Domain d's document order in `epoch` (one cached per domain: draws move through epochs in order)."""
        cached = self._perms.get(d)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, 1_000_003, d, epoch]).permutation(self._sizes[d]))
            self._perms[d] = cached
        return cached[1]

    def _doc_probabilities(self) -> list[np.ndarray]:
        """Per-domain cumulative draw probabilities of the documents from the manifest's doc weights (1 for
        documents without one)."""
        m = self.manifest
        table = pq.read_table(resolve_path(m, m.doc_weights["path"]))
        weight_of = dict(zip(table.column("id").to_pylist(), table.column("weight").to_pylist()))
        ids_input = [ParquetInput(s, ["id"]) if s["kind"] == "parquet" else None for s in self._specs]
        out = []
        for d in range(len(self.domains)):
            w = np.ones(self._sizes[d])
            k = 0
            for i, j, lo, hi in self._ranges[d]:
                ids = ids_input[i].table(int(j)).column("id").slice(int(lo), int(hi - lo)).to_pylist() if ids_input[i] else []
                for n, doc_id in enumerate(ids):
                    w[k + n] = weight_of.get(doc_id, 1.0)
                k += hi - lo
            out.append(np.cumsum(w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))))
        return out

    def iter_locators(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int, tuple[int, int, int]]]:
        """(sample index, domain index, (input, file, row)) for samples start..stop-1."""
        block = start // BLOCK
        counts = self._counts_before(block)
        i = block * BLOCK
        while stop is None or i < stop:
            dom, rng = self._block_draws(block)
            picks = rng.random(BLOCK) if self._doc_p is not None else None
            for n in range(BLOCK):
                if stop is not None and i >= stop:
                    return
                d = int(dom[n])
                k = int(counts[d])
                counts[d] += 1
                if i >= start:
                    if picks is not None:
                        idx = int(np.searchsorted(self._doc_p[d], picks[n], side="right"))
                        doc = min(idx, self._sizes[d] - 1)
                    else:
                        epoch, pos = divmod(k, self._sizes[d])
                        doc = int(self._permutation(d, epoch)[pos])
                    yield i, d, self._locate(d, doc)
                i += 1
            block += 1

    def locators(self, start: int, n: int) -> list[tuple[int, int, int]]:
        return [loc for _, _, loc in self.iter_locators(start, start + n)]

    # ---- iteration -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stop = self.start + self.limit if self.limit else None
        worker, workers = _worker_info()
        pending: list[tuple[int, int, tuple[int, int, int]]] = []
        for item in self.iter_locators(self.start, stop):
            if item[0] % workers == worker:
                pending.append(item)
            if len(pending) >= 256:
                yield from self._read(pending)
                pending = []
        yield from self._read(pending)

    def _read(self, items: list[tuple[int, int, tuple[int, int, int]]]) -> Iterator[dict[str, Any]]:
        for i, d, (inp, f, row) in items:
            out = self._inputs[inp].rows(f, [row])[0]
            out["_sample"] = i
            out["_domain"] = self.domains[d]
            yield out


def _worker_info() -> tuple[int, int]:
    if _Base.__module__.startswith("torch"):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            return info.id, info.num_workers
    return 0, 1
