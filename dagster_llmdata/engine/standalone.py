"""One operator on files, outside Dagster (`llmdata op`, `apply_operator`), with the same
accounting as a pipeline: raw input goes through `ingest` first, exactly as the first stage of a
pipeline would, and what ingest quarantined stays in the ledger and the quarantine output."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from dagster_llmdata.engine.execute import StageOutcome, run_stage
from dagster_llmdata.io.parquet_store import count_by, count_rows, iter_batches, list_parquet, read_schema
from dagster_llmdata.io.schema import drop_schema
from dagster_llmdata.io.ledger import Ledger
from dagster_llmdata.operators import get_operator
from dagster_llmdata.operators.ingest import Ingest
from dagster_llmdata.operators.source import SourceOperator
from dagster_llmdata.config import ExecutorConfig
from dagster_llmdata.io.stage_run import StageContext, StageRun

# what `--out` may end in; the rejected / quarantine files take the same format
OUTPUT_SUFFIXES = (".parquet", ".jsonl.gz", ".jsonl")
# meta keys that ingest writes for provenance; they stay in `meta` instead of becoming columns
PROVENANCE_KEYS = {"file", "position", "error", "original_bytes"}


@dataclass(frozen=True)
class OutputPaths:
    kept: Path
    rejected: Path
    quarantine: Path
    suffix: str

    @classmethod
    def for_out(cls, out: str | Path) -> OutputPaths:
        out = Path(out)
        suffix = next((s for s in OUTPUT_SUFFIXES if out.name.lower().endswith(s)), None)
        if suffix is None:
            raise ValueError(f"--out {out}: the output format comes from its name; end it in {', '.join(OUTPUT_SUFFIXES)}")
        stem = out.name[: -len(suffix)]
        return cls(out, out.with_name(f"{stem}.rejected{suffix}"), out.with_name(f"{stem}.quarantine{suffix}"), suffix)


@dataclass
class PreparedInput:
    """The operator's input as one Parquet dataset, and what was quarantined on the way there."""

    files: list[str]
    n_in: int
    quarantine_files: list[str]


