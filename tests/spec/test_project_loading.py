"""A code location that survives bad specs: each broken file is reported with file:line and every
other pipeline still loads (an agent writes specs, so one bad file must not take everything down)."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from dagster_llmdata import Operator, load_project, register_operator
from dagster_llmdata.defs.specs_asset import SPECS_ASSET
from dagster_llmdata.spec.project import read_project
from tests.conftest import PIPELINE_YAML


def _keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


BROKEN = {
    "bad_yaml.yaml": ("pipeline: x\nstages: [\n", "bad_yaml.yaml:3: invalid YAML"),
    "unknown_op.yaml": (PIPELINE_YAML.replace("tiny", "other").replace("op: normalize", "op: normalise"),
                        "unknown_op.yaml:9: stages.1: unknown operator 'normalise' (did you mean 'normalize'?)"),
    "dupe.yaml": (PIPELINE_YAML, "dupe.yaml:1: name 'tiny' is already used by"),
    "neither.yaml": ("sources: []\n", "neither.yaml:1: a spec has exactly one of the top-level keys"),
    "list.yaml": ("- pipeline: x\n", "list.yaml:1: a spec has exactly one of the top-level keys"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_one_broken_spec_leaves_the_others_loaded(project, name):
    text, expected = BROKEN[name]
    # "dupe" sorts before "tiny": the clash is reported on whichever file comes second
    (project / "assets" / ("zz_" + name if name == "dupe.yaml" else name)).write_text(text)
    project_specs = read_project(project)
    assert list(project_specs.pipelines) == ["tiny"]
    (problem,) = project_specs.problems
    assert expected.split(":", 1)[1] in str(problem) and str(problem).startswith(str(project / "assets"))
    defs = load_project(project)
    assert "tiny/raw" in _keys(defs) and "specs" in _keys(defs)
    assert defs.resolve_sensor_def("tiny_landing")
    assert "Broken now" in defs.resolve_assets_def(SPECS_ASSET).descriptions_by_key[SPECS_ASSET]


def test_sensor_problems_are_reported_per_entry(project):
    (project / "sensors" / "more.yaml").write_text(
        "sensors:\n"
        "  - {type: landing, pipeline: nowhere}\n"
        "  - {type: telepathy, pipeline: tiny}\n"
        "  - {type: landing, pipeline: tiny, minimum_interval_seconds: -1, name: second}\n"
    )
    (project / "sensors" / "junk.yaml").write_text("just a string\n")
    defs = load_project(project)
    assert defs.resolve_sensor_def("tiny_landing")  # the good file still loads
    problems = [str(p) for p in read_project(project).problems]
    assert any("more.yaml:4: sensors.2.minimum_interval_seconds" in p for p in problems)
    assert any("more.yaml:3: sensors.1: unknown sensor type 'telepathy'" in p for p in problems)
    assert any("junk.yaml:1:" in p for p in problems)
    spec_check = dg.materialize([defs.resolve_assets_def(SPECS_ASSET)], instance=dg.DagsterInstance.ephemeral())
    (evaluation,) = spec_check.get_asset_check_evaluations()
    assert not evaluation.passed
    # the unknown pipeline is found when sensors are built against what loaded
    (mat,) = [e.materialization for e in spec_check.get_asset_materialization_events()]
    assert mat.metadata["n_problems"].value == 3
    assert "nowhere" in defs.resolve_assets_def(SPECS_ASSET).descriptions_by_key[SPECS_ASSET]


def test_specs_check_passes_once_the_spec_is_fixed(project):
    broken = project / "assets" / "broken.yaml"
    broken.write_text("pipeline: b\nstages: [\n")
    specs_asset = load_project(project).resolve_assets_def(SPECS_ASSET)
    broken.unlink()  # fixed before the check runs: it re-reads the files
    result = dg.materialize([specs_asset], instance=dg.DagsterInstance.ephemeral())
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert "specs" not in _keys(load_project(project))  # a clean project's graph is its pipelines


def test_status_names_the_broken_file_and_still_shows_the_rest(project):
    (project / "assets" / "broken.yaml").write_text("pipeline: b\nsources: [{name: s, landing: l}]\nstages:\n  - {name: a, op: nope}\n")
    res = subprocess.run([sys.executable, "-m", "dagster_llmdata.cli", "status", "--project", str(project)],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert f"{project / 'assets' / 'broken.yaml'}:4: stages.0: unknown operator 'nope'" in res.stderr
    assert "raw" in res.stdout and "Traceback" not in res.stderr


def test_an_operator_name_registered_twice_is_an_error():
    class First(Operator):
        name = "twice_registered"

    class Second(Operator):
        name = "twice_registered"

    register_operator(First)
    register_operator(First)  # the same class again (a module reloaded) is fine
    with pytest.raises(ValueError, match="registered twice"):
        register_operator(Second)
