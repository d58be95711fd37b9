"""The persistent dedup index of one stage: one entry per partition, derived from that
partition's kept dataset, so a new partition is checked against everything kept before it.

Who wins: first landed keeps. Partitions are ordered by the sequence number they got when they
first entered the index (the order they were first deduplicated, which the landing sensor makes
the order files landed); a re-run keeps its number. A partition is compared only against
partitions ordered before it, so its result depends on nothing that lands later.

The kept datasets are the truth and the index a cache of them: an entry counts only while its
partition has a complete materialisation (a ledger record), is rebuilt from the kept data when
that data changed since (a re-run, an earlier build with other params), and is ignored once the
partition's data is gone. Entries are arrays on disk, read memory-mapped: memory stays bounded
by one partition, not the corpus. Callers serialise runs of the stage (see `materialise`); the
index's own lock only guards its manifest."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.io.ledger import load_record

MANIFEST = "manifest.json"
# arrays of one entry, computed from a partition's kept files
EntryBuilder = Callable[[list[str]], dict[str, np.ndarray]]


def files_token(files: list[str]) -> str:
    """Identity of a dataset's files (path, size, mtime): changes whenever they are rewritten."""
    h = hashlib.sha1()
    for f in files:
        st = os.stat(f)
        h.update(f"{Path(f).name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class IndexEntry:
    partition: str  # partition folder, as the layout names it
    seq: int
    folder: Path
    kept_files: tuple[str, ...]

    def array(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")

    def take(self, ordinals: np.ndarray, columns: list[str]) -> dict[str, list]:
        """Columns of the kept rows at these ordinals (row numbers over the kept files in order),
        reading only the row groups that hold them."""
        return take_rows(list(self.kept_files), ordinals, columns)


def take_rows(files: list[str], ordinals: np.ndarray, columns: list[str]) -> dict[str, list]:
    ordinals = np.asarray(ordinals, dtype=np.int64)
    out = {c: [None] * len(ordinals) for c in columns}
    order = np.argsort(ordinals, kind="stable")
    wanted = ordinals[order]
    base = 0
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo, hi = np.searchsorted(wanted, [base, base + n])
            if hi > lo:
                table = pf.read_row_group(g, columns=columns)
                for c in columns:
                    values = table.column(c).take(wanted[lo:hi] - base).to_pylist()
                    for pos, v in zip(order[lo:hi], values):
                        out[c][pos] = v
            base += n
    return out


class DedupIndex:
    """Entries of one kind (`exact`, `minhash`) for one stage, built with one `scheme` (params
    that shape the arrays: an entry built with another scheme is rebuilt)."""

    def __init__(self, stage_root: Path, kind: str, scheme: str, build: EntryBuilder):
        self.stage_root = Path(stage_root)
        self.dir = self.stage_root / "index" / kind
        self.scheme = scheme
        self.build = build

    # -- what a partition is compared against ------------------------------------------------

    def earlier_partitions(self, partition: str) -> list[tuple[int | None, str]]:
        """(seq, partition) of the partitions `partition` is compared against, in order: those
        with a complete materialisation and a smaller seq (all of them if it has none yet)."""
        seqs = self._manifest()["seq"]
        own = seqs.get(partition)
        done = [p for p in self._complete_partitions() if p != partition]
        known = sorted((seqs[p], p) for p in done if p in seqs)
        # complete but never indexed (data from before the index existed): ordered after the known
        new = [(None, p) for p in done if p not in seqs]
        if own is None:
            return known + new
        return [(s, p) for s, p in known if s < own]

    def compared_state(self, partition: str) -> str:
        """A digest of what `partition` is compared against (each earlier partition's kept files
        and this scheme): part of the stage's fingerprint, and its Dagster data version."""
        h = hashlib.sha1(self.scheme.encode())
        for _, p in self.earlier_partitions(partition):
            h.update(f"{p}\0{files_token(self._kept_files(p))}\n".encode())
        return h.hexdigest()[:16]

    def entries_before(self, partition: str) -> Iterator[IndexEntry]:
        """The entries `partition` is compared against, each (re)built first if its kept data
        changed since it was written."""
        for _, p in self.earlier_partitions(partition):
            entry = self._current_entry(p)
            if entry is not None:
                yield entry

    def later_partitions(self, partition: str) -> list[str]:
        """Partitions ordered after `partition`: the ones a change to it makes stale."""
        seqs = self._manifest()["seq"]
        own = seqs.get(partition)
        return [p for p in self._complete_partitions() if p != partition and (own is None or seqs.get(p, own + 1) > own)]

    # -- writing ---------------------------------------------------------------------------------

    def commit(self, partition: str, kept_files: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Store `partition`'s entry for its kept files (keeping its seq if it had one)."""
        with self._locked():
            manifest = self._manifest()
            seq = manifest["seq"].get(partition)
            if seq is None:
                seq = manifest["next"]
                manifest["seq"][partition] = seq
                manifest["next"] = seq + 1
            folder = self._entry_folder(partition)
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
            (tmp / "entry.json").write_text(json.dumps({"partition": partition, "scheme": self.scheme, "kept": files_token(kept_files)}))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            self._save_manifest(manifest)

    def forget(self, partition: str) -> None:
        """Drop a removed partition's entry and its place in the order (landing again, it is new)."""
        with self._locked():
            manifest = self._manifest()
            if manifest["seq"].pop(partition, None) is not None:
                self._save_manifest(manifest)
            shutil.rmtree(self._entry_folder(partition), ignore_errors=True)

    # -- internals -------------------------------------------------------------------------------

    def _current_entry(self, partition: str) -> IndexEntry | None:
        kept = self._kept_files(partition)
        folder = self._entry_folder(partition)
        try:
            meta = json.loads((folder / "entry.json").read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("scheme") != self.scheme or meta.get("kept") != files_token(kept):
            self.commit(partition, kept, self.build(kept))
        seq = self._manifest()["seq"][partition]
        return IndexEntry(partition, seq, folder, tuple(kept))

    def _kept_files(self, partition: str) -> list[str]:
        return list_parquet(self.stage_root / "data" / partition)

    def _complete_partitions(self) -> list[str]:
        base = self.stage_root / "data"
        if not base.exists():
            return []
        return sorted(str(p.parent.relative_to(base)) for p in base.rglob("_ledger.json") if load_record(p.parent) is not None)

    def _entry_folder(self, partition: str) -> Path:
        return self.dir / "entries" / hashlib.sha1(partition.encode()).hexdigest()[:20]

    def _manifest(self) -> dict:
        try:
            return json.loads((self.dir / MANIFEST).read_text())
        except (OSError, ValueError):
            return {"seq": {}, "next": 0}

    def _save_manifest(self, manifest: dict) -> None:
        path = self.dir / MANIFEST
        tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