def apply_operator(
    name: str,
    in_path: str | Path,
    out_path: str | Path,
    params: dict[str, Any] | None = None,
    executor: ExecutorConfig | None = None,
    ingest_params: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> StageOutcome:
    """Use one operator on its own. `in_path`: a JSONL(.gz/.zst), Parquet, CSV, WARC or HTML/text
    file, or a folder of them. Kept rows go to `out_path` (.parquet, .jsonl or .jsonl.gz: every
    input column plus the produced ones), dropped rows to `<out>.rejected.<ext>` (plus stage,
    reason, kept_id, value, threshold) and quarantined rows to `<out>.quarantine.<ext>`; all three
    are always written, so nothing from an earlier run to the same `--out` is left beside them.
    The ledger counts every record of the input, including what ingest quarantined. `runtime`:
    the operator's runtime settings (a judge's endpoint), which are not part of its params."""
    op = get_operator(name)(params, runtime=runtime)
    outputs = OutputPaths.for_out(out_path)
    in_path = Path(in_path)
    if not in_path.exists():
        raise FileNotFoundError(f"input path does not exist: {in_path}")
    # standalone runs fork their workers unless told otherwise: a user's script then needs no
    # `__main__` guard (forkserver/spawn workers re-import it)
    executor = executor or ExecutorConfig()
    if "start_method" not in executor.model_fields_set:
        executor = executor.model_copy(update={"start_method": "fork"})
    _refuse_pool_in_bootstrapping_child(executor)
    with tempfile.TemporaryDirectory(prefix="llmdata-op-") as tmp:
        tmp = Path(tmp)
        if isinstance(op, SourceOperator):
            op = op.with_params(ingest_params or {})
            prepared = PreparedInput(op.input_files(in_path), 0, [])
            input_schema = op.input_schema
        else:
            prepared = prepare_input(in_path, tmp / "prepared", executor, ingest_params or {})
            input_schema = read_schema(prepared.files)
        run = scratch_run(name, prepared.files, tmp / "op", executor, input_schema, in_path)
        outcome = run_stage(op, run)
        quarantine_files = prepared.quarantine_files + list_parquet(run.quarantine_dir)
        kept_files, rejected_files = list_parquet(run.output_dir), list_parquet(run.rejected_dir)
        if not isinstance(op, SourceOperator):
            # the whole path's ledger, recounted from the files that are about to be written
            outcome.ledger = Ledger(
                n_in=prepared.n_in,
                n_out=count_rows(kept_files),
                rejected=_reasons(rejected_files),
                quarantined=_reasons(quarantine_files),
            )
        outputs.kept.parent.mkdir(parents=True, exist_ok=True)
        write_rows(kept_files, outputs.kept, outcome.schema)
        write_rows(rejected_files, outputs.rejected, drop_schema(outcome.schema))
        write_rows(quarantine_files, outputs.quarantine, drop_schema(outcome.schema))
    return outcome


def prepare_input(path: Path, tmp: Path, executor: ExecutorConfig, ingest_params: dict[str, Any]) -> PreparedInput:
    """A Parquet dataset (string `text` column) is used as it is, after rows without usable text are
    set aside; anything else goes through `ingest`, as the first stage of a pipeline would."""
    tmp.mkdir(parents=True, exist_ok=True)
    schema = _parquet_schema(path) if not ingest_params else None
    if schema is not None and schema.get_field_index("text") >= 0 and pa.types.is_string(schema.field("text").type):
        return _prepare_parquet_dataset(path, tmp)
    source = Ingest(ingest_params)
    run = scratch_run(source.name, source.input_files(path), tmp / "ingest", executor, source.input_schema, path)
    ingest = run_stage(source, run)
    dataset = tmp / "input.parquet"
    _meta_fields_to_columns(list_parquet(run.output_dir), dataset)
    return PreparedInput([str(dataset)], ingest.ledger.n_in, list_parquet(run.quarantine_dir))


def scratch_run(stage: str, files: list[str], folder: Path, executor: ExecutorConfig, schema: pa.Schema | None, source: Path) -> StageRun:
    """A stage run whose datasets live in a scratch folder; `source` is the raw input (for ingest's paths)."""
    return StageRun(
        stage=stage,
        input_files=files,
        output_dir=folder / "data",
        rejected_dir=folder / "rejected",
        quarantine_dir=folder / "quarantine",
        work_dir=folder / "work",
        executor=executor,
        input_schema=schema,
        # the input's path names its partition (a store keyed by partition keeps one input's rows apart from another's)
        context=StageContext(partition=str(source.resolve()), source_root=source if source.is_dir() else source.parent),
    )


def _parquet_schema(path: Path) -> pa.Schema | None:
    if not (path.is_file() and path.name.lower().endswith(".parquet")):
        return None
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
        return None  # ingest quarantines the file with its reason


def _prepare_parquet_dataset(path: Path, tmp: Path) -> PreparedInput:
    """Rows with null or blank text are quarantined (as ingest would); a missing or non-string id
    becomes a string id."""
    pf = pq.ParquetFile(path)
    dataset, quarantine = tmp / "input.parquet", tmp / "quarantine.parquet"
    writer = quarantine_writer = None
    n_quarantined = 0
    try:
        for i, batch in enumerate(pf.iter_batches(batch_size=4096)):
            table = _with_string_ids(pa.Table.from_batches([batch]), path.name, i * 4096)
            blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(table.column("text")), ""), True)
            good, bad = table.filter(pc.invert(blank)), table.filter(blank)
            if writer is None:
                writer = pq.ParquetWriter(dataset, good.schema)
            writer.write_table(good)
            if bad.num_rows:
                reasons = ["missing_text_field" if t is None else "empty_text" for t in bad.column("text").to_pylist()]
                bad = _append_drop_columns(bad, "input", reasons)
                if quarantine_writer is None:
                    quarantine_writer = pq.ParquetWriter(quarantine, bad.schema)
                quarantine_writer.write_table(bad)
                n_quarantined += bad.num_rows
        if writer is None:
            pq.write_table(_with_string_ids(pf.schema_arrow.empty_table(), path.name, 0), dataset)
    finally:
        for w in (writer, quarantine_writer):
            if w is not None:
                w.close()
    return PreparedInput([str(dataset)], pf.metadata.num_rows, [str(quarantine)] if n_quarantined else [])


