"""The training-feedback sensor: cursor, warmup, update_step, min change, observations of the
training run, and the requested run re-materialising the mixture with the new weights."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from dagster_llmdata import FeedbackStore, load_project
from dagster_llmdata.definitions import read_project
from dagster_llmdata.mixture.mixture_asset import mixture_key, training_run_key
from dagster_llmdata.mixture.manifest import read_manifest
from dagster_llmdata.mixture.feedback_sensor import RUN_TAG, STEP_TAG

from tests.mixture_helpers import MIXTURE_YAML, mixture_project

SENSOR_YAML = """\
sensors:
  - type: training_feedback
    mixture: mix
    warmup_step: 100
    update_step: 100
    min_weight_change: {change}
"""


def _project(tmp_path, instance, change=0.01, algorithm="odm"):
    root = mixture_project(tmp_path, MIXTURE_YAML + f"algorithm: {{name: {algorithm}}}\n")
    (root / "sensors" / "fb.yaml").write_text(SENSOR_YAML.format(change=change))
    defs = load_project(root)
    job = dg.define_asset_job("m", selection=[mixture_key("mix")]).resolve(asset_graph=defs.resolve_asset_graph())
    assert job.execute_in_process(instance=instance).success  # the first manifest
    return root, defs, job


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("mix_feedback")
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


def test_sensor_updates_after_warmup_and_requests_materialisation(tmp_path, instance):
    root, defs, job = _project(tmp_path, instance)
    store = FeedbackStore(root / "data/feedback/feedback.sqlite")
    store.report("run1", 50, {"code": 4.0, "news": 1.0, "prose": 2.0}, mixture="mix")
    tick = _tick(defs, instance)
    assert tick.run_requests == []  # before warmup
    assert [o.metadata["step"].value for o in tick.asset_events] == [50]
    obs = tick.asset_events[0]
    assert obs.asset_key == training_run_key("mix") and obs.metadata["loss/code"].value == 4.0
    assert obs.metadata["mixture_version"].value == read_manifest(root / "data/mixtures/mix/manifests").version
    cursor = tick.cursor
    assert _tick(defs, instance, cursor).skip_message  # nothing new: skipped, nothing re-read

    for step in (100, 150):
        store.report("run1", step, {"code": 4.0, "news": 1.0, "prose": 2.0}, mixture="mix")
    tick = _tick(defs, instance, cursor)
    assert len(tick.run_requests) == 1
    req = tick.run_requests[0]
    assert req.tags[RUN_TAG] == "run1" and req.tags[STEP_TAG] == "150"
    config = next(iter(req.run_config["ops"].values()))["config"]
    weights = json.loads(config["weights_json"])
    assert weights["code"] > weights["prose"] > weights["news"]  # ODM: more loss, more weight
    assert config["change"] > 0.01
    # the requested run materialises a manifest with those weights, tagged with the run and step
    result = job.execute_in_process(instance=instance, run_config=req.run_config, tags=req.tags)
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["weight/code"].value == pytest.approx(weights["code"]) and md["training_step"].value == 150
    assert json.loads(config["state_json"])["t"] == 150  # ODM counts one round per training step

    # update_step: 150 -> 200 is not yet 100 steps
    store.report("run1", 200, {"code": 4.0, "news": 1.0, "prose": 2.0}, mixture="mix")
    tick = _tick(defs, instance, tick.cursor)
    assert tick.run_requests == []
    store.report("run1", 250, {"code": 1.0, "news": 6.0, "prose": 2.0}, mixture="mix", mixture_version="vX")  # news got hard
    tick = _tick(defs, instance, tick.cursor)
    assert len(tick.run_requests) == 1 and tick.run_requests[0].tags[STEP_TAG] == "250"
    assert tick.asset_events[-1].metadata["mixture_version"].value == "vX"
    assert json.loads(tick.cursor)["runs"]["run1"]["state"]["t"] == 250


def test_small_weight_change_requests_nothing(tmp_path, instance):
    root, defs, _ = _project(tmp_path, instance, change=0.9)
    store = FeedbackStore(root / "data/feedback/feedback.sqlite")
    store.report("run1", 100, {"code": 4.0, "news": 1.0, "prose": 2.0}, mixture="mix")
    tick = _tick(defs, instance)
    assert tick.run_requests == [] and json.loads(tick.cursor)["runs"]["run1"]["last_update"] == 100


def test_sensor_for_unknown_mixture_or_offline_algorithm_is_reported(tmp_path):
    root = mixture_project(tmp_path)
    (root / "sensors" / "fb.yaml").write_text(SENSOR_YAML.format(change=0.1).replace("mixture: mix", "mixture: nope"))
    load_project(root)
    graph = load_project(root).resolve_asset_graph()
    from dagster_llmdata.definitions import SPECS_ASSET

    assert "unknown mixture 'nope'" in graph.get(SPECS_ASSET).description
    (root / "sensors" / "fb.yaml").write_text(SENSOR_YAML.format(change=0.1))  # the mixture is static: fine (no-op)
    (root / "assets" / "mix.yaml").write_text(MIXTURE_YAML + "algorithm: {name: temperature}\n")
    graph = load_project(root).resolve_asset_graph()
    assert "does not learn from feedback" in graph.get(SPECS_ASSET).description
    (root / "sensors" / "fb.yaml").write_text(SENSOR_YAML.format(change=0.1) + "    warmup: 3\n")
    assert any("warmup" in str(p) for p in read_project(root).problems)


def test_doremi_with_reference_run(tmp_path, instance):
    root, defs, _ = _project(tmp_path, instance, algorithm="doremi")
    (root / "sensors" / "fb.yaml").write_text(SENSOR_YAML.format(change=0.001) + "    reference_run: ref\n    params: {eta: 2.0}\n")
    defs = load_project(root)
    store = FeedbackStore(root / "data/feedback/feedback.sqlite")
    store.report("ref", 100, {"code": 2.0, "news": 2.0, "prose": 2.0}, mixture="mix")
    store.report("run1", 100, {"code": 3.0, "news": 2.0, "prose": 2.0}, mixture="mix")
    tick = _tick(defs, instance)
    reqs = {r.tags[RUN_TAG]: r for r in tick.run_requests}
    w = json.loads(next(iter(reqs["run1"].run_config["ops"].values()))["config"]["weights_json"])
    assert w["code"] > w["news"] == pytest.approx(w["prose"])


def test_reweighter_writes_doc_weights_into_next_manifest(tmp_path, instance):
    root, defs, job = _project(tmp_path, instance, algorithm="reweight")
    store = FeedbackStore(root / "data/feedback/feedback.sqlite")
    # the trainer saw prose docs: 0-9 are learned (low loss), 45-49 the high-loss tail (above the 95th percentile: 47-49)
    doc_losses = {f"prose-{i}": (0.1 if i < 10 else 5.0 + i if i >= 45 else 2.0 + i / 100) for i in range(50)}
    store.report("run1", 100, {"code": 2.0, "news": 2.0, "prose": 2.0}, mixture="mix", doc_losses=doc_losses)
    tick = _tick(defs, instance)
    assert len(tick.run_requests) == 1
    req = tick.run_requests[0]
    result = job.execute_in_process(instance=instance, run_config=req.run_config, tags=req.tags)
    m = read_manifest(result.get_asset_materialization_events()[0].materialization.metadata["manifest"].value)
    assert m.doc_weights["rows"] == 50
    from collections import Counter

    from dagster_llmdata.mixture.reader import MixtureDataset

    seen = Counter(r["id"] for r in MixtureDataset(m, limit=3000) if r["domain"] == "prose")
    middle = statistics_mean([seen[f"prose-{i}"] for i in range(10, 45)])
    assert statistics_mean([seen[f"prose-{i}"] for i in range(10)]) < middle / 2
    assert statistics_mean([seen[f"prose-{i}"] for i in range(47, 50)]) < middle / 2
    # the prose domain, with many down-weighted documents, gives way to the others
    assert m.domains["prose"]["mean_doc_weight"] < 1 and m.domains["prose"]["probability"] < m.domains["code"]["probability"] * 50 / 30


def statistics_mean(values):
    return sum(values) / len(values)
