"""The engine side of a pipeline reading another's stage: the first stage reads exactly the
upstream partition's kept documents (not its bookkeeping), keeps ids and columns, records each
document's upstream hop, balances its ledger, and refuses an upstream partition that is not done."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from dagster_llmdata.engine.materialise import materialise_chain, pipeline_context
from dagster_llmdata.errors import PartitionInputMissing, SpecError
from dagster_llmdata.io.ledger import LEDGER_FILE
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.spec.pipeline import load_pipeline_spec
from dagster_llmdata.spec.project import read_project

from ..two_pipelines import CURATED_YAML, PARTITION, two_pipelines


def _rows(folder) -> list[dict]:
    return [r for f in list_parquet(folder) for r in pq.read_table(f).to_pylist()]


def _run(project, name: str, partition: str = PARTITION):
    ctx = pipeline_context(project.pipelines[name], project.root)
    return ctx, {r.stage: r for r in materialise_chain(ctx, list(ctx.stages.values()), partition)}


@pytest.fixture()
def project(tmp_path, prose):
    return read_project(two_pipelines(tmp_path, prose))


def test_first_stage_reads_the_upstream_kept_documents_with_ids_and_lineage(project):
    web_ctx, web = _run(project, "web")
    upstream = web["quality_filtered"]
    n = upstream.ledger.n_out
    assert 0 < n < 11 and upstream.ledger.rejected.get("gopher_short_doc") == 1  # the short doc went
    # the upstream partition holds what used to trip a landing folder pointed at it: the ledger
    # record and rejected rows beside the data
    assert (upstream.run.output_dir / LEDGER_FILE).exists() and list_parquet(upstream.run.rejected_dir)
    ctx, curated = _run(project, "curated")
    first = curated["from_web"]
    assert first.ledger.to_dict() == {"n_in": n, "n_out": n, "rejected": {}, "quarantined": {}}
    assert first.run.input_files == list_parquet(upstream.run.output_dir)
    assert first.run.output_dir.is_relative_to(project.root / "data" / "curated")  # its own storage
    kept, upstream_rows = _rows(first.run.output_dir), {r["id"]: r for r in _rows(upstream.run.output_dir)}
    assert sorted(r["id"] for r in kept) == sorted(upstream_rows) and "short" not in upstream_rows
    for row in kept:
        before = upstream_rows[row["id"]]
        assert (row["text"], row["source"], row["domain"]) == (before["text"], before["source"], before["domain"])
        meta = json.loads(row["meta"])
        assert meta["upstream"] == [{"dataset": "web/quality_filtered", "id": row["id"], "source": "crawl"}]
        assert meta["file"] == json.loads(before["meta"])["file"]  # what ingest upstream recorded stays
    # and the chain goes on from there: the redaction downstream changed the one e-mail address
    redacted = {r["id"]: r["text"] for r in _rows(curated["redacted"].run.output_dir)}
    assert all("jane.doe@example.org" not in t for t in redacted.values()) and curated["redacted"].ledger.balanced
    assert ctx.stages["from_web"].lineage == ("web/quality_filtered", "curated/from_web")


def test_an_unmaterialised_upstream_partition_is_a_clear_error(project):
    ctx = pipeline_context(project.pipelines["curated"], project.root)
    with pytest.raises(PartitionInputMissing, match=r"from_web\[crawl/batch1.jsonl\]: upstream web/quality_filtered "
                                                     r"\(pipeline 'web'\) has not materialised partition 'crawl/batch1.jsonl' "
                                                     r"yet: materialise it first \(`llmdata materialize web`\)"):
        materialise_chain(ctx, list(ctx.stages.values()), PARTITION)
    # a killed upstream run (data without its ledger record) is not complete either
    _run(project, "web")
    (project.root / "data/pipelines/web/quality_filtered/data" / PARTITION / LEDGER_FILE).unlink()
    with pytest.raises(PartitionInputMissing, match="has not materialised partition"):
        materialise_chain(ctx, list(ctx.stages.values()), PARTITION)


def test_downstream_skips_while_upstream_is_unchanged_and_reruns_when_it_is_rewritten(project):
    _run(project, "web")
    _, first = _run(project, "curated")
    _, again = _run(project, "curated")
    assert all(r.skipped for r in again.values())
    os.utime(project.root / "landing/crawl/batch1.jsonl")  # the landed file changed: web re-runs
    _, web = _run(project, "web")
    assert not web["quality_filtered"].skipped
    _, after = _run(project, "curated")
    assert not after["from_web"].skipped and after["from_web"].data_version != first["from_web"].data_version
    assert after["from_web"].ledger.n_out == web["quality_filtered"].ledger.n_out


def test_documents_over_max_doc_bytes_are_quarantined_and_counted(tmp_path, prose):
    curated = CURATED_YAML.replace("{name: from_web, op: ingest}", "{name: from_web, op: ingest, params: {max_doc_bytes: 1200}}")
    project = read_project(two_pipelines(tmp_path, prose, curated))
    _, web = _run(project, "web")
    sizes = [len(r["text"].encode()) for r in _rows(web["quality_filtered"].run.output_dir)]
    _, out = _run(project, "curated")
    ledger = out["from_web"].ledger
    big = sum(s > 1200 for s in sizes)
    assert 0 < big < len(sizes)
    assert (ledger.n_in, ledger.n_out, ledger.quarantined) == (len(sizes), len(sizes) - big, {"too_large": big})
    assert ledger.balanced


def test_a_spec_read_on_its_own_is_resolved_through_its_project(project):
    spec = load_pipeline_spec(project.root / "assets" / "curated.yaml")
    assert spec.resolved_source is None
    ctx = pipeline_context(spec, project.root)
    assert ctx.upstream.dataset == "web/quality_filtered"
    assert ctx.upstream.layout.storage == (project.root / "data/pipelines").resolve()
    (project.root / "assets" / "web.yaml").unlink()
    with pytest.raises(SpecError, match="curated.yaml:4: source.pipeline: unknown pipeline 'web'"):
        pipeline_context(spec, project.root)
