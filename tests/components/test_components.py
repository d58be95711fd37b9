"""The spec kinds as Dagster Components in a `dg` project's defs/ folder: the same YAML as assets/
and sensors/ gives the same Dagster objects; the package is a dg plugin (`dg list components`,
`dg scaffold defs`)."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.core.package_entry import DG_PLUGIN_ENTRY_POINT_GROUP, get_package_objects_in_module
from dagster.components.scaffold.scaffold import NoParams, get_scaffolder

from dagster_llmdata.components import AgentComponent, MixtureComponent, PipelineComponent
from dagster_llmdata.components.kinds import COMPONENT_ONLY_FIELDS
from dagster_llmdata.definitions import load_project
from tests.conftest import PIPELINE_YAML

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = {"PipelineComponent": PipelineComponent, "MixtureComponent": MixtureComponent, "AgentComponent": AgentComponent}
MIXTURE_YAML = textwrap.dedent("""\
    mixture: mix
    inputs:
      - {dataset: tiny/shards, domain_column: domain}
    token_budget: 100000
    algorithm: {name: odm, params: {smoothing: 0.9}}
    """)
AGENT_ENTRY = {"type": "agent", "inbox": "agent/inbox", "planner": {"kind": "deterministic"}, "minimum_interval_seconds": 60}


def dg_project(root: Path, module: str, components: dict[str, list[dict]]) -> Path:
    """A dg project at `root` (root module `module`, unique per test: Python caches modules by
    name) whose defs/<folder>/defs.yaml holds the given component documents."""
    (root / module / "defs").mkdir(parents=True, exist_ok=True)
    (root / module / "__init__.py").write_text("")
    (root / module / "definitions.py").write_text(textwrap.dedent("""\
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs():
            return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        """))
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "{module}"
        version = "0.0.1"
        [tool.dg]
        directory_type = "project"
        [tool.dg.project]
        root_module = "{module}"
        """))
    for folder, docs in components.items():
        (root / module / "defs" / folder).mkdir(parents=True, exist_ok=True)
        (root / module / "defs" / folder / "defs.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return root


def load_defs(root: Path, monkeypatch) -> dg.Definitions:
    monkeypatch.syspath_prepend(str(root))
    return dg.load_from_defs_folder(path_within_project=root)


def summary(defs: dg.Definitions) -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    return {
        "assets": {k.to_user_string(): graph.get(k).code_version for k in keys},
        "checks": {c.to_user_string() for c in graph.asset_check_keys},
        "jobs": {j.name for j in defs.jobs or []},
        "sensors": {s.name for s in defs.sensors or []},
        "schedules": {s.name for s in defs.schedules or []},
        "resources": set(defs.resources or {}),
    }


def error_chain(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_pipeline_component_loads_from_a_defs_folder(tmp_path, monkeypatch, prose):
    project = tmp_path / "proj"
    attributes = yaml.safe_load(PIPELINE_YAML) | {"project_root": str(project)}
    dg_project(project, "myproj", {"tiny": [{"type": "dagster_llmdata.PipelineComponent", "attributes": attributes}]})
    (project / "landing/web").mkdir(parents=True)
    (project / "landing/web/a.jsonl").write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate(prose[:5])))

    defs = load_defs(project, monkeypatch)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {f"tiny/{s}" for s in ("raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "redacted", "shards",
                                          "deduplicated__compared_with", "near_deduplicated__compared_with")}
    assert [s.name for s in defs.sensors] == ["tiny_landing"]

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tiny_files", ["web/a.jsonl"])
        result = dg.materialize(list(defs.assets), partition_key="web/a.jsonl", instance=instance)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    assert (project / "data/pipelines/tiny/raw/data/web/a.jsonl").is_dir()


