"""The ledger of one stage over one partition: n_in = n_out + rejected + quarantined,
counted from the files on disk (not from the operator's own say-so)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dagster_llmdata.io.parquet_store import count_by, count_rows, list_parquet

LEDGER_FILE = "_ledger.json"


@dataclass
class Ledger:
    n_in: int
    n_out: int
    rejected: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def n_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def balanced(self) -> bool:
        return self.n_in == self.n_out + self.n_rejected + self.n_quarantined

    @property
    def missing(self) -> int:
        return self.n_in - (self.n_out + self.n_rejected + self.n_quarantined)

    def to_dict(self) -> dict:
        return asdict(self)


def _by_reason(folder: Path) -> dict[str, int]:
    return {str(k): v for k, v in sorted(count_by(list_parquet(folder), "reason").items(), key=lambda kv: str(kv[0]))}


def count_ledger(n_in: int, output_dir: Path, rejected_dir: Path, quarantine_dir: Path) -> Ledger:
    return Ledger(
        n_in=n_in,
        n_out=count_rows(list_parquet(output_dir)),
        rejected=_by_reason(rejected_dir),
        quarantined=_by_reason(quarantine_dir),
    )


def save_record(output_dir: Path, record: dict) -> None:
    """The record marks a stage's data complete: written (atomically) only once it is."""
    path = Path(output_dir) / LEDGER_FILE
    tmp = path.with_name(f".{LEDGER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def remove_record(output_dir: Path) -> None:
    """First thing a re-run does: from here on the old data no longer counts as complete."""
    (Path(output_dir) / LEDGER_FILE).unlink(missing_ok=True)


def load_record(output_dir: Path) -> dict | None:
    path = Path(output_dir) / LEDGER_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None
