"""The static verifier and the intent reader: hostile and malformed specs are refused with the
reason, before anything runs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from dagster_llmdata.agent.agent import verify_context
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.spec.intent import IntentError, load_intent, read_goals
from dagster_llmdata.agent.verify import verify_static

from tests.agent_helpers import agent_project, write_intent
from tests.conftest import PIPELINE_YAML, write_jsonl

GOOD = {
    "pipeline": "fresh",
    "storage": "data/pipelines",
    "sources": [{"name": "web", "landing": "landing/web"}],
    "stages": [
        {"name": "raw", "op": "ingest", "params": {}},
        {"name": "normalized", "op": "normalize", "params": {}},
        {"name": "deduplicated", "op": "exact_dedup", "params": {}},
    ],
}


@pytest.fixture()
def ctx(tmp_path):
    root = agent_project(tmp_path)
    (root / "assets" / "tiny.yaml").write_text(PIPELINE_YAML)
    write_jsonl(root / "landing" / "web" / "a.jsonl", [{"text": "hello there"}])
    return verify_context(root, AgentConfig())


def _with(change) -> dict:
    spec = copy.deepcopy(GOOD)
    change(spec)
    return spec


def test_a_good_spec_passes_every_static_check(ctx):
    spec, findings = verify_static(GOOD, ctx)
    assert spec is not None and spec.pipeline == "fresh"
    assert all(f.passed for f in findings)


HOSTILE = {
    "unknown_operator": lambda s: s["stages"].append({"name": "pwn", "op": "shell_exec", "params": {"cmd": "rm -rf /"}}),
    "path_escape_dotdot": lambda s: s["sources"][0].update(landing="../../etc"),
    "path_escape_absolute": lambda s: s.update(storage="/etc/llmdata"),
    "shell_in_name": lambda s: s.update(pipeline="x; rm -rf ~"),
    "shell_in_path": lambda s: s["sources"][0].update(landing="landing/$(reboot)"),
    "enormous_param": lambda s: s["stages"][1]["params"].update(fix_unicode=True) or s["stages"].append(
        {"name": "lid", "op": "language_id", "params": {"max_chars": 10**15}}),
    "enormous_string": lambda s: s.update(description="x" * 100_000),
    "existing_name": lambda s: s.update(pipeline="tiny"),
    "bad_param_type": lambda s: s["stages"][2]["params"].update(lowercase="sometimes"),
    "unknown_param": lambda s: s["stages"][2]["params"].update(rm="-rf"),
    "model_path_outside": lambda s: s["stages"].append(
        {"name": "lid", "op": "language_id", "params": {"model_path": "/etc/passwd"}}),
    "remote_uri": lambda s: s["stages"].append({"name": "store", "op": "lance_table", "params": {"uri": "s3://someone-elses/bucket"}}),
    "column_flow": lambda s: s["stages"].append({"name": "top", "op": "select", "params": {"column": "quality_score", "mode": "top_k", "k": 5}}),
    "not_a_mapping": None,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_or_broken_specs_are_refused_with_the_reason(ctx, case):
    data = ["not", "a", "spec"] if HOSTILE[case] is None else _with(HOSTILE[case])
    spec, findings = verify_static(data, ctx)
    assert spec is None
    failed = {f.check for f in findings if not f.passed}
    expected = {
        "unknown_operator": "unknown_operator", "path_escape_dotdot": "path_escape", "path_escape_absolute": "path_escape",
        "shell_in_name": "shell_metacharacters", "shell_in_path": "shell_metacharacters", "enormous_param": "enormous_param",
        "enormous_string": "enormous_param", "existing_name": "name_clash", "bad_param_type": "param_invalid",
        "unknown_param": "param_invalid", "model_path_outside": "path_escape", "column_flow": "column_flow",
        "not_a_mapping": "spec_shape", "remote_uri": "path_escape",
    }[case]
    assert expected in failed, findings


def test_a_symlink_out_of_the_project_is_refused(ctx, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    (ctx.root / "landing" / "web" / "escape").symlink_to(outside)
    spec, findings = verify_static(GOOD, ctx)
    assert spec is None
    assert any(f.check == "path_escape" and "symlink" in f.detail for f in findings)
    os.unlink(ctx.root / "landing" / "web" / "escape")
    (ctx.root / "landing" / "link").symlink_to(outside)
    spec, findings = verify_static(_with(lambda s: s["sources"][0].update(landing="landing/link")), ctx)
    assert spec is None and any(f.check == "path_escape" for f in findings)


def test_intents_are_read_with_file_and_line_errors(tmp_path):
    good = write_intent(tmp_path / "good.yaml", goal="a clean English corpus, no personal data", sources=["landing/web"],
                        constraints={"min_quality": 0.8, "max_cost": 1.5})
    intent = load_intent(good)
    goals = read_goals(intent)
    assert goals.languages == ["en"] and goals.no_pii and goals.quality == 0.8 and goals.max_cost == 1.5
    (tmp_path / "bad.yaml").write_text("goal: fine\nsources: [a]\nconstraints:\n  languages: [english!]\n")
    with pytest.raises(IntentError, match=r"bad.yaml:\d+"):
        load_intent(tmp_path / "bad.yaml")
    (tmp_path / "extra.yaml").write_text("goal: fine\nsources: [a]\nrun: rm -rf /\n")
    with pytest.raises(IntentError, match="run"):
        load_intent(tmp_path / "extra.yaml")
    (tmp_path / "broken.yaml").write_text("goal: [unclosed\n")
    with pytest.raises(IntentError, match="invalid YAML"):
        load_intent(tmp_path / "broken.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(IntentError):
        load_intent(tmp_path / "binary.yaml")
    (tmp_path / "huge.yaml").write_text("goal: " + "x" * 100_000 + "\nsources: [a]\n")
    with pytest.raises(IntentError, match="at most"):
        load_intent(tmp_path / "huge.yaml")
    assert Path(good).exists()
