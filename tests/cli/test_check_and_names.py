"""What CI and a newcomer's typos meet: `llmdata check` / LLMDATA_STRICT=1 make a broken spec fail
the code location (and so `dagster definitions validate`); a stage or table name two pipelines
share is an error naming both; `llmdata ops TYPO` says so; `llmdata materialize MIXTURE` works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import PIPELINE_YAML
from ..mixture_helpers import mixture_project

BIN = Path(sys.executable).parent
TYPO_YAML = textwrap.dedent(
    """\
    pipeline: typo
    sources:
      - {name: web, landing: landing/web}
    stages:
      - {name: raw, op: ingest}
      - {name: quality_filtered, op: gopher_qualty}
      - {name: filtered, op: gopher_quality, params: {min_doc_wrds: 10}}
    """
)
WORKSPACE = "load_from:\n  - python_module: {module_name: dagster_llmdata.location, location_name: llmdata, working_directory: .}\n"


def run(root: Path, *cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (root / ".dagster_home").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "LLMDATA_STRICT"}
    env = {**base, "DAGSTER_HOME": str(root / ".dagster_home"), "LLMDATA_PROJECT": str(root), **(env or {})}
    return subprocess.run(list(cmd), cwd=root, capture_output=True, text=True, env=env, timeout=300)


def llmdata(root: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(root, str(BIN / "llmdata"), *args, **kw)


@pytest.fixture()
def two_pipelines(tmp_path: Path) -> Path:
    """`tiny` and `other` both have a quality_filtered stage and a lance_table stage called store."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets/tiny.yaml").write_text(PIPELINE_YAML + "  - {name: store, op: lance_table}\n")
    (tmp_path / "assets/other.yaml").write_text(PIPELINE_YAML.replace("pipeline: tiny", "pipeline: other")
                                                + "  - {name: store, op: lance_table}\n")
    (tmp_path / "workspace.yaml").write_text(WORKSPACE)
    return tmp_path


@pytest.mark.slow  # five processes loading Dagster, two of them `dagster definitions validate`
def test_check_and_strict_fail_on_a_broken_spec_and_pass_once_it_is_fixed(two_pipelines):
    root = two_pipelines
    assert llmdata(root, "check").returncode == 0
    (root / "assets/typo.yaml").write_text(TYPO_YAML)

    out = llmdata(root, "check")
    assert out.returncode == 1
    assert "typo.yaml:6: stages.1: unknown operator 'gopher_qualty' (did you mean 'gopher_quality'?)" in out.stderr
    assert "typo.yaml:7: stages.2.params.min_doc_wrds: unknown param (did you mean 'min_doc_words'?)" in out.stderr

    validate = [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"]
    tolerant = run(root, *validate)  # the UI and the agent still get the location, with the `specs` asset
    assert tolerant.returncode == 0, tolerant.stderr[-2000:]
    strict = run(root, *validate, env={"LLMDATA_STRICT": "1"})
    assert strict.returncode != 0
    assert "unknown operator 'gopher_qualty'" in strict.stdout + strict.stderr

    (root / "assets/typo.yaml").write_text(TYPO_YAML.replace("gopher_qualty", "gopher_quality").replace("min_doc_wrds", "min_doc_words"))
    fixed = llmdata(root, "check")
    assert fixed.returncode == 0 and "3 pipeline(s)" in fixed.stdout


def test_a_stage_two_pipelines_share_is_an_error_naming_both(two_pipelines):
    root = two_pipelines
    out = llmdata(root, "rejected", "quality_filtered")
    assert out.returncode == 2
    assert "'quality_filtered' is in 2 pipelines" in out.stderr
    assert "other/quality_filtered" in out.stderr and "tiny/quality_filtered" in out.stderr
    qualified = llmdata(root, "rejected", "other/quality_filtered")
    assert qualified.returncode == 0 and qualified.stdout.startswith("other/quality_filtered:")
    by_flag = llmdata(root, "rejected", "quality_filtered", "--pipeline", "tiny")
    assert by_flag.returncode == 0 and by_flag.stdout.startswith("tiny/quality_filtered:")
    typo = llmdata(root, "rejected", "tiny/quality_filtred")
    assert typo.returncode == 2 and "did you mean 'quality_filtered'?" in typo.stderr

    search = llmdata(root, "search", "anything", "--table", "store")
    assert search.returncode == 2
    assert "lance_table stage 'store' is in 2 pipelines" in search.stderr and "other/store" in search.stderr
    versions = llmdata(root, "lance", "versions", "--table", "store")
    assert versions.returncode == 2 and "tiny/store" in versions.stderr
    not_lance = llmdata(root, "lance", "versions", "--table", "tiny/shards")
    assert not_lance.returncode == 2 and "no lance_table stage 'shards'" in not_lance.stderr


def test_ops_with_an_unknown_name_says_so(tmp_path):
    out = run(tmp_path, str(BIN / "llmdata"), "ops", "gopher_qualty")
    assert out.returncode == 2 and out.stdout == ""
    assert "no operator 'gopher_qualty' (did you mean 'gopher_quality'?)" in out.stderr
    one = run(tmp_path, str(BIN / "llmdata"), "ops", "--json", "select")
    assert one.returncode == 0 and '"name": "select"' in one.stdout and '"name": "ingest"' not in one.stdout


def test_materialize_knows_mixture_specs(tmp_path):
    root = mixture_project(tmp_path)
    out = llmdata(root, "materialize", "mix")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("mixture mix v") and "manifest:" in out.stdout
    assert (root / "data/mixtures/mix/manifests/latest.json").exists()
    wrong = llmdata(root, "materialize", "mix", "--partition", "web/a.jsonl")
    assert wrong.returncode == 2 and "is a mixture" in wrong.stderr
    report = llmdata(root, "report", "mix")
    assert report.returncode == 2 and "'mix' is a mixture, not a pipeline" in report.stderr
