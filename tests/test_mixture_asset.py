"""The `mixture:` spec kind as Dagster objects: the mixture asset writes a manifest, lineage runs
training_run -> mixture -> stages -> raw, and a broken mixture spec is reported, not fatal."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from dagster_llmdata import load_project
from dagster_llmdata.mixture.mixture_asset import MANIFEST_CHECK, mixture_key, mixture_op_name, training_run_key
from dagster_llmdata.mixture.manifest import read_manifest
from dagster_llmdata.mixture.reader import MixtureDataset

from tests.mixture_helpers import MIXTURE_YAML, mixture_project


def _materialise_mixture(root, instance, run_config=None):
    defs = load_project(root)
    job = dg.define_asset_job("m", selection=[mixture_key("mix")]).resolve(asset_graph=defs.resolve_asset_graph())
    return job.execute_in_process(instance=instance, run_config=run_config or {}, raise_on_error=False)


def test_mixture_asset_graph_and_lineage(tmp_path):
    root = mixture_project(tmp_path)
    graph = load_project(root).resolve_asset_graph()
    key = mixture_key("mix")
    assert graph.get(key).parent_keys == {dg.AssetKey(["tiny", "shards"])}
    assert graph.get(key).partitions_def is None  # reads every partition of its inputs
    assert graph.get(training_run_key("mix")).parent_keys == {key}
    # lineage from the training run back to the raw stage
    upstream = graph.get_ancestor_asset_keys(training_run_key("mix"))
    assert {key, dg.AssetKey(["tiny", "shards"]), dg.AssetKey(["tiny", "raw"])} <= upstream


def test_materialise_writes_manifest_with_metadata(tmp_path, instance):
    root = mixture_project(tmp_path)
    result = _materialise_mixture(root, instance)
    assert result.success
    mat = result.get_asset_materialization_events()[0].materialization
    md = mat.metadata
    manifest = read_manifest(md["manifest"].value)
    assert md["version"].value == manifest.version
    assert {k: v.value for k, v in md.items() if k.startswith("weight/")} == pytest.approx({f"weight/{d}": 1 / 3 for d in ("code", "news", "prose")})
    assert md["n_input_files"].value == 4
    assert mat.tags["dagster/data_version"] == manifest.version
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [(MANIFEST_CHECK, True)]
    assert len(list(MixtureDataset(manifest))) == manifest.n_samples


def test_feedback_run_config_sets_weights_and_later_runs_keep_them(tmp_path, instance):
    root = mixture_project(tmp_path, MIXTURE_YAML + "algorithm: {name: odm}\n")
    weights = {"code": 0.6, "news": 0.1, "prose": 0.3}
    cfg = {"ops": {mixture_op_name("mix"): {"config": {"weights_json": json.dumps(weights), "state_json": json.dumps({"t": 3}),
                                                       "run_id": "r1", "step": 300, "change": 0.25}}}}
    result = _materialise_mixture(root, instance, cfg)
    assert result.success
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["weight/code"].value == pytest.approx(0.6) and md["change"].value == 0.25
    assert md["training_run"].value == "r1" and md["training_step"].value == 300
    m = read_manifest(md["manifest"].value)
    assert m.feedback == {"run_id": "r1", "step": 300, "change": 0.25} and m.algorithm["state"] == {"t": 3}
    # a plain re-materialisation (new upstream data) keeps the weights feedback chose
    again = _materialise_mixture(root, instance)
    assert read_manifest(again.get_asset_materialization_events()[0].materialization.metadata["manifest"].value).weights == pytest.approx(weights)


def test_mixture_failure_is_a_clear_message(tmp_path, instance):
    root = mixture_project(tmp_path, MIXTURE_YAML.replace("tiny/shards", "tiny/raw"))
    result = _materialise_mixture(root, instance)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "hold no documents" in failure.message


def test_mixture_naming_unknown_dataset_is_reported_and_rest_loads(tmp_path):
    root = mixture_project(tmp_path, MIXTURE_YAML.replace("tiny/shards", "tiny/nostage"))
    graph = load_project(root).resolve_asset_graph()
    assert graph.has(dg.AssetKey(["tiny", "shards"])) and not graph.has(mixture_key("mix"))
    from dagster_llmdata.definitions import SPECS_ASSET

    assert "tiny/nostage" in graph.get(SPECS_ASSET).description
