"""The core columns every dataset carries, and the extra columns of rejected/quarantined rows."""

from __future__ import annotations

import pyarrow as pa

CORE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("meta", pa.string()),  # JSON object: provenance (file, line, url, ...)
    ]
)

# What a dropped row carries on top of the doc's own columns.
DROP_FIELDS = [
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("kept_id", pa.string()),  # for duplicates: the id of the doc kept in its place
    pa.field("kept_partition", pa.string()),  # and the partition that doc is in
    pa.field("value", pa.float64()),  # the measured value that failed (word count, ratio, score)
    pa.field("threshold", pa.float64()),  # and the bound it failed
]


def with_columns(schema: pa.Schema, produced: dict[str, pa.DataType]) -> pa.Schema:
    """Input schema plus an operator's produced columns (an existing column keeps its place)."""
    for name, dtype in produced.items():
        idx = schema.get_field_index(name)
        if idx >= 0:
            schema = schema.set(idx, pa.field(name, dtype))
        else:
            schema = schema.append(pa.field(name, dtype))
    return schema


def drop_schema(schema: pa.Schema) -> pa.Schema:
    """Schema of the rejected / quarantine datasets of a stage whose kept rows have `schema`."""
    for f in DROP_FIELDS:
        if schema.get_field_index(f.name) < 0:
            schema = schema.append(f)
    return schema
