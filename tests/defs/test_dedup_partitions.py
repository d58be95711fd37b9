"""Dedup across partitions through Dagster: first landed keeps, dropped rows name the kept doc and
its partition, a rewritten earlier partition makes later ones stale, concurrent runs never keep a
document twice."""

from __future__ import annotations

import json
import multiprocessing
import random

import dagster as dg
from dagster._core.definitions.data_version import StaleStatus
import pyarrow.parquet as pq
import pytest
from dagster._utils.test.data_versions import get_stale_status_resolver

from dagster_llmdata import load_project
from dagster_llmdata.spec.project import read_project
from dagster_llmdata.defs.removal import remove_partition
from dagster_llmdata.demo.planted_duplicates import substitute_words
from dagster_llmdata.io.parquet_store import list_parquet

from ..conftest import materialise_partition, one_source_project, write_jsonl

STAGES = [{"name": "exact", "op": "exact_dedup"}, {"name": "near", "op": "minhash_dedup"}]


def _rows(folder) -> list[dict]:
    return [r for f in list_parquet(folder) for r in pq.read_table(f).to_pylist()]


def _near_copy(text: str, seed: int) -> str:
    rng = random.Random(seed)
    return substitute_words(text, 0.04, text.split(), rng)


@pytest.fixture()
def two_files(tmp_path, prose):
    """a.jsonl lands first with originals; b.jsonl has near copies of a's docs, an exact copy of
    one, and docs of its own; c.jsonl holds the same original as b (for the race test)."""
    a = [{"id": f"a{i}", "text": prose[i]} for i in range(8)]
    b = [{"id": "b-near0", "text": _near_copy(prose[0], 0)}, {"id": "b-near5", "text": _near_copy(prose[5], 5)},
         {"id": "b-exact3", "text": prose[3]}] + [{"id": f"b{i}", "text": prose[i]} for i in range(10, 14)]
    root = one_source_project(tmp_path, "corp", STAGES, a)  # landing/b.jsonl holds `a` here: rename
    (root / "landing" / "b.jsonl").rename(root / "landing" / "a.jsonl")
    write_jsonl(root / "landing" / "b.jsonl", b)
    return root


def _stage_dir(root, stage, kind, partition):
    return root / "data" / "corp" / stage / kind / "web" / partition


def test_later_partition_drops_copies_of_earlier_ones_and_goes_stale_when_they_change(two_files, instance, prose):
    root = two_files
    materialise_partition(root, instance, partition="web/a.jsonl")
    result, md = materialise_partition(root, instance, partition="web/b.jsonl")
    assert result.success
    assert md["exact"]["dropped/exact_duplicate"].value == 1 and md["exact"]["partitions_compared"].value == 1
    (exact,) = _rows(_stage_dir(root, "exact", "rejected", "b.jsonl"))
    assert (exact["id"], exact["kept_id"], exact["kept_partition"]) == ("b-exact3", "a3", "web/a.jsonl")
    near = {r["id"]: r for r in _rows(_stage_dir(root, "near", "rejected", "b.jsonl"))}
    assert {k: (r["kept_id"], r["kept_partition"], r["reason"]) for k, r in near.items()} == {
        "b-near0": ("a0", "web/a.jsonl", "near_duplicate"), "b-near5": ("a5", "web/a.jsonl", "near_duplicate")}
    assert md["near"]["dropped_for_earlier_partitions"].value == 2
    assert {r["id"] for r in _rows(_stage_dir(root, "near", "data", "b.jsonl"))} == {f"b{i}" for i in range(10, 14)}

    assets = list(load_project(root).assets)

    def status(stage, partition):  # what the UI shows, from Dagster's own resolver
        return get_stale_status_resolver(instance, assets).get_status(dg.AssetKey(["corp", stage]), partition)

    assert status("near", "web/b.jsonl") == StaleStatus.FRESH
    assert status("exact", "web/b.jsonl") == StaleStatus.FRESH
    # the first file is rewritten without doc 0: b's near copy of it is now the first of its kind
    write_jsonl(root / "landing" / "a.jsonl", [{"id": f"a{i}", "text": prose[i]} for i in range(1, 8)])
    materialise_partition(root, instance, partition="web/a.jsonl")
    assert status("near", "web/b.jsonl") == StaleStatus.STALE
    assert status("exact", "web/b.jsonl") == StaleStatus.STALE
    assert status("near", "web/a.jsonl") == StaleStatus.FRESH
    result, md = materialise_partition(root, instance, partition="web/b.jsonl")
    assert "llmdata/skipped" not in md["near"]  # what it compared against changed: it ran again
    near = {r["id"] for r in _rows(_stage_dir(root, "near", "rejected", "b.jsonl"))}
    assert near == {"b-near5"}
    assert status("near", "web/b.jsonl") == StaleStatus.FRESH


