"""The printed stage table accounts for what a folder run passed over: hidden files are not
documents (so not in the ledger) but are counted and shown next to the reasons."""

from __future__ import annotations

import textwrap

from dagster_llmdata.engine.materialise import materialise_chain, pipeline_context
from dagster_llmdata.engine.report import stage_rows, stage_table
from dagster_llmdata.spec.project import read_project

from ..conftest import write_jsonl

SPEC = textwrap.dedent(
    """\
    pipeline: folders
    storage: data/pipelines
    executor: {kind: local, tasks: 1, workers: 1}
    sources: [{name: crawl, landing: landing/crawl}]
    stages:
      - {name: raw, op: ingest}
    """
)


def test_stage_table_shows_hidden_files_a_folder_run_skipped(tmp_path, prose):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "folders.yaml").write_text(SPEC)
    folder = tmp_path / "landing" / "crawl" / "drop1"
    write_jsonl(folder / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:3])])
    write_jsonl(folder / ".draft.jsonl", [{"id": "x", "text": prose[3]}])
    write_jsonl(folder / ".cache" / "more.jsonl", [{"id": "y", "text": prose[4]}])
    spec = read_project(tmp_path).pipelines["folders"]
    ctx = pipeline_context(spec, tmp_path)
    [report] = materialise_chain(ctx, list(ctx.stages.values()), "crawl/drop1")
    assert report.ledger.n_in == 3 and report.ledger.n_out == 3
    [row] = stage_rows(spec, tmp_path)
    assert row["skipped"] == {"hidden_files": 2}
    assert "skipped (not read): hidden_files=2" in stage_table(spec, tmp_path).splitlines()[-1]
