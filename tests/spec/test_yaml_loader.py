"""One YAML loader: pipeline specs, mixture specs and intents all report a problem as
`file:line: field: message`."""

from __future__ import annotations

import pytest

from dagster_llmdata.errors import IntentError, SpecError
from dagster_llmdata.spec.intent import load_intent
from dagster_llmdata.spec.mixture import load_mixture_spec
from dagster_llmdata.spec.pipeline import load_pipeline_spec
from dagster_llmdata.spec.yaml_loader import line_of, parse_yaml


@pytest.mark.parametrize(
    "load, error, text, complaint",
    [
        (load_pipeline_spec, SpecError,
         "pipeline: p\nsources: [{name: s, landing: l}]\nstages:\n  - {name: raw, op: ingest}\n  - {name: n, op: normalize, params: {nope: 1}}\n",
         r"f.yaml:5: stages.1.params.nope: unknown param"),
        (load_mixture_spec, SpecError, "mixture: m\ninputs: [{dataset: p/s}]\ntoken_budget: -1\n",
         r"f.yaml:3: token_budget: Input should be greater than 0"),
        (load_intent, IntentError, "goal: a clean corpus\nsources: [raw]\nconstraints:\n  min_quality: 2\n",
         r"f.yaml:4: constraints.min_quality: Input should be less than or equal to 1"),
        (load_mixture_spec, SpecError, "- a list\n", r"f.yaml:1: a mixture spec is a mapping"),
        (load_intent, IntentError, "goal: [unclosed\n", r"f.yaml:2: invalid YAML"),
    ],
)
def test_every_loader_names_file_line_and_field(tmp_path, load, error, text, complaint):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(error, match=complaint):
        load(path)


def test_an_unreadable_file_is_named(tmp_path):
    (tmp_path / "bytes.yaml").write_bytes(b"mixture: \xff\n")
    with pytest.raises(SpecError, match=r"bytes.yaml: cannot read spec"):
        load_mixture_spec(tmp_path / "bytes.yaml")


def test_line_of_follows_the_field_path(tmp_path):
    node, _ = parse_yaml(tmp_path / "x.yaml", "a:\n  - b: 1\n  - c:\n      d: 2\n")
    assert line_of(node, ["a", 1, "c", "d"]) == 4
    assert line_of(node, ["a", 5]) == 1  # past the end: the line of the deepest node reached
