"""`source: {pipeline, stage}`: a pipeline reading another's stage, resolved across the project,
with file:line errors for what cannot be used (and every other spec still loaded)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dagster_llmdata import Operator, register_operator
from dagster_llmdata.errors import SpecError
from dagster_llmdata.operators import REGISTRY
from dagster_llmdata.spec.pipeline import load_pipeline_spec
from dagster_llmdata.spec.project import read_project

from ..two_pipelines import CURATED_YAML, two_pipelines


def _problems(root) -> dict[str, str]:
    """{file name: its problem} of the project at `root`."""
    return {p.path.name: str(p) for p in read_project(root).problems}


def test_a_pipeline_source_resolves_to_the_upstream_stage(tmp_path, prose):
    project = read_project(two_pipelines(tmp_path, prose))
    assert project.problems == [] and sorted(project.pipelines) == ["curated", "web"]
    curated = project.pipelines["curated"]
    resolved = curated.resolved_source
    assert (resolved.pipeline, resolved.stage, resolved.storage) == ("web", "quality_filtered", "data/pipelines")
    # the partitions are web's (the head of the chain); the columns are those of web's stage
    assert curated.partitions_pipeline == "web" and {"id", "text", "source", "meta"} <= resolved.columns
    assert project.pipelines["web"].resolved_source is None and project.pipelines["web"].partitions_pipeline == "web"


def test_a_chain_shares_the_partitions_of_its_head(tmp_path, prose):
    two_pipelines(tmp_path, prose)
    (tmp_path / "assets" / "final.yaml").write_text(
        "pipeline: final\nsource: {pipeline: curated, stage: redacted}\nstages:\n  - {name: read, op: ingest}\n")
    project = read_project(tmp_path)
    assert project.problems == []
    assert project.pipelines["final"].partitions_pipeline == "web"
    assert project.pipelines["final"].resolved_source.pipeline == "curated"


@pytest.mark.parametrize(("source", "line", "expected"), [
    ("{pipeline: wbe, stage: quality_filtered}", 4,
     "curated.yaml:4: source.pipeline: unknown pipeline 'wbe' (did you mean 'web'?); loaded pipelines: web"),
    ("{pipeline: web, stage: quality_filterd}", 4,
     "curated.yaml:4: source.stage: pipeline 'web' has no stage 'quality_filterd' (did you mean 'quality_filtered'?); "
     "its stages: raw, normalized, quality_filtered"),
    ("\n  pipeline: web\n  stage: nope", 6, "curated.yaml:6: source.stage: pipeline 'web' has no stage 'nope'"),
])
def test_unknown_pipeline_or_stage_is_a_file_line_error(tmp_path, prose, source, line, expected):
    two_pipelines(tmp_path, prose, CURATED_YAML.replace("{pipeline: web, stage: quality_filtered}", source))
    project = read_project(tmp_path)
    assert list(project.pipelines) == ["web"]  # the other spec still loads
    (problem,) = project.problems
    assert str(problem).startswith(str(tmp_path / "assets" / "curated.yaml") + f":{line}:")
    assert expected in str(problem)


def test_naming_a_mixture_says_it_is_one(tmp_path, prose):
    two_pipelines(tmp_path, prose, CURATED_YAML.replace("pipeline: web,", "pipeline: mix,"))
    (tmp_path / "assets" / "mix.yaml").write_text("mixture: mix\ninputs: [{dataset: web/quality_filtered}]\ntoken_budget: 1000\n")
    assert "source.pipeline: 'mix' is a mixture, not a pipeline" in _problems(tmp_path)["curated.yaml"]


def test_pipelines_that_read_each_other_are_a_cycle_reported_in_each_file(tmp_path, prose):
    two_pipelines(tmp_path, prose)
    for name, other in (("a", "b"), ("b", "a")):
        (tmp_path / "assets" / f"{name}.yaml").write_text(
            f"pipeline: {name}\nsource: {{pipeline: {other}, stage: read}}\nstages:\n  - {{name: read, op: ingest}}\n")
    # and one that reads into the cycle is not loaded either, saying why
    (tmp_path / "assets" / "c.yaml").write_text("pipeline: c\nsource: {pipeline: a, stage: read}\nstages:\n  - {name: read, op: ingest}\n")
    project = read_project(tmp_path)
    assert sorted(project.pipelines) == ["curated", "web"]
    problems = _problems(tmp_path)
    assert problems["a.yaml"] == f"{tmp_path}/assets/a.yaml:2: source.pipeline: pipelines read each other in a cycle " \
                                 "(a -> b -> a); a chain of sources must start at landing folders"
    assert problems["b.yaml"].startswith(f"{tmp_path}/assets/b.yaml:2: source.pipeline: pipelines read each other in a cycle (a -> b -> a)")
    assert problems["c.yaml"].startswith(f"{tmp_path}/assets/c.yaml:2: source.pipeline: reads pipeline 'a', which is not loaded")


def test_a_pipeline_reading_itself_is_a_cycle(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("pipeline: p\nsource:\n  pipeline: p\n  stage: raw\nstages:\n  - {name: raw, op: ingest}\n")
    with pytest.raises(SpecError, match=r"p.yaml:3: source.pipeline: pipeline 'p' cannot read its own stage \(a cycle\)"):
        load_pipeline_spec(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("pipeline: p\nstages:\n  - {name: raw, op: ingest}\n", r"p.yaml:1: \(top level\): a pipeline reads `sources`.*this one has neither"),
    ("pipeline: p\nsources: [{name: s, landing: l}]\nsource: {pipeline: w, stage: x}\nstages:\n  - {name: raw, op: ingest}\n",
     r"p.yaml:1: \(top level\): `sources` \(landing folders\) and `source` \(another pipeline's stage\) exclude each other"),
    ("pipeline: p\nsources:\n  - {pipeline: w, stage: x}\nstages:\n  - {name: raw, op: ingest}\n",
     r"p.yaml:3: sources.0: another pipeline's stage is read through the top-level `source: \{pipeline: ..., stage: ...\}`"),
    ("pipeline: p\nsource: {pipeline: w, stage: x}\nstages:\n  - name: raw\n    op: ingest\n    params: {format: csv}\n",
     r"p.yaml:6: stages.0.params.format: does not apply when the source is another pipeline's stage \(w/x: .*"
     r"params that apply: max_doc_bytes"),
])
def test_source_shape_errors_name_the_line(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=expected):
        load_pipeline_spec(path)


class AddsScore(Operator):
    name = "adds_score_test"
    description = "test operator: sets quality_score"
    produces = {"quality_score": pa.float64()}


class NeedsScore(Operator):
    name = "needs_score_test"
    description = "test operator: needs quality_score"
    requires = ("id", "text", "quality_score")


@pytest.fixture()
def score_operators():
    register_operator(AddsScore)
    register_operator(NeedsScore)
    yield
    REGISTRY.pop(AddsScore.name)
    REGISTRY.pop(NeedsScore.name)


def test_column_flow_is_checked_against_the_upstream_stage(tmp_path, prose, score_operators):
    needs = CURATED_YAML.replace("{name: redacted, op: pii_redact}", "{name: scored_only, op: needs_score_test}")
    two_pipelines(tmp_path, prose, needs)
    # web's quality_filtered has no quality_score: the stage that needs it is the error's line
    assert _problems(tmp_path)["curated.yaml"] == (
        f"{tmp_path}/assets/curated.yaml:7: stages.1: stage 'scored_only' needs columns ['quality_score'] "
        "that 'from_web' does not produce")
    web = tmp_path / "assets" / "web.yaml"
    web.write_text(web.read_text() + "  - {name: scored, op: adds_score_test}\n")
    (tmp_path / "assets" / "curated.yaml").write_text(needs.replace("stage: quality_filtered", "stage: scored"))
    project = read_project(tmp_path)
    assert project.problems == [] and "quality_score" in project.pipelines["curated"].resolved_source.columns
