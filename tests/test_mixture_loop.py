"""The closed loop: a small LM trains on a mixture, reports per-domain losses, and the feedback
sensor re-materialises the mixture (in process here; under the real `dagster dev` in the slow test)."""

from __future__ import annotations

import time

import pytest

from dagster_llmdata.mixture.feedback import FeedbackStore
from dagster_llmdata.demo.dagster_dev import dagster_dev
from dagster_llmdata.mixture.manifest import read_manifest
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.spec.mixture import load_mixture_spec

from tests.mixture_helpers import MIXTURE_YAML, docs, mixture_project

SENSOR = """\
sensors:
  - type: training_feedback
    mixture: mix
    warmup_step: 0
    update_step: 10
    min_weight_change: 0.001
    minimum_interval_seconds: {interval}
"""
DATA = {"web/a.jsonl": [{**d, "text": "def f(x):\n    return x * 2  # code " * 4} for d in docs("code", 40, 30)]
        + [{**d, "text": "The quick brown fox jumps over the lazy dog. " * 4} for d in docs("prose", 40, 30)]}


@pytest.mark.slow  # ~1 min: trains two small LMs
def test_train_demo_in_process_loop(tmp_path, instance, monkeypatch):
    pytest.importorskip("torch")
    from dagster_llmdata.demo.trainer import run_train_demo

    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    root = mixture_project(tmp_path, MIXTURE_YAML + "algorithm: {name: odm}\n", data=DATA)
    (root / "sensors" / "fb.yaml").write_text(SENSOR.format(interval=30))
    plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)
    lines: list[str] = []
    assert run_train_demo(root, steps=40, report_every=10, dagster=False, mixture="mix", log=lines.append) == 0
    out = "\n".join(lines)
    assert "new mixture" in out and "uniform vs adaptive target loss:" in out
    store = FeedbackStore(root / "data/feedback/feedback.sqlite")
    run = next(r for r in store.runs() if r["run_id"].startswith("train-demo"))
    assert run["status"] == "finished" and run["last_step"] == 40
    consumed = store.consumed(run["run_id"])
    assert len({v for _, v in consumed}) >= 2  # trained on more than one mixture version, each recorded


@pytest.mark.slow
def test_dagster_dev_daemon_rematerialises_mixture_from_feedback(tmp_path):
    root = mixture_project(tmp_path, MIXTURE_YAML + "algorithm: {name: odm}\n")
    (root / "sensors" / "fb.yaml").write_text(SENSOR.format(interval=3))
    from pathlib import Path

    first = plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)
    latest = root / "data/mixtures/mix/manifests/latest.json"
    workspace = Path(__file__).parents[1] / "workspace.yaml"
    with dagster_dev(root, tmp_path / "home", tmp_path / "dev.log", workspace=workspace):
        FeedbackStore(root / "data/feedback/feedback.sqlite").report("live", 100, {"code": 6.0, "news": 1.0, "prose": 1.0}, mixture="mix")
        deadline = time.time() + 240
        while time.time() < deadline and read_manifest(latest).version == first.version:
            time.sleep(1)
    m = read_manifest(latest)
    assert m.version != first.version, (tmp_path / "dev.log").read_text()[-3000:]
    assert m.feedback["run_id"] == "live" and m.feedback["step"] == 100
    assert m.weights["code"] > m.weights["news"]
