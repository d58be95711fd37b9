"""The operator contract: document functions, batch functions and runtime settings, routed in one
place, fused with their neighbours, and kept out of (or in) the code version as they should be."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import dagster as dg
import dill
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import Field

import dagster_llmdata.operators as operators_pkg
from datatrove.data import Document

from dagster_llmdata import apply_operator, load_project
from dagster_llmdata.engine.stages import execution_units
from dagster_llmdata.judges.backend import JudgeRuntime
from dagster_llmdata.operators import REGISTRY, BatchFunction, DocFunction, Operator, register_operator
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.defs.resources import JudgeResource
from dagster_llmdata.spec.pipeline import load_pipeline_spec
from dagster_llmdata.io.schema import CORE_SCHEMA
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.routing import DropRouter
from dagster_llmdata.operators.verdict import Quarantine, Reject
from tests.conftest import materialise_partition, one_source_project, write_jsonl


class MarkerParams(OperatorParams):
    batch_size: int = Field(4, ge=1, description="docs per call")
    min_words: int = Field(3, ge=0, description="reject docs with fewer words")


class MarkerBatchFn(BatchFunction):
    """Answers by markers in the text, and records the size of every batch it was handed."""

    def __init__(self, params: MarkerParams):
        super().__init__()
        self.params = params

    def __call__(self, docs):
        self.counters[f"batch_of_{len(docs)}"] += 1
        if any("EXPLODE" in d.text for d in docs):
            raise RuntimeError("the model server fell over")
        if any("MISCOUNT" in d.text for d in docs):
            return [True]
        verdicts = []
        for doc in docs:
            doc.metadata["n_words"] = len(doc.text.split())
            if "UNSURE" in doc.text:
                verdicts.append(Quarantine("judge_refused", "the judge would not say"))
            elif "WEIRD" in doc.text:
                verdicts.append(42)  # not a verdict
            elif doc.metadata["n_words"] < self.params.min_words:
                verdicts.append(Reject("too_few_words", value=doc.metadata["n_words"], threshold=self.params.min_words))
            else:
                verdicts.append(True)
        return verdicts


class MarkerBatch(Operator):
    name = "marker_batch_test"
    description = "test operator: a batch function answering by markers"
    Params = MarkerParams
    produces = {"n_words": pa.int64()}

    def batch_fn(self):
        return MarkerBatchFn(self.params)


class RuntimeEchoFn(DocFunction):
    def __init__(self, base_url: str):
        super().__init__()
        self.base_url = base_url

    def __call__(self, doc):
        doc.metadata["seen_base_url"] = self.base_url
        return True


class RuntimeEcho(Operator):
    name = "runtime_echo_test"
    description = "test operator: writes the judge base_url it was given"
    produces = {"seen_base_url": pa.string()}
    Runtime = JudgeRuntime
    runtime_key = "judge"

    def doc_fn(self):
        return RuntimeEchoFn(self.runtime.base_url)


@pytest.fixture()
def test_operators():
    for cls in (MarkerBatch, RuntimeEcho):
        register_operator(cls)
    yield
    for cls in (MarkerBatch, RuntimeEcho):
        REGISTRY.pop(cls.name)


def _docs(tmp_path: Path, prose: list[str]) -> Path:
    texts = [prose[0], prose[1], "two words", prose[2] + " UNSURE", prose[3] + " WEIRD", prose[4], prose[5],
             prose[6] + " EXPLODE", prose[7], prose[8], prose[9], prose[10] + " MISCOUNT"]
    return write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])


def test_batch_function_routes_every_document(tmp_path, prose, test_operators):
    out = tmp_path / "o.parquet"
    outcome = apply_operator("marker_batch_test", _docs(tmp_path, prose), out, {"batch_size": 4})
    led = outcome.ledger
    assert led.n_in == 12 and led.balanced
    # batches: d0-d3, d4-d7 (EXPLODE: all four quarantined), d8-d11 (MISCOUNT: all four quarantined)
    assert led.rejected == {"too_few_words": 1}
    assert led.quarantined == {"judge_refused": 1, "error:RuntimeError": 4, "error:wrong_verdict_count": 4}
    assert sorted(r["id"] for r in pq.read_table(out).to_pylist()) == ["d0", "d1"]
    rejected = pq.read_table(tmp_path / "o.rejected.parquet").to_pylist()
    assert [(r["id"], r["value"], r["threshold"]) for r in rejected] == [("d2", 2.0, 3.0)]
    quarantined = {r["id"]: r for r in pq.read_table(tmp_path / "o.quarantine.parquet").to_pylist()}
    assert json.loads(quarantined["d3"]["meta"])["error"] == "the judge would not say"
    assert "fell over" in json.loads(quarantined["d5"]["meta"])["error"]


def test_a_value_that_is_no_verdict_is_quarantined_not_kept(tmp_path, prose, test_operators):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "w", "text": prose[0] + " WEIRD"}, {"id": "ok", "text": prose[1]}])
    outcome = apply_operator("marker_batch_test", src, tmp_path / "o.parquet")
    assert outcome.ledger.quarantined == {"error:bad_verdict": 1} and outcome.ledger.n_out == 1


def test_batch_size_is_honoured_and_not_part_of_the_code_version(tmp_path, prose, test_operators):
    rows = [{"id": str(i), "text": prose[i % 20]} for i in range(10)]
    outcome = apply_operator("marker_batch_test", write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "o.parquet", {"batch_size": 3})
    assert outcome.ledger.n_out == 10
    assert MarkerBatch({"batch_size": 3}).code_version == MarkerBatch({"batch_size": 300}).code_version
    assert MarkerBatch({"min_words": 3}).code_version != MarkerBatch({"min_words": 4}).code_version


def _rows(prose: list[str]) -> list[dict]:
    return [{"id": f"d{i}", "text": prose[i]} for i in range(8)] + [{"id": "s", "text": "hi"}]


def test_batch_stage_fuses_with_document_stages_in_dagster(tmp_path, prose, instance, test_operators):
    stages = [{"name": "normalized", "op": "normalize"}, {"name": "marked", "op": "marker_batch_test", "params": {"batch_size": 2}},
              {"name": "redacted", "op": "pii_redact"}]
    project = one_source_project(tmp_path, "c", stages, _rows(prose))
    units = execution_units(load_pipeline_spec(project / "assets/c.yaml"))
    assert [[s.name for s in u] for u in units] == [["raw"], ["normalized", "marked", "redacted"]]
    result, meta = materialise_partition(project, instance)
    marked = meta["marked"]
    assert marked["llmdata/fused_with"].value == ["normalized", "marked", "redacted"]
    assert (marked["n_in"].value, marked["n_out"].value, marked["dropped/too_few_words"].value) == (9, 8, 1)
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_runtime_settings_come_from_the_resource_and_are_not_data(tmp_path, prose, instance, test_operators):
    project = one_source_project(tmp_path, "c", [{"name": "echoed", "op": "runtime_echo_test"}], _rows(prose))
    assets = list(load_project(project).assets)
    echo = next(a for a in assets if "echoed" in str(a.keys))
    assert "judge" in echo.required_resource_keys
    versions = {k: v for a in assets for k, v in a.code_versions_by_key.items()}
    materialise_partition(project, instance, {"judge": JudgeResource(base_url="http://gpu-box:8000/v1")})
    out = project / "data/c/echoed/data/web/b.jsonl"
    assert {r["seen_base_url"] for r in pq.read_table(next(out.glob("*.parquet"))).to_pylist()} == {"http://gpu-box:8000/v1"}
    # moving the server changes nothing Dagster versions
    assert {k: v for a in load_project(project).assets for k, v in a.code_versions_by_key.items()} == versions


def test_standalone_runtime_settings_from_cli_params(tmp_path, prose, test_operators):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": prose[0]}])
    outcome = apply_operator("runtime_echo_test", src, tmp_path / "o.parquet", runtime={"base_url": "http://laptop:8000/v1"})
    assert outcome.ledger.n_out == 1
    assert pq.read_table(tmp_path / "o.parquet").column("seen_base_url").to_pylist() == ["http://laptop:8000/v1"]
    with pytest.raises(ValueError, match="takes no runtime settings"):
        apply_operator("normalize", src, tmp_path / "n.parquet", runtime={"base_url": "x"})


def test_judge_resource_mirrors_the_runtime_settings_and_reads_the_environment(monkeypatch):
    from dagster_llmdata.defs.resources import default_resources

    assert set(JudgeResource.model_fields) == set(JudgeRuntime.model_fields)
    for name, info in JudgeRuntime.model_fields.items():
        assert JudgeResource.model_fields[name].description == info.description
    monkeypatch.setenv("LLMDATA_JUDGE_BASE_URL", "http://cluster:8000/v1")
    monkeypatch.setenv("LLMDATA_JUDGE_CONCURRENCY", "128")
    monkeypatch.setenv("LLMDATA_JUDGE_TIMEOUT_S", "30.5")
    judge = default_resources()["judge"]
    assert isinstance(judge.base_url, dg.EnvVar)  # resolved when a run starts, shown as an env var in the UI
    assert (judge.concurrency, judge.timeout_s) == (128, 30.5)
    monkeypatch.setenv("LLMDATA_JUDGE_CONCURRENCY", "0")
    with pytest.raises(Exception, match="greater than or equal to 1"):
        default_resources()


DROP_WRITING = {"rejected_writer", "quarantine_writer", "mark_dropped"}


def test_only_the_router_writes_rejected_and_quarantined_rows():
    """Every operator hands its drops to `Operator.drops` (a DropRouter): none opens the rejected or
    quarantine writers or sets the drop columns itself."""
    offenders = []
    for path in sorted(Path(operators_pkg.__file__).parent.glob("*.py")):
        if path.name == "routing.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            offenders += [f"{path.name}:{node.lineno} {name}" for name in _names_used(node) if name in DROP_WRITING]
    assert offenders == []


def _names_used(node: ast.AST) -> list[str]:
    """`run.rejected_writer(...)`, `mark_dropped(...)`, `from ... import mark_dropped`."""
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.ImportFrom):
        return [alias.name for alias in node.names]
    return []


def test_drop_router_writes_documents_and_rows_with_their_drop_columns(tmp_path):
    run = StageRun("st", [], tmp_path / "out", tmp_path / "rejected", tmp_path / "quarantine", tmp_path / "work")
    run.reset_outputs()
    row = {"id": "r1", "text": "a row", "source": "s", "domain": "d", "lang": None, "meta": None}
    drops = dill.loads(dill.dumps(MarkerBatch().drops(run, CORE_SCHEMA)))  # datatrove's workers get a copy
    assert isinstance(drops, DropRouter)
    with drops:
        drops.reject(Document(text="a doc", id="d1", metadata={"meta": '{"file": "f"}'}), "too_short", value=2, threshold=5)
        drops.reject(row, "exact_duplicate", kept_id="k1", kept_partition="web/a.jsonl")
        drops.quarantine(Document(text="q", id="q1", metadata={"meta": '{"file": "f"}'}), "missing_value", detail="x is None")
        drops.quarantine_error({"id": "q2", "text": "e"}, ValueError("bad token"))
    rejected = {r["id"]: r for r in pq.read_table(run.rejected_dir).to_pylist()}
    quarantined = {r["id"]: r for r in pq.read_table(run.quarantine_dir).to_pylist()}
    assert {k: (r["stage"], r["reason"], r["kept_id"], r["kept_partition"], r["value"], r["threshold"]) for k, r in rejected.items()} == {
        "d1": ("st", "too_short", None, None, 2.0, 5.0),
        "r1": ("st", "exact_duplicate", "k1", "web/a.jsonl", None, None),
    }
    assert rejected["r1"]["text"] == "a row" and rejected["d1"]["meta"] == '{"file": "f"}'
    assert {k: (r["reason"], json.loads(r["meta"])) for k, r in quarantined.items()} == {
        "q1": ("missing_value", {"file": "f", "error": "x is None"}),
        "q2": ("error:ValueError", {"error": "bad token"}),
    }
