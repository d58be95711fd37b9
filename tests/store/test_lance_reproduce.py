"""Reproduction: a mixture over a lance_table stage pins the table's version; after the upstream
changes and the table moves on (and old versions are cleaned up), `llmdata reproduce` rebuilds the
same ids in the same order and checks the digests. A Parquet input that changed is reported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from dagster_llmdata.errors import ReproduceError
from dagster_llmdata import load_project
from dagster_llmdata.mixture.mixture_asset import MANIFEST_CHECK, mixture_key
from dagster_llmdata.mixture.manifest import read_manifest
from dagster_llmdata.mixture.reader import MixtureDataset
from dagster_llmdata.store import SampleStore
from dagster_llmdata.mixture.reproduce import reproduce
from tests.conftest import materialise_partition, one_source_project, write_jsonl

BIN = Path(sys.executable).parent
MIXTURE = textwrap.dedent(
    """\
    mixture: mix
    inputs:
      - {kind: lance, dataset: lake/store}
    token_budget: 20000
    seed: 3
    """
)


def _rows(prose: list[str], start: int, n: int) -> list[dict]:
    return [{"id": f"d{i}", "text": prose[i], "domain": "licences" if i % 2 else "docs"} for i in range(start, start + n)]


def _materialise_mixture(root: Path, instance):
    defs = load_project(root)
    job = dg.define_asset_job("m", selection=[mixture_key("mix")]).resolve(asset_graph=defs.resolve_asset_graph())
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_reproduce_after_the_table_moved_on(tmp_path, prose, instance):
    root = one_source_project(tmp_path, "lake", [{"name": "store", "op": "lance_table"}], _rows(prose, 0, 12))
    (root / "assets" / "mix.yaml").write_text(MIXTURE)
    assert materialise_partition(root, instance)[0].success
    result = _materialise_mixture(root, instance)
    assert result.success
    assert [(c.check_name, c.passed) for c in result.get_asset_check_evaluations()] == [(MANIFEST_CHECK, True)]
    manifest = read_manifest(result.get_asset_materialization_events()[0].materialization.metadata["manifest"].value)
    lance_input = manifest.inputs[0]
    pinned = lance_input["version"]
    assert lance_input["kind"] == "lance" and lance_input["tag"] == f"mixture-mix-v{pinned}"
    stream_before = [r["id"] for r in MixtureDataset(manifest, columns=["id"])]
    assert len(stream_before) == manifest.n_samples and set(stream_before) <= {f"d{i}" for i in range(12)}

    # upstream changes: half the docs go, new ones arrive; the table gets a new version
    write_jsonl(root / "landing" / "b.jsonl", _rows(prose, 6, 14))
    _, meta = materialise_partition(root, instance)
    assert meta["store"]["lance/rows_removed"].value == 6 and meta["store"]["lance/version"].value > pinned
    assert not Path(lance_input["uri"]).is_absolute()  # pinned relative to the project root
    store = SampleStore(root / lance_input["uri"], "store")
    # and old versions are cleaned up: the pinned one stays (tagged), untagged ones go
    store.cleanup(timedelta(0), protect={pinned})
    assert pinned in {v["version"] for v in store.versions()}

    out = tmp_path / "stream.jsonl"
    proc = subprocess.run([str(BIN / "llmdata"), "reproduce", str(manifest.path), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["matches"] and report["checked"] == ["ids_sha256", "stream_sha256"]
    assert report["ids_sha256"] == manifest.stream["ids_sha256"]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == stream_before

    # a fresh mixture plan now reads the new version; the old manifest still reproduces
    assert _materialise_mixture(root, instance).success
    assert reproduce(manifest.path)["matches"]

    # the pinned version's tag deleted and the version cleaned up: a clear error, not a wrong stream
    store.table().tags.delete(lance_input["tag"])
    for tag in [t for t, v in store.tags().items() if v == pinned]:
        store.table().tags.delete(tag)
    store.cleanup(timedelta(0))
    proc = subprocess.run([str(BIN / "llmdata"), "reproduce", str(manifest.path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no version" in proc.stderr and "Traceback" not in proc.stderr


def test_changed_parquet_input_is_reported(tmp_path):
    from tests.mixture_helpers import docs, mixture_project, write_stage

    from dagster_llmdata.mixture.plan import plan
    from dagster_llmdata.spec.mixture import load_mixture_spec

    root = mixture_project(tmp_path)
    manifest = plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)
    assert reproduce(manifest.path)["matches"]
    part = manifest.inputs[0]["files"][0]["partition"]
    write_stage(root, "shards", part, docs("code", 3, prefix="changed"))
    try:
        reproduce(manifest.path)
    except ReproduceError as exc:
        assert "changed since the manifest was written" in str(exc)
    else:
        raise AssertionError("a changed input file must not reproduce")


def test_per_document_weights_over_a_lance_input(tmp_path, prose, instance):
    from dagster_llmdata.spec.project import read_project
    from dagster_llmdata.mixture.plan import plan
    from dagster_llmdata.spec.mixture import load_mixture_spec

    root = one_source_project(tmp_path, "lake", [{"name": "store", "op": "lance_table"}], _rows(prose, 0, 12))
    (root / "assets" / "mix.yaml").write_text(MIXTURE)
    assert materialise_partition(root, instance)[0].success
    # the re-weighter's output: the odd docs (domain licences) are mostly learned already
    weights = {f"d{i}": 0.2 for i in range(1, 12, 2)}
    manifest = plan(load_mixture_spec(root / "assets" / "mix.yaml"), root, read_project(root).pipelines, doc_weights=weights)
    assert manifest.inputs[0]["kind"] == "lance" and manifest.doc_weights["rows"] == 6
    assert manifest.domains["licences"]["mean_doc_weight"] == pytest.approx(0.2) and manifest.domains["docs"]["mean_doc_weight"] == 1.0
    assert manifest.domains["licences"]["probability"] < manifest.domains["docs"]["probability"]


def test_a_copied_project_reproduces_its_lance_input_from_the_copy(tmp_path, prose, instance):
    import shutil

    original = one_source_project(tmp_path / "proj", "lake", [{"name": "store", "op": "lance_table"}], _rows(prose, 0, 12))
    (original / "assets" / "mix.yaml").write_text(MIXTURE)
    assert materialise_partition(original, instance)[0].success
    result = _materialise_mixture(original, instance)
    manifest = read_manifest(result.get_asset_materialization_events()[0].materialization.metadata["manifest"].value)
    assert manifest.inputs[0]["uri"] == "data/lake/lance"  # the table, pinned relative to the project root
    copy = tmp_path / "moved" / "proj"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    proc = subprocess.run([str(BIN / "llmdata"), "reproduce", str(copy / manifest.path.relative_to(original)), "--project", str(copy)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["matches"]
