"""select: keep documents by a numeric column (a judge's or a classifier's score, a length, ...),
by fixed bounds, the k best, or the docs at or above a percentile.

Two passes over the Parquet input: the first reads only the column (and `id` for top_k) to find
the cut-off, the second routes every document. Documents whose value is null or NaN are
quarantined (`missing_value`), never ranked."""

from __future__ import annotations

import heapq
import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from dagster_llmdata.io.docsteps import row_to_document
from dagster_llmdata.io.parquet_store import iter_batches
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import Operator
from dagster_llmdata.config import OperatorParams

_PASS_ONE_BATCH = 65536

# which params each mode reads; the others must stay unset so a spec says what it does
_MODE_PARAMS = {"threshold": ("min", "max"), "top_k": ("k",), "percentile": ("percentile",)}


class SelectParams(OperatorParams):
    column: str = Field(..., min_length=1, description="Numeric column to select on (e.g. a judge's or a classifier's score).")
    mode: Literal["threshold", "top_k", "percentile"] = Field(
        "threshold",
        description="threshold: keep docs with min <= value <= max. top_k: keep the k docs with the highest values "
        "(ties at the cut-off broken by id, smallest first, so exactly k are kept). percentile: keep docs whose value "
        "is at or above the given percentile of the column (linear interpolation; every doc tied at the cut-off is kept).",
    )
    min: float | None = Field(None, ge=-1e300, le=1e300, description="threshold mode: smallest value kept (inclusive); unset: no lower bound.")
    max: float | None = Field(None, ge=-1e300, le=1e300, description="threshold mode: largest value kept (inclusive); unset: no upper bound.")
    k: int | None = Field(None, ge=1, le=10**12, description="top_k mode: how many docs to keep.")
    percentile: float | None = Field(None, ge=0, le=100, description="percentile mode: keep docs at or above this percentile of the column (0-100; 90 keeps about the top 10%).")

    @model_validator(mode="after")
    def _params_fit_mode(self) -> SelectParams:
        wanted = _MODE_PARAMS[self.mode]
        stray = [name for mode, names in _MODE_PARAMS.items() if mode != self.mode for name in names if getattr(self, name) is not None]
        if stray:
            raise ValueError(f"{', '.join(stray)} not used in mode {self.mode!r} (it reads {', '.join(wanted)})")
        if all(getattr(self, name) is None for name in wanted):
            raise ValueError(f"mode {self.mode!r} needs {' or '.join(wanted)}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class _Ranked:
    """A doc's place in the top_k order: higher value first, then smaller id. In the heap the
    smallest item is the worst kept doc, so `<` means 'ranks below'."""

    __slots__ = ("value", "id")

    def __init__(self, value: float, doc_id: str):
        self.value, self.id = value, doc_id

    def __lt__(self, other: _Ranked) -> bool:
        return self.value < other.value or (self.value == other.value and self.id > other.id)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Select(Operator):
    name = "select"
    version = "1"
    description = (
        "Keep docs by a numeric column: `threshold` (min <= value <= max, inclusive), `top_k` (the k highest; ties at "
        "the cut-off by id), or `percentile` (value at or above the column's percentile; ties kept). Rejected rows carry "
        "reason below_threshold / above_threshold / not_in_top_k / below_percentile with `value` and `threshold` (the "
        "cut-off); a null or NaN value is quarantined as missing_value. Metadata: the cut-off and how many were kept."
    )
    Params = SelectParams
    kinds = ("parquet", "select")

    def run(self, run: StageRun) -> dict[str, Any]:
        p = self.params
        self._check_column(run.input_schema)
        if p.mode == "top_k":
            ranked = self._top_k_cutoff(run.input_files)
            keep = self._top_k_rule(ranked)
            cutoffs = {"cutoff": None if ranked is None else ranked.value}
        elif p.mode == "percentile":
            cutoff = self._percentile_cutoff(run.input_files)
            keep = self._percentile_rule(cutoff)
            cutoffs = {"cutoff": cutoff}
        else:
            keep = self._threshold_rule()
            cutoffs = {"cutoff_min": p.min, "cutoff_max": p.max}
        counts = self._route(run, keep)
        # no cut-off (no value at all, or an unset bound) is left out rather than reported as None
        return {"mode": p.mode, "column": p.column, **{k: v for k, v in cutoffs.items() if v is not None}, **counts}

    def _check_column(self, schema: pa.Schema) -> None:
        column = self.params.column
        if schema.get_field_index(column) < 0:
            raise ValueError(f"select: column {column!r} is not in the input (columns: {', '.join(schema.names)})")
        dtype = schema.field(column).type
        if not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)):
            raise ValueError(f"select: column {column!r} is {dtype}, not numeric")

    # pass one: the cut-off

    def _top_k_cutoff(self, files: list[str]) -> _Ranked | None:
        """The k-th best (value, id), keeping only k entries in memory (a min-heap of the best so far)."""
        k, heap = self.params.k, []
        for batch in iter_batches(files, batch_size=_PASS_ONE_BATCH, columns=[self.params.column, "id"]):
            values = pc.cast(batch.column(0), pa.float64()).to_numpy(zero_copy_only=False)
            present = ~np.isnan(values)  # nulls come back as NaN
            if len(heap) == k:  # only a doc at least as good as the worst kept can get in
                present &= values >= heap[0].value
            ids = batch.column(1)
            for i in np.flatnonzero(present):
                item = _Ranked(float(values[i]), str(ids[i].as_py()))
                if len(heap) < k:
                    heapq.heappush(heap, item)
                elif heap[0] < item:
                    heapq.heapreplace(heap, item)
        return heap[0] if heap else None

    def _percentile_cutoff(self, files: list[str]) -> float | None:
        # the exact percentile needs every value: 8 bytes per doc, the column only
        parts = []
        for batch in iter_batches(files, batch_size=_PASS_ONE_BATCH, columns=[self.params.column]):
            values = pc.cast(batch.column(0), pa.float64()).to_numpy(zero_copy_only=False)
            parts.append(values[~np.isnan(values)])
        values = np.concatenate(parts) if parts else np.empty(0)
        return float(np.percentile(values, self.params.percentile)) if values.size else None

    # pass two: a rule per mode, (value, id) -> None (keep) or (reason, threshold)

    def _threshold_rule(self):
        lo, hi = self.params.min, self.params.max

        def rule(value: float, _doc_id: str):
            if lo is not None and value < lo:
                return "below_threshold", lo
            if hi is not None and value > hi:
                return "above_threshold", hi
            return None

        return rule

    def _top_k_rule(self, cutoff: _Ranked | None):
        def rule(value: float, doc_id: str):
            return ("not_in_top_k", cutoff.value) if _Ranked(value, doc_id) < cutoff else None

        return rule

    def _percentile_rule(self, cutoff: float | None):
        def rule(value: float, _doc_id: str):
            return ("below_percentile", cutoff) if value < cutoff else None

        return rule

    def _route(self, run: StageRun, keep) -> dict[str, int]:
        schema = run.output_schema({})
        column = self.params.column
        counts = {"kept": 0, "rejected": 0, "missing_value": 0}
        with run.kept_writer(schema) as kept, self.drops(run, schema) as drops:
            for batch in iter_batches(run.input_files, batch_size=1024):
                for row in batch.to_pylist():
                    doc = row_to_document(row)
                    value = doc.metadata.get(column)
                    if _is_missing(value):
                        counts["missing_value"] += 1
                        drops.quarantine(doc, "missing_value", detail=f"{column} is {value!r}")
                        continue
                    verdict = keep(float(value), doc.id)
                    if verdict is None:
                        counts["kept"] += 1
                        kept.write(doc)
                    else:
                        reason, threshold = verdict
                        counts["rejected"] += 1
                        drops.reject(doc, reason, value=float(value), threshold=threshold)
        return counts
