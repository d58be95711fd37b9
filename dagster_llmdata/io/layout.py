"""Where a pipeline's datasets live: <storage>/<pipeline>/<stage>/{data,rejected,quarantine,work}/<partition>/."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._=/-]")


# what Dagster refuses inside a partition key
INVALID_KEY_PARTS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def partition_folder(key: str) -> str:
    """A partition key as a relative folder (source/file name), never escaping the stage folder.
    A key that needed cleaning gets a short hash, so `a b.jsonl` and `a_b.jsonl` stay apart."""
    parts = [p for p in _UNSAFE.sub("_", key).split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"partition key {key!r} has no usable name")
    folder = "/".join(parts)
    if folder != key:
        folder += "-" + hashlib.sha1(key.encode()).hexdigest()[:8]
    return folder


@dataclass(frozen=True)
class PipelineLayout:
    storage: Path
    pipeline: str

    def stage_root(self, stage: str) -> Path:
        return self.storage / self.pipeline / stage

    def data_dir(self, stage: str, partition: str) -> Path:
        return self.stage_root(stage) / "data" / partition_folder(partition)

    def rejected_dir(self, stage: str, partition: str) -> Path:
        return self.stage_root(stage) / "rejected" / partition_folder(partition)

    def quarantine_dir(self, stage: str, partition: str) -> Path:
        return self.stage_root(stage) / "quarantine" / partition_folder(partition)

    def work_dir(self, stage: str, partition: str) -> Path:
        return self.stage_root(stage) / "work" / partition_folder(partition)

    def partition_dirs(self, stage: str, partition: str) -> tuple[Path, Path, Path, Path]:
        """Everything a stage writes for one partition: data, rejected, quarantine, work."""
        return tuple(f(stage, partition) for f in (self.data_dir, self.rejected_dir, self.quarantine_dir, self.work_dir))

    def lock_file(self, stage: str, partition: str) -> Path:
        """Held while the stage's partition is materialised; outside the partition's own work
        folder, which a re-run deletes."""
        return self.stage_root(stage) / "work" / ".locks" / f"{partition_folder(partition)}.lock"

    def partitions_on_disk(self, stage: str) -> list[str]:
        """Partition folders (as `partition_folder` names them) holding a finished materialisation."""
        base = self.stage_root(stage) / "data"
        return sorted(str(p.parent.relative_to(base)) for p in base.rglob("_ledger.json")) if base.exists() else []