def _with_string_ids(table: pa.Table, file_name: str, offset: int) -> pa.Table:
    if "id" not in table.column_names:
        ids = [xxhash.xxh3_64_hexdigest(f"{file_name}\x00{offset + i}".encode()) for i in range(table.num_rows)]
        return table.add_column(0, "id", pa.array(ids, pa.string()))
    if table.schema.field("id").type != pa.string():
        return table.set_column(table.column_names.index("id"), "id", table.column("id").cast(pa.string()))
    return table


def _append_drop_columns(table: pa.Table, stage: str, reasons: list[str]) -> pa.Table:
    n = table.num_rows
    columns = {"stage": pa.array([stage] * n, pa.string()), "reason": pa.array(reasons, pa.string())}
    for field in drop_schema(pa.schema([])):
        column = columns.get(field.name, pa.nulls(n, field.type))
        idx = table.schema.get_field_index(field.name)
        table = table.set_column(idx, field, column) if idx >= 0 else table.append_column(field, column)
    return table


def _meta_fields_to_columns(files: list[str], dest: Path) -> None:
    """Ingest keeps a record's extra fields in `meta`; a standalone output gives them back as
    columns (typed from every value seen: two passes, one batch in memory at a time)."""
    kinds: dict[str, set[type]] = {}
    for batch in iter_batches(files, columns=["meta"]):
        for raw in batch.column(0).to_pylist():
            for key, value in (json.loads(raw) if raw else {}).items():
                kinds.setdefault(key, set()).add(type(value))
    names = set(read_schema(files).names)
    extra = {k: _arrow_type(v) for k, v in sorted(kinds.items()) if k not in PROVENANCE_KEYS and k not in names}
    schema = read_schema(files)
    for key, dtype in extra.items():
        schema = schema.append(pa.field(key, dtype))
    with pq.ParquetWriter(dest, schema) as writer:
        for batch in iter_batches(files):
            table = pa.Table.from_batches([batch])
            metas = [json.loads(m) if m else {} for m in table.column("meta").to_pylist()]
            for key, dtype in extra.items():
                values = [m.get(key) for m in metas]
                if dtype == pa.string():
                    values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
                table = table.append_column(key, pa.array(values, dtype))
            writer.write_table(table.cast(schema))


def _arrow_type(kinds: set[type]) -> pa.DataType:
    kinds = kinds - {type(None)}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()  # text, or objects / lists / mixed types as their JSON text


def _reasons(files: list[str]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(count_by(files, "reason").items(), key=lambda kv: str(kv[0]))}


def write_rows(files: list[str], dest: Path, schema: pa.Schema) -> None:
    """Stream the rows of `files` into one output file (Parquet or JSONL by `dest`'s name),
    replacing whatever was there; an empty input still writes an empty file."""
    schemas = [pq.read_schema(f) for f in files]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else schema
    suffix = OutputPaths.for_out(dest).suffix
    tmp = dest.with_name(f".{dest.name}.tmp")
    if suffix == ".parquet":
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in _aligned_batches(files, schema):
                writer.write_batch(batch)
    else:
        import gzip

        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            for batch in _aligned_batches(files, schema):
                for row in batch.to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    tmp.replace(dest)


def _aligned_batches(files: list[str], schema: pa.Schema):
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=2048):
            columns = [
                batch.column(name).cast(field.type) if name in batch.schema.names else pa.nulls(batch.num_rows, field.type)
                for field in schema for name in [field.name]
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)


def _refuse_pool_in_bootstrapping_child(executor: ExecutorConfig) -> None:
    """With workers > 1 datatrove starts a process pool; under `forkserver`/`spawn` a new process
    re-imports the calling script (as `__mp_main__`), so a script without an
    `if __name__ == "__main__":` guard calls us again from there. Say so instead of looping."""
    main = sys.modules.get("__mp_main__")
    if main is not None and main is not sys.modules.get("__main__"):  # the main process aliases the two
        raise RuntimeError(
            f"apply_operator was called while {getattr(main, '__file__', 'the main script')} was being re-imported by a "
            f"worker process ({executor.start_method} start method): put the call under "
            "`if __name__ == \"__main__\":`, or leave `start_method` unset (standalone runs then fork their workers)"
        )


__all__ = ["OutputPaths", "apply_operator", "prepare_input", "write_rows"]
