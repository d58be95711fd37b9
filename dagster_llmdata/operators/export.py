"""export_shards: training-ready Parquet shards of a target size, with token counts."""

from __future__ import annotations

import os
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from dagster_llmdata.io.parquet_store import IN_PROGRESS, iter_batches
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.base import Operator
from dagster_llmdata.config import OperatorParams


class ExportParams(OperatorParams):
    target_shard_bytes: int = Field(64 * 2**20, gt=0, description="Bytes of UTF-8 text per shard; a shard is closed once its text passes this.")
    tokenizer: str = Field(
        "spacy:en", min_length=1,
        description="How n_tokens is counted: 'spacy:<language code>' (spaCy's rule-based blank tokenizer, offline) "
        "or the path of a Hugging Face tokenizer.json.",
    )
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = Field("zstd", description="Parquet compression codec of the shards.")


class TokenCounter:
    """Counts tokens with a tokenizer that is on this machine: spaCy's rule-based blank tokenizer,
    or any Hugging Face tokenizer.json file."""

    def __init__(self, spec: str):
        if spec.startswith("spacy:"):
            import spacy

            self._nlp = spacy.blank(spec.split(":", 1)[1])
            self._nlp.max_length = 10**9
            self.count = lambda text: len(self._nlp.make_doc(text))
        else:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(spec)
            self.count = lambda text: len(tok.encode(text, add_special_tokens=False).ids)


class ExportShards(Operator):
    name = "export_shards"
    version = "1"
    description = (
        "Write the dataset as Parquet shards of about `target_shard_bytes` of text each, adding `n_tokens` per "
        "doc (spaCy blank tokenizer by default, or a tokenizer.json). Metadata: shards, tokens per domain."
    )
    Params = ExportParams
    produces = {"n_tokens": pa.int64()}
    kinds = ("parquet", "export")

    def run(self, run: StageRun) -> dict[str, Any]:
        p = self.params
        counter = TokenCounter(p.tokenizer)
        schema = run.output_schema(self.produced_columns())
        shards = ShardWriter(run.output_dir, schema, p.target_shard_bytes, p.compression)
        tokens_by_domain: dict[str, int] = {}
        with self.drops(run, schema) as drops, shards:
            for batch in iter_batches(run.input_files, batch_size=1024):
                for row in batch.to_pylist():
                    try:
                        row["n_tokens"] = counter.count(row.get("text") or "")
                    except Exception as exc:  # a doc the tokenizer chokes on is quarantined, not fatal
                        drops.quarantine_error(row, exc)
                        continue
                    shards.add(row)
                    dom = row.get("domain") or "unknown"
                    tokens_by_domain[dom] = tokens_by_domain.get(dom, 0) + row["n_tokens"]
        return {
            "shards": len(shards.shards),
            "total_tokens": sum(tokens_by_domain.values()),
            "tokens_by_domain": tokens_by_domain,
            "shard_files": shards.shards[:50],
        }


class ShardWriter:
    """Rolls over to a new shard file once the current one holds `target_bytes` of text. A shard is
    written in the dataset's hidden in-progress folder and moved in only when closed complete, so
    a killed export leaves no half-written shard where a trainer looks."""

    def __init__(self, folder, schema: pa.Schema, target_bytes: int, compression: str, batch_rows: int = 512):
        self.folder, self.schema, self.target_bytes, self.compression = folder, schema, target_bytes, compression
        self.batch_rows = batch_rows
        self.shards: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows: list[dict] = []

    def add(self, row: dict) -> None:
        if self._writer is None:
            name = f"shard-{len(self.shards):05d}.parquet"
            (self.folder / IN_PROGRESS).mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.folder / IN_PROGRESS / name, self.schema, compression=self.compression)
            self.shards.append({"file": name, "rows": 0, "text_bytes": 0, "tokens": 0})
        self._rows.append(row)
        shard = self.shards[-1]
        shard["rows"] += 1
        shard["text_bytes"] += len((row.get("text") or "").encode("utf-8", "surrogatepass"))
        shard["tokens"] += row["n_tokens"]
        if len(self._rows) >= self.batch_rows:
            self._flush()
        if shard["text_bytes"] >= self.target_bytes:
            self.close()

    def _flush(self) -> None:
        if self._rows and self._writer is not None:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self._rows, schema=self.schema))
        self._rows = []

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            name = self.shards[-1]["file"]
            os.replace(self.folder / IN_PROGRESS / name, self.folder / name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