def test_components_give_what_assets_and_sensors_give(tmp_path, monkeypatch):
    """One folder, both routes: assets/ + sensors/ through load_project, defs/ through dg."""
    root = tmp_path / "both"
    (root / "assets").mkdir(parents=True)
    (root / "sensors").mkdir()
    (root / "assets/tiny.yaml").write_text(PIPELINE_YAML)
    (root / "assets/mix.yaml").write_text(MIXTURE_YAML)
    (root / "sensors/all.yaml").write_text(yaml.safe_dump({"sensors": [
        {"type": "landing", "pipeline": "tiny"}, {"type": "training_feedback", "mixture": "mix"}, AGENT_ENTRY]}))
    dg_project(root, "bothproj", {
        "tiny": [{"type": "dagster_llmdata.PipelineComponent", "attributes": yaml.safe_load(PIPELINE_YAML)}],
        "mix": [{"type": "dagster_llmdata.MixtureComponent", "attributes": yaml.safe_load(MIXTURE_YAML) | {"training_feedback": {}}}],
        "agent": [{"type": "dagster_llmdata.AgentComponent", "attributes": AGENT_ENTRY}],
    })

    from_assets, from_components = summary(load_project(root)), summary(load_defs(root, monkeypatch))
    assert from_components == from_assets
    assert {"tiny/shards", "mix/mixture", "mix/training_run", "agent_proposals"} <= set(from_components["assets"])
    assert from_components["sensors"] == {"tiny_landing", "mix_feedback", "agent"}
    assert from_components["jobs"] == {"tiny_job", "agent_job"}


def test_component_attributes_are_the_spec_fields():
    """A spec field added to spec/ must reach its component (or the YAML would not paste over)."""
    for component in COMPONENTS.values():
        fields = set(component.model_fields) - COMPONENT_ONLY_FIELDS
        assert fields == set(component.spec_model().model_fields), component.__name__


def test_spec_errors_are_the_specs(tmp_path, monkeypatch):
    bad = yaml.safe_load(PIPELINE_YAML) | {"stages": [{"name": "raw", "op": "normalize"}]}
    root = dg_project(tmp_path / "bad", "badproj", {"tiny": [{"type": "dagster_llmdata.PipelineComponent", "attributes": bad}]})
    with pytest.raises(Exception) as caught:
        load_defs(root, monkeypatch)
    assert "the first stage must use op `ingest`" in error_chain(caught.value)


def test_a_mixture_reads_the_projects_pipeline_components(tmp_path, monkeypatch):
    mixture = {"type": "dagster_llmdata.MixtureComponent", "attributes": yaml.safe_load(MIXTURE_YAML)}
    alone = dg_project(tmp_path / "alone", "aloneproj", {"mix": [mixture]})
    with pytest.raises(Exception) as caught:
        load_defs(alone, monkeypatch)
    assert "no loaded pipeline has: ['tiny/shards']" in error_chain(caught.value)

    pipeline = {"type": "dagster_llmdata.PipelineComponent", "attributes": yaml.safe_load(PIPELINE_YAML) | {"project_root": "elsewhere"}}
    apart = dg_project(tmp_path / "apart", "apartproj", {"mix": [mixture], "nested/tiny": [pipeline]})
    with pytest.raises(Exception) as caught:
        load_defs(apart, monkeypatch)
    assert "reads pipelines with another project_root: tiny" in error_chain(caught.value)

    # one defs.yaml holding both documents, the pipeline after the mixture
    together = dg_project(tmp_path / "together", "togetherproj", {
        "data": [mixture, {**pipeline, "attributes": yaml.safe_load(PIPELINE_YAML)}]})
    keys = {k.to_user_string() for k in load_defs(together, monkeypatch).resolve_asset_graph().get_all_asset_keys()}
    assert {"mix/mixture", "tiny/shards"} <= keys


