"""Spec errors name the file, line and field."""

from __future__ import annotations

import textwrap

import pytest

from dagster_llmdata import SpecError, load_pipeline_spec


def _spec(tmp_path, body: str):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(body))
    return path


BASE = """\
pipeline: p
sources:
  - name: s
    landing: land
stages:
  - name: raw
    op: ingest
"""


def test_valid_spec_defaults_inputs_to_previous_stage(tmp_path):
    spec = load_pipeline_spec(_spec(tmp_path, BASE + "  - {name: a, op: normalize}\n  - {name: b, op: pii_redact, input: raw}\n"))
    assert [s.input for s in spec.stages] == [None, "raw", "raw"]


def test_unknown_param_names_file_line_and_field(tmp_path):
    path = _spec(tmp_path, BASE + "  - name: q\n    op: gopher_quality\n    params:\n      min_doc_wrds: 3\n")
    with pytest.raises(SpecError) as err:
        load_pipeline_spec(path)
    assert f"{path}:11: stages.1.params.min_doc_wrds: unknown param (did you mean 'min_doc_words'?)" in str(err.value)


def test_wrong_param_type(tmp_path):
    path = _spec(tmp_path, BASE + "  - name: q\n    op: gopher_quality\n    params:\n      min_doc_words: many\n")
    with pytest.raises(SpecError, match=r"p.yaml:11: stages.1.params.min_doc_words: .*integer"):
        load_pipeline_spec(path)


def test_unknown_operator(tmp_path):
    path = _spec(tmp_path, BASE + "  - name: q\n    op: gopher_qualty\n")
    with pytest.raises(SpecError, match=r"p.yaml:8: stages.1: unknown operator 'gopher_qualty' \(did you mean 'gopher_quality'\?\); known: .*gopher_quality"):
        load_pipeline_spec(path)


def test_missing_field_and_bad_input(tmp_path):
    with pytest.raises(SpecError, match=r"p.yaml:\d+: sources.0.landing: Field required"):
        load_pipeline_spec(_spec(tmp_path, "pipeline: p\nsources:\n  - name: s\nstages:\n  - {name: raw, op: ingest}\n"))
    with pytest.raises(SpecError, match="input 'nope' is not an earlier stage"):
        load_pipeline_spec(_spec(tmp_path, BASE + "  - {name: a, op: normalize, input: nope}\n"))


def test_column_flow_is_checked(tmp_path):
    from dagster_llmdata import Operator, register_operator
    from dagster_llmdata.operators import REGISTRY

    class NeedsScore(Operator):
        name = "needs_score_test"
        description = "test operator that needs a quality_score column"
        requires = ("id", "text", "quality_score")

    register_operator(NeedsScore)
    try:
        with pytest.raises(SpecError, match=r"stage 'a' needs columns \['quality_score'\]"):
            load_pipeline_spec(_spec(tmp_path, BASE + "  - {name: a, op: needs_score_test}\n"))
    finally:
        REGISTRY.pop("needs_score_test")


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"p.yaml:3: invalid YAML"):
        load_pipeline_spec(_spec(tmp_path, "pipeline: p\nsources: [\n  - x: : :\n"))
    with pytest.raises(SpecError, match="cannot read spec"):
        load_pipeline_spec(tmp_path / "absent.yaml")


def test_first_stage_must_ingest(tmp_path):
    with pytest.raises(SpecError, match="first stage must use op `ingest`"):
        load_pipeline_spec(_spec(tmp_path, "pipeline: p\nsources: [{name: s, landing: l}]\nstages:\n  - {name: a, op: normalize}\n"))


def test_every_spec_field_is_described():
    """What the Dagster UI, `llmdata ops` and the agent read about a spec: no field without words."""
    from dagster_llmdata.spec.project import SENSOR_KINDS
    from dagster_llmdata.spec.pipeline import PipelineSpec

    def walk(schema: dict, defs: dict, where: str):
        for name, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{where}.{name} has no description"
        for ref in {r for p in schema.get("properties", {}).values() for r in _refs(p)}:
            walk(defs[ref], defs, ref)

    def _refs(prop):
        if isinstance(prop, dict):
            if "$ref" in prop:
                yield prop["$ref"].rsplit("/", 1)[-1]
            for v in prop.values():
                yield from _refs(v)
        elif isinstance(prop, list):
            for v in prop:
                yield from _refs(v)

    for model in (PipelineSpec, *(kind.model for kind in SENSOR_KINDS.values())):
        schema = model.model_json_schema()
        walk(schema, schema.get("$defs", {}), model.__name__)


def test_source_format_is_checked_when_the_spec_loads(tmp_path):
    path = _spec(tmp_path, BASE.replace("landing: land", "landing: land\n    format: jsnl"))
    with pytest.raises(SpecError, match=r"sources.0.format: Input should be 'auto', 'jsonl'"):
        load_pipeline_spec(path)
