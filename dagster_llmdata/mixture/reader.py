"""MixtureDataset: stream documents in a run's mixture, deterministically and resumably, split
over ranks and DataLoader workers, switching mixtures at a step boundary without breaking order.

The order of the samples is `stream.Stream`'s: a function of the manifest history and the seed.
Ranks split that one global stream: rank r of W takes global samples r, r + W, r + 2W, ..., so
together their first k samples are the stream's first W*k. Within a rank, DataLoader workers
split it by whole batches of `batch_size` (worker w of N builds the rank's batches w, w + N, ...),
and since a DataLoader takes batches from its workers in turn, the rank sees the same sequence
for any worker count (given `batch_size` equal to the DataLoader's). Each worker reads only the
rows of its share.

`update(manifest, step=)` applies new weights from a step on; with a `record` file (a run's switch
record, JSON lines) every switch is appended to it and workers follow it before each batch, so
persistent workers switch too. A switch must be at or after what any worker may already have
built: `in_trainer.first_safe_batch` gives the first safe batch for a DataLoader's prefetch depth,
a rule fixed by configuration, never by timing.

A plain iterable; when torch is installed it is also a `torch.utils.data.IterableDataset`."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dagster_llmdata.errors import ManifestError
from dagster_llmdata.mixture.inputs import INPUT_KINDS, ParquetInput
from dagster_llmdata.mixture.manifest import (
    Manifest,
    read_manifest,
    resolve_path,
    resolved_inputs,
)
from dagster_llmdata.mixture.stream import (
    Segment,
    Stream,
    segment_dicts,
    switched_digest,
)

READ_BATCH = 256  # rows read together (per worker) when no batch size is given

if importlib.util.find_spec("torch") is not None:
    from torch.utils.data import IterableDataset as _Base
else:  # torch is optional: without it this is a plain iterable
    class _Base:  # type: ignore[no-redef]
        pass


class MixtureDataset(_Base):
    """`for row in MixtureDataset(manifest, seed=0)`: dicts of the input columns plus `_sample`
    (the position in the global stream), `_domain` and `_version` (the manifest it was drawn
    with). `manifest` is a Manifest, a path to one, or a mixture's manifests folder (its latest).

    `start`: samples this rank has already consumed (resume). `limit` (default: the first
    manifest's n_samples for its token budget; 0 = endless) bounds the global stream. `rank`,
    `world_size`: default from `torch.distributed` when it is initialised, else 0 and 1.
    `batch_size`: the per-device batch size (the DataLoader's), which makes the sequence
    independent of the worker count. `epoch_cap`: epochs a domain is read at most (None: no cap; default: the manifest's).
    `record`: the run's switch record (see `update`). With `tokenizer=` and `seq_len=` (and
    `packing=`, PackedMixture's keyword arguments) it is built as a `packing.PackedMixture` over
    this reader: packed token blocks with each token's domain, one item per step. Iterating again
    goes on from where the last iteration stopped in this process (`position`): one stream, not an epoch."""

    def __new__(cls, *args: Any, tokenizer: Any = None, seq_len: int | None = None, packing: dict[str, Any] | None = None,
                **kwargs: Any):
        if tokenizer is None:
            if seq_len is not None or packing:
                raise ValueError("seq_len= and packing= pack token blocks: give tokenizer= too")
            return super().__new__(cls)
        from dagster_llmdata.mixture.packing import (
            packed,  # packing imports no reader: no cycle
        )

        ds = super().__new__(cls)
        ds.__init__(*args, **kwargs)
        return packed(ds, tokenizer, seq_len, **(packing or {}))

    def __init__(self, manifest: Manifest | str | Path | dict, seed: int | None = None, start: int = 0,
                 limit: int | None = None, columns: list[str] | None = None, check_files: bool = True,
                 verify_hashes: bool = False, project: str | Path | None = None, rank: int | None = None,
                 world_size: int | None = None, batch_size: int | None = None, epoch_cap: int | None | str = "manifest",
                 record: str | Path | None = None, tokenizer: Any = None, seq_len: int | None = None,
                 packing: dict[str, Any] | None = None):
        super().__init__()  # (tokenizer, seq_len, packing: taken by __new__)
        # `project`: where the manifest's relative paths resolve (default: the project it lies in)
        self.project = project
        first = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, project)
        self.manifest = first
        self.seed = first.seed if seed is None else int(seed)
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.position = int(start)  # samples of this rank consumed (as far as this process knows)
        self.limit = first.n_samples if limit is None else int(limit)
        self.columns, self.check_files, self.verify_hashes = columns, check_files, verify_hashes
        self.epoch_cap = first.epoch_cap if epoch_cap == "manifest" else epoch_cap
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        # each rank keeps its own copy of the run's record (rank 0's is the run's), so the workers
        # of a rank follow what their own process wrote, with no wait on another process
        self.record = _rank_record(Path(record), self.rank) if record is not None else None
        self._record_seen: tuple[int, int] | None = None
        self.segments: list[Segment] = [Segment(0, first)]
        self._inputs: dict[str, list[Any]] = {}
        self._stream: Stream | None = None
        self._check(first)
        if self.record is not None:
            self._follow_record(initial=True)

    # ---- the manifest history ------------------------------------------------------------------

    @property
    def stream(self) -> Stream:
        if self._stream is None:
            self._stream = Stream(self.segments, self.seed, self.epoch_cap, self._doc_probabilities)
        return self._stream

    def samples_per_step(self) -> int:
        """Global samples one step of every rank consumes."""
        return (self.batch_size or 1) * self.world_size

    def update(self, manifest: Manifest | str | Path | dict, step: int | None = None, sample: int | None = None) -> dict[str, Any]:
        """Draw with `manifest` from a step on: `step` counts this reader's batches (of
        `batch_size`) per rank, so every rank switches at the same global sample; `sample` gives
        that global sample directly; neither: from this rank's current position. Documents keep
        their order (see stream.Stream). Returns the switch as recorded: {sample, step, version,
        manifest}; with a `record`, it is appended there for workers and for `reproduce`."""
        m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, self.project)
        if sample is None:
            local = self.position if step is None else step * (self.batch_size or 1)
            sample = local * self.world_size
        sample = int(sample)
        if sample < self.segments[-1].start:
            raise ManifestError(f"a switch at sample {sample} is before the last one (at {self.segments[-1].start})")
        self._check(m)
        entry = {"sample": sample, "step": sample // self.samples_per_step(), "version": m.version,
                 "manifest": str(m.path) if m.path else None}
        if self.record is not None:
            entry["digest"] = self.digest(sample)  # of the stream before it, which reproduce rebuilds
            self._append_record(entry)
        self._add_segment(Segment(sample, m))
        return entry

    def mark(self, step: int | None = None) -> dict[str, Any]:
        """Record a checkpoint in the run's record: the global sample reached (this rank's position,
        or `step` batches) and the digest of the stream up to it, for `reproduce_run` to check."""
        local = self.position if step is None else step * (self.batch_size or 1)
        sample = local * self.world_size
        entry = {"checkpoint": sample // self.samples_per_step(), "sample": sample, "digest": self.digest(sample)}
        if self.record is not None:
            self._append_record(entry)
        return entry

    def digest(self, stop: int) -> str:
        """Digest of global samples 0..stop-1: the manifest version and (input, file, row) of each."""
        versions = [s.manifest.version for s in self.segments]
        return switched_digest((versions[seg], loc) for _, _, seg, loc in self.stream.iter_locators(0, stop))

    def _add_segment(self, segment: Segment) -> None:
        # a switch replaces any later one (and one at 0, the first manifest)
        self.segments = [s for s in self.segments if s.start < segment.start] + [segment]
        self.manifest = segment.manifest
        self._stream = None

    def _append_record(self, entry: dict[str, Any]) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        with open(self.record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _follow_record(self, initial: bool = False) -> None:
        """Take the switches in the record file not applied yet (workers call it before each batch)."""
        try:
            st = self.record.stat()
        except FileNotFoundError:
            if initial:  # a new run: its record starts with the first manifest, from sample 0
                self._append_record({"sample": 0, "step": 0, "version": self.manifest.version,
                                     "manifest": str(self.manifest.path) if self.manifest.path else None})
            return
        if self._record_seen == (st.st_mtime_ns, st.st_size):
            return
        self._record_seen = (st.st_mtime_ns, st.st_size)
        entries = read_record(self.record)
        if entries and entries[0]["version"] != self.segments[0].manifest.version and initial:
            raise ManifestError(f"{self.record} is the record of a run that started with manifest {entries[0]['version']}, "
                                f"not {self.segments[0].manifest.version}")
        known = {(s.start, s.manifest.version) for s in self.segments}
        for e in entries[1:]:
            if "checkpoint" in e:
                continue
            if (e["sample"], e["version"]) not in known:
                m = read_manifest(e["manifest"], self.project)
                self._check(m)
                self._add_segment(Segment(int(e["sample"]), m))

    def _check(self, m: Manifest) -> None:
        if m.version in self._inputs:
            return
        readers = []
        for spec in resolved_inputs(m):
            if spec.get("kind") not in INPUT_KINDS:
                raise ManifestError(f"manifest input kind {spec.get('kind')!r} is not known here; known: {sorted(INPUT_KINDS)}")
            readers.append(INPUT_KINDS[spec["kind"]](spec, self.columns))
        if self.check_files:
            if problems := [p for inp in readers for p in inp.problems(self.verify_hashes)]:
                raise ManifestError("\n".join(problems))
        if not any(m.domains[d]["probability"] > 0 and m.draw.get(d) for d in m.domains):
            raise ManifestError(f"manifest {m.version or '(unwritten)'} has no domain to draw from")
        self._inputs[m.version] = readers

    def _doc_probabilities(self, m: Manifest, domains: list[str]) -> dict[str, np.ndarray]:
        """Per-domain cumulative draw probabilities of the documents from the manifest's doc
        weights (1 for documents without one)."""
        table = pq.read_table(resolve_path(m, m.doc_weights["path"]))
        weight_of = dict(zip(table.column("id").to_pylist(), table.column("weight").to_pylist()))
        ids_input = [ParquetInput(s, ["id"]) if s["kind"] == "parquet" else None for s in resolved_inputs(m)]
        out = {}
        for d in domains:
            ranges = m.draw[d]
            w = np.ones(sum(hi - lo for _, _, lo, hi in ranges))
            k = 0
            for i, j, lo, hi in ranges:
                ids = ids_input[i].table(int(j)).column("id").slice(int(lo), int(hi - lo)).to_pylist() if ids_input[i] else []
                for n, doc_id in enumerate(ids):
                    w[k + n] = weight_of.get(doc_id, 1.0)
                k += hi - lo
            out[d] = np.cumsum(w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w)))
        return out

    # ---- locating samples (no data read) --------------------------------------------------------

    def iter_locators(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, str, int, tuple[int, int, int]]]:
        """(global sample, domain, segment, (input, file, row)) for global samples start..stop-1."""
        return self.stream.iter_locators(start, stop)

    def locators(self, start: int, n: int) -> list[tuple[int, int, int]]:
        return [loc for _, _, _, loc in self.iter_locators(start, start + n)]

    # ---- state -----------------------------------------------------------------------------------

    def state_dict(self, step: int | None = None) -> dict[str, Any]:
        """What resumes this reader exactly: its position (samples of this rank consumed; `step`:
        that many batches of `batch_size` instead, for a loader whose workers this process does
        not see), the seed and the manifest history."""
        position = self.position if step is None else step * (self.batch_size or 1)
        return {"position": position, "seed": self.seed, "limit": self.limit, "epoch_cap": self.epoch_cap,
                "rank": self.rank, "world_size": self.world_size, "batch_size": self.batch_size,
                "segments": segment_dicts(self.segments)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: the same manifest history and position (the rank and world
        size of this reader stay: a resumed run on another world size reads the same global stream)."""
        segments = []
        for s in state["segments"]:
            m = self.manifest if s["version"] == self.manifest.version else read_manifest(s["manifest"], self.project)
            if m.version != s["version"]:
                raise ManifestError(f"{s['manifest']} is manifest {m.version}, the state names {s['version']}")
            self._check(m)
            segments.append(Segment(int(s["start"]), m))
        self.segments, self._stream = segments, None
        self.manifest = segments[-1].manifest
        self.seed, self.limit, self.epoch_cap = int(state["seed"]), int(state["limit"]), state["epoch_cap"]
        self.position = int(state["position"])

    # ---- iteration -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = _worker_info()
        rank, world, batch = self.rank, self.world_size, self.batch_size or 1
        stop = self.limit if self.limit else None

        def mine(g: np.ndarray) -> np.ndarray:  # this rank's samples in this worker's batches
            return (g % world == rank) & ((g // world // batch) % workers == worker)

        start = self.position * world + rank
        while True:
            items = self.stream.iter_locators(start, stop, want=mine)
            version = self._record_seen
            pending: list = []
            current = None  # the local batch being gathered
            for item in items:
                b = (item[0] - rank) // world // batch
                if b != current:
                    yield from self._read(pending)
                    pending, current = [], b
                    if self.record is not None:
                        self._follow_record()
                        if self._record_seen != version:  # a switch came: go on from this batch with it
                            start = b * batch * world + rank
                            break
                pending.append(item)
                if workers == 1 and self.batch_size is None and len(pending) >= READ_BATCH:
                    yield from self._read(pending)
                    pending = []
            else:
                yield from self._read(pending)
                return

    def _read(self, items: list[tuple[int, str, int, tuple[int, int, int]]]) -> Iterator[dict[str, Any]]:
        _, workers = _worker_info()
        for i, d, s, (inp, f, row) in items:
            m = self.segments[s].manifest
            out = self._inputs[m.version][inp].rows(f, [row])[0]
            out["_sample"] = i
            out["_domain"] = d
            out["_version"] = m.version
            if workers == 1:  # the position a checkpoint of this process resumes from
                self.position = (i - self.rank) // self.world_size + 1
            yield out


def run_record(storage: str | Path, mixture: str, run_id: str) -> Path:
    """Where a run's switch record lives: `<mixture storage>/<mixture>/runs/<run_id>/switches.jsonl`."""
    return Path(storage) / mixture / "runs" / run_id / "switches.jsonl"


def read_record(path: str | Path) -> list[dict[str, Any]]:
    """A run's switch record: one {sample, step, version, manifest, digest} per switch (the first
    the run's start) and one {checkpoint, sample, digest} per `mark`."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ManifestError(f"{path}:{n}: not a JSON switch entry") from None
    return out


def _rank_record(path: Path, rank: int) -> Path:
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        if _Base.__module__.startswith("torch"):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = int(rank or 0), int(world_size or 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


def _worker_info() -> tuple[int, int]:
    if _Base.__module__.startswith("torch"):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            return info.id, info.num_workers
    return 0, 1
