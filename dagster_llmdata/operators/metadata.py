"""Rich metadata an operator can report without importing Dagster: the factory turns these into
Dagster's markdown and table metadata values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Markdown:
    text: str


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[dict[str, object]]


def histogram(counts: dict[int | float | str, int], label: str = "value", width: int = 30) -> tuple[Table, Markdown]:
    """Counts per bin as a table and as a bar chart in markdown: numeric bins in order, labelled
    bins (ranges) in the order given."""
    bins = sorted(counts) if all(isinstance(b, (int, float)) for b in counts) else list(counts)
    total = sum(counts.values()) or 1
    top = max(counts.values(), default=0) or 1
    rows = [{label: str(b), "docs": counts[b], "share": round(counts[b] / total, 4)} for b in bins]
    lines = [f"| {label} | docs | share | |", "|---:|---:|---:|---|"]
    lines += [f"| {b} | {counts[b]} | {counts[b] / total:.1%} | {'█' * max(1 if counts[b] else 0, round(width * counts[b] / top))} |"
              for b in bins]
    return Table([label, "docs", "share"], rows), Markdown("\n".join(lines))


def bins_of(values: Iterable[float], n_bins: int = 10) -> dict[str, int]:
    """Equal-width bins over the values' range (for continuous scores), labelled by their range."""
    values = [v for v in values if v is not None]
    if not values:
        return {}
    lo, hi = min(values), max(values)
    step = (hi - lo) / n_bins or 1.0
    counts = [0] * n_bins
    for v in values:
        counts[min(n_bins - 1, int((v - lo) / step))] += 1
    return {f"{lo + i * step:.3g}–{lo + (i + 1) * step:.3g}": c for i, c in enumerate(counts)}
