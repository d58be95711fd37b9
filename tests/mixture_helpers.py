"""Helpers for the mixture tests: a project whose `tiny` pipeline has stage data on disk, written
in the layout a materialisation leaves (Parquet files + the ledger record with a data version)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dagster_llmdata.io.layout import PipelineLayout
from dagster_llmdata.io.ledger import save_record

from tests.conftest import PIPELINE_YAML


def write_stage(root: Path, stage: str, partition: str, rows: list[dict], pipeline: str = "tiny", files: int = 1) -> Path:
    folder = PipelineLayout(root / "data" / "pipelines", pipeline).data_dir(stage, partition)
    folder.mkdir(parents=True, exist_ok=True)
    per = max(1, -(-len(rows) // files))
    for k in range(files):
        chunk = rows[k * per:(k + 1) * per]
        if chunk or k == 0:
            pq.write_table(pa.Table.from_pylist(chunk, schema=_schema(rows)), folder / f"shard-{k:05d}.parquet")
    save_record(folder, {"data_version": f"dv-{partition}-{len(rows)}", "ledger": {}, "fingerprint": "x"})
    return folder


def _schema(rows):
    return pa.schema([("id", pa.string()), ("text", pa.string()), ("domain", pa.string()), ("n_tokens", pa.int64())])


def docs(domain: str, n: int, tokens: int = 10, prefix: str | None = None) -> list[dict]:
    return [{"id": f"{prefix or domain}-{i}", "text": f"{domain} doc {i} " + "w " * tokens, "domain": domain, "n_tokens": tokens}
            for i in range(n)]


MIXTURE_YAML = textwrap.dedent(
    """\
    mixture: mix
    inputs:
      - {dataset: tiny/shards}
    token_budget: 1500
    seed: 7
    """
)


def mixture_project(root: Path, mixture_yaml: str = MIXTURE_YAML, data: dict[str, list[dict]] | None = None) -> Path:
    (root / "assets").mkdir(parents=True, exist_ok=True)
    (root / "sensors").mkdir(exist_ok=True)
    (root / "assets" / "tiny.yaml").write_text(PIPELINE_YAML)
    (root / "assets" / "mix.yaml").write_text(mixture_yaml)
    if data is None:
        data = {"web/a.jsonl": docs("code", 30, 20) + docs("prose", 50, 10), "web/b.jsonl": docs("news", 20, 40)}
    for partition, rows in data.items():
        write_stage(root, "shards", partition, rows, files=2)
    return root
