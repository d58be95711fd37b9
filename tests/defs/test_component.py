"""The same pipeline YAML as a Dagster Component in a `dg` project's defs/ folder."""

from __future__ import annotations

import json
import textwrap

import dagster as dg
import yaml

from tests.conftest import PIPELINE_YAML


def test_pipeline_component_loads_from_a_defs_folder(tmp_path, monkeypatch, prose):
    project = tmp_path / "proj"
    (project / "myproj" / "defs" / "tiny").mkdir(parents=True)
    (project / "myproj" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "myproj"
        version = "0.0.1"
        [tool.dg]
        directory_type = "project"
        [tool.dg.project]
        root_module = "myproj"
        """))
    attributes = yaml.safe_load(PIPELINE_YAML) | {"project_root": str(project)}
    (project / "myproj/defs/tiny/defs.yaml").write_text(
        yaml.safe_dump({"type": "dagster_llmdata.PipelineComponent", "attributes": attributes})
    )
    (project / "landing/web").mkdir(parents=True)
    (project / "landing/web/a.jsonl").write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate(prose[:5])))
    monkeypatch.syspath_prepend(str(project))

    defs = dg.load_from_defs_folder(path_within_project=project)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {f"tiny/{s}" for s in ("raw", "normalized", "deduplicated", "near_deduplicated", "quality_filtered", "redacted", "shards",
                                          "deduplicated__compared_with", "near_deduplicated__compared_with")}
    assert [s.name for s in defs.sensors] == ["tiny_landing"]

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tiny_files", ["web/a.jsonl"])
        result = dg.materialize(list(defs.assets), partition_key="web/a.jsonl", instance=instance)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    assert (project / "data/pipelines/tiny/raw/data/web/a.jsonl").is_dir()