def test_removing_an_earlier_partition_makes_later_ones_stale_and_frees_their_copies(two_files, instance, prose):
    root = two_files
    materialise_partition(root, instance, partition="web/a.jsonl")
    materialise_partition(root, instance, partition="web/b.jsonl")
    assets = list(load_project(root).assets)

    def status(stage, partition):
        return get_stale_status_resolver(instance, assets).get_status(dg.AssetKey(["corp", stage]), partition)

    assert status("near", "web/b.jsonl") == StaleStatus.FRESH
    spec = read_project(root).pipelines["corp"]
    removal = remove_partition(spec, root, "web/a.jsonl", instance)
    assert removal.stale == {"exact": ["web/b.jsonl"], "near": ["web/b.jsonl"]}
    assert set(removal.stages_cleared) == {"raw", "exact", "near"}
    assert instance.get_dynamic_partitions("corp_files") == ["web/b.jsonl"]
    for stage in ("raw", "exact", "near"):
        for kind in ("data", "rejected"):
            assert not _stage_dir(root, stage, kind, "a.jsonl").exists()
    assert status("near", "web/b.jsonl") == StaleStatus.STALE
    assert status("exact", "web/b.jsonl") == StaleStatus.STALE
    # re-run: with the originals gone, b's copies are the first of their kind and are kept
    result, md = materialise_partition(root, instance, partition="web/b.jsonl")
    assert result.success and md["near"]["partitions_compared"].value == 0
    kept = {r["id"] for r in _rows(_stage_dir(root, "near", "data", "b.jsonl"))}
    assert {"b-near0", "b-near5", "b-exact3"} <= kept
    assert status("near", "web/b.jsonl") == StaleStatus.FRESH
    # a file landing under the removed name again is new: it lands after b and loses to b's copies
    write_jsonl(root / "landing" / "a.jsonl", [{"id": "a0-again", "text": prose[0]}])
    materialise_partition(root, instance, partition="web/a.jsonl")
    (row,) = _rows(_stage_dir(root, "near", "rejected", "a.jsonl"))
    assert (row["id"], row["kept_id"], row["kept_partition"]) == ("a0-again", "b-near0", "web/b.jsonl")


def _landing_sensor_project(root, on_removed):
    sensors = root / "sensors"
    sensors.mkdir(exist_ok=True)
    (sensors / "landing.yaml").write_text(f"sensors:\n  - {{type: landing, pipeline: corp, on_removed: {on_removed}}}\n")
    return load_project(root)