def test_scaffolded_defs_load(tmp_path, monkeypatch):
    """What each scaffolder writes loads as written (the mixture over the pipeline beside it)."""
    root = dg_project(tmp_path / "scaf", "scafproj", {})
    defs_dir = root / "scafproj/defs"
    for name, folder in (("PipelineComponent", "my-pipeline"), ("MixtureComponent", "my_mix"), ("AgentComponent", "agent")):
        (defs_dir / folder).mkdir()
        request = dg.ScaffoldRequest(type_name=f"dagster_llmdata.{name}", target_path=defs_dir / folder,
                                     scaffold_format="yaml", project_root=root, params=NoParams())
        get_scaffolder(COMPONENTS[name]).scaffold(request)
    assert yaml.safe_load((defs_dir / "my_mix/defs.yaml").read_text())["attributes"]["inputs"][0]["dataset"] == "my_pipeline/shards"
    s = summary(load_defs(root, monkeypatch))
    assert {"my_pipeline/raw", "my_pipeline/shards", "my_mix/mixture", "agent_proposals"} <= set(s["assets"])
    assert s["sensors"] == {"my_pipeline_landing", "agent"}


def registry_entry_point() -> tuple[str, str]:
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    [(name, value)] = entry_points[DG_PLUGIN_ENTRY_POINT_GROUP].items()
    return name, value


def test_the_package_is_a_dg_plugin():
    """pyproject declares the group dg reads, and what dg discovers in that module is the three."""
    _, value = registry_entry_point()
    found = dict(get_package_objects_in_module(importlib.import_module(value)))
    assert set(found) == set(COMPONENTS) and all(found[n] is c for n, c in COMPONENTS.items())
    assert all(isinstance(get_scaffolder(c), dg.Scaffolder) for c in COMPONENTS.values())


DG = Path(sys.executable).with_name("dg")


@pytest.fixture()
def dg_env(tmp_path) -> dict[str, str]:
    """Environment for the dg CLI: this checkout first on the path and, where the installed
    package's metadata lacks the entry point (an install of another checkout, or one from before
    it was declared), a stand-in distribution declaring what pyproject.toml declares."""
    if not DG.exists():
        pytest.skip("the dg CLI is not installed (make test installs it)")
    name, value = registry_entry_point()
    paths = [str(REPO)]
    if not any(ep.value == value for ep in importlib.metadata.entry_points(group=DG_PLUGIN_ENTRY_POINT_GROUP)):
        dist = tmp_path / "entry_point" / "dagster_llmdata_entry_point-0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dagster-llmdata-entry-point\nVersion: 0\n")
        (dist / "entry_points.txt").write_text(f"[{DG_PLUGIN_ENTRY_POINT_GROUP}]\n{name} = {value}\n")
        paths.append(str(dist.parent))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"), "DAGSTER_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"}


def run_dg(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    Path(env["DAGSTER_HOME"]).mkdir(exist_ok=True)
    proc = subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_dg_lists_the_components(tmp_path, dg_env):
    root = dg_project(tmp_path / "listed", "listedproj", {})
    items = json.loads(run_dg(["list", "components", "--json"], root, dg_env))["items"]
    assert {f"dagster_llmdata.{n}" for n in COMPONENTS} <= {i["key"] for i in items}


@pytest.mark.slow  # four dg processes, each importing Dagster and the package: ~1 min on 2 shared cores
def test_dg_scaffolds_defs_that_load(tmp_path, dg_env):
    root = dg_project(tmp_path / "scaffolded", "scaffoldedproj", {})
    env = dg_env | {"PYTHONPATH": os.pathsep.join([dg_env["PYTHONPATH"], str(root)])}
    for name, folder in (("PipelineComponent", "my_pipeline"), ("MixtureComponent", "my_mix"), ("AgentComponent", "agent")):
        run_dg(["scaffold", "defs", f"dagster_llmdata.{name}", folder], root, env)
        assert yaml.safe_load((root / "scaffoldedproj/defs" / folder / "defs.yaml").read_text())["type"] == f"dagster_llmdata.{name}"
    listed = json.loads(run_dg(["list", "defs", "--json"], root, env))
    assert {"my_mix/mixture:manifest_sound", "my_pipeline/shards:ledger_balances"} <= {c["key"] for c in listed["asset_checks"]}
    assert {s["name"] for s in listed["sensors"]} == {"my_pipeline_landing", "agent"}