@pytest.mark.parametrize("on_removed", ["remove", "keep"])
def test_landing_sensor_on_a_removed_file(two_files, instance, on_removed):
    root = two_files
    defs = _landing_sensor_project(root, on_removed)
    sensor = defs.resolve_sensor_def("corp_landing")
    first = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert sorted(r.partition_key for r in first.run_requests) == ["web/a.jsonl", "web/b.jsonl"]
    materialise_partition(root, instance, partition="web/a.jsonl")
    materialise_partition(root, instance, partition="web/b.jsonl")
    (root / "landing" / "a.jsonl").unlink()
    second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
    assert not second.run_requests
    assert "web/a.jsonl" not in json.loads(second.cursor) or on_removed == "keep"
    removed = not _stage_dir(root, "near", "data", "a.jsonl").exists()
    assert removed == (on_removed == "remove")
    assert (instance.get_dynamic_partitions("corp_files") == ["web/b.jsonl"]) == (on_removed == "remove")
    # the next tick has nothing more to do either way
    third = sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor, definitions=defs))
    assert isinstance(third, dg.SkipReason)
    # an unmounted landing folder removes nothing
    if on_removed == "remove":
        (root / "landing").rename(root / "landing-offline")
        sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor, definitions=defs))
        assert _stage_dir(root, "near", "data", "b.jsonl").exists()


def test_landing_sensor_removes_a_partition_a_run_holds_on_a_later_tick(two_files, instance, monkeypatch):
    from dagster_llmdata.defs import landing_sensor as sensors
    from dagster_llmdata.engine.materialise import pipeline_context
    from dagster_llmdata.engine.materialise import stage_lock

    root = two_files
    defs = _landing_sensor_project(root, "remove")
    sensor = defs.resolve_sensor_def("corp_landing")
    first = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    materialise_partition(root, instance, partition="web/a.jsonl")
    (root / "landing" / "a.jsonl").unlink()
    monkeypatch.setattr(sensors, "REMOVE_LOCK_WAIT_S", 0.2)
    with stage_lock(pipeline_context(read_project(root).pipelines["corp"], root).layout, ["near"]):  # a dedup run in progress
        busy = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
    assert _stage_dir(root, "near", "data", "a.jsonl").exists()  # nothing removed while it was held
    assert isinstance(busy, dg.SkipReason)  # and nothing recorded: the next tick tries again
    later = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
    assert not _stage_dir(root, "near", "data", "a.jsonl").exists()
    assert "web/a.jsonl" not in json.loads(later.cursor)


def _materialise_in_process(root, home, partition):
    with dg.DagsterInstance.from_config(home) as instance:
        materialise_partition(root, instance, partition=partition)


def test_concurrent_runs_on_different_partitions_keep_no_document_twice(tmp_path, prose):
    """b and c both hold docs 0-5 (c: three exact copies, three near copies) and five of their own;
    started at once, one of them must keep each shared doc and the other drop it."""
    b = [{"id": f"b{i}", "text": prose[i]} for i in range(6)]
    c = [{"id": f"c{i}", "text": prose[i] if i < 3 else _near_copy(prose[i], i)} for i in range(6)]
    b += [{"id": f"b-own{i}", "text": prose[20 + i]} for i in range(5)]
    c += [{"id": f"c-own{i}", "text": prose[30 + i]} for i in range(5)]
    root = one_source_project(tmp_path, "corp", STAGES, b)
    write_jsonl(root / "landing" / "c.jsonl", c)
    home = tmp_path / "home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:  # its storage exists before both start
        instance.add_dynamic_partitions("corp_files", ["web/b.jsonl", "web/c.jsonl"])
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_materialise_in_process, args=(root, str(home), f"web/{n}.jsonl")) for n in ("b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    kept = [r["id"] for n in ("b", "c") for r in _rows(_stage_dir(root, "near", "data", f"{n}.jsonl"))]
    shared = sorted(k.lstrip("bc") for k in kept if "own" not in k)
    assert shared == [str(i) for i in range(6)]  # each shared doc kept exactly once
    assert len(kept) == 16
    for stage in ("exact", "near"):
        dropped = {n: _rows(_stage_dir(root, stage, "rejected", f"{n}.jsonl")) for n in ("b", "c")}
        assert sum(map(len, dropped.values())) == 3
        # whichever ran second dropped its copies in favour of the docs the first one kept
        for n, other in (("b", "c"), ("c", "b")):
            assert all(r["kept_partition"] == f"web/{other}.jsonl" and r["kept_id"].startswith(other) for r in dropped[n])
