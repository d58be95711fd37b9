"""The run's sample stream: order that survives switches, one global stream split over ranks and
DataLoader workers, exact resume from a state dict, and a run's switch record that workers follow."""

from __future__ import annotations

from collections import Counter

import pytest

from dagster_llmdata.mixture import with_weights
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.mixture.reader import MixtureDataset, read_record
from dagster_llmdata.spec.mixture import MixtureSpec, load_mixture_spec

from ..mixture_helpers import mixture_project


@pytest.fixture()
def manifest(tmp_path):
    root = mixture_project(tmp_path)
    data = load_mixture_spec(root / "assets" / "mix.yaml").model_dump() | {"token_budget": 3000}
    return plan(MixtureSpec.model_validate(data), root)


def _ids(ds) -> list[str]:
    return [r["id"] for r in ds]


def test_a_switch_keeps_each_domains_order_without_repeats(manifest):
    n = 300
    before = _ids(MixtureDataset(manifest, limit=n))
    ds = MixtureDataset(manifest, limit=n)
    it = iter(ds)
    head = [next(it)["id"] for _ in range(100)]
    assert head == before[:100]
    tilted = with_weights(manifest, {"code": 0.1, "prose": 0.1, "news": 0.8})
    entry = ds.update(tilted)  # from the current position
    assert entry["sample"] == 100 and entry["version"] == tilted.version
    tail = _ids(ds)
    assert len(head) + len(tail) == n
    # within each domain, the switched stream is a prefix of that domain's own order: nothing seen
    # twice before the domain is exhausted, nothing of its order skipped
    uniform_long = {d: [r["id"] for r in MixtureDataset(manifest, limit=5000, epoch_cap=None) if r["_domain"] == d]
                    for d in manifest.domains}
    switched = head + tail
    for d, order in uniform_long.items():
        got = [i for i in switched if i.startswith(d)]
        assert got == order[: len(got)], d
    share = lambda ids: Counter(i.split("-")[0] for i in ids)["news"] / len(ids)  # noqa: E731
    assert share(tail) > 1.5 * share(head)


def test_a_zero_weight_leaves_the_other_domains_order_alone(manifest):
    no_news = with_weights(manifest, {"code": 0.5, "prose": 0.5})

    def first(m, d, k=40):
        out = []
        for r in MixtureDataset(m, limit=0, epoch_cap=None):
            if r["_domain"] == d:
                out.append(r["id"])
                if len(out) == k:
                    return out
    assert first(manifest, "code") == first(no_news, "code") and first(manifest, "prose") == first(no_news, "prose")


def test_ranks_split_one_global_stream_disjointly(manifest):
    world = 3
    whole = _ids(MixtureDataset(manifest, limit=240))
    per_rank = [[r["_sample"] for r in MixtureDataset(manifest, limit=240, rank=r, world_size=world)] for r in range(world)]
    assert all(len(p) == 80 for p in per_rank)
    assert sorted(s for p in per_rank for s in p) == list(range(240))
    assert all(p == list(range(r, 240, world)) for r, p in enumerate(per_rank))
    ids = [r["id"] for r in MixtureDataset(manifest, limit=240, rank=1, world_size=world)]
    assert ids == whole[1::world]


def test_the_sequence_is_the_same_for_any_worker_count(manifest):
    torch = pytest.importorskip("torch")
    seqs = []
    for workers in (0, 1, 3):
        ds = MixtureDataset(manifest, limit=200, columns=["id"], batch_size=8, rank=1, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=workers, collate_fn=lambda rows: [r["id"] for r in rows])
        seqs.append([i for batch in loader for i in batch])
    assert seqs[0] == seqs[1] == seqs[2] and len(seqs[0]) == 100
    assert seqs[0] == _ids(MixtureDataset(manifest, limit=200, rank=1, world_size=2))


def test_state_dict_resumes_exactly_after_a_switch(manifest, tmp_path):
    tilted = with_weights(manifest, {"code": 0.8, "prose": 0.1, "news": 0.1})
    ds = MixtureDataset(manifest, limit=400)
    ds.update(tilted, sample=120)
    full = _ids(ds)
    ds2 = MixtureDataset(manifest, limit=400)
    ds2.update(tilted, sample=120)
    it = iter(ds2)
    first = [next(it)["id"] for _ in range(250)]
    state = ds2.state_dict()
    assert state["position"] == 250 and [s["start"] for s in state["segments"]] == [0, 120]
    resumed = MixtureDataset(manifest, limit=400)
    resumed.load_state_dict(state)
    assert first + _ids(resumed) == full


def test_workers_follow_the_runs_switch_record(manifest, tmp_path):
    torch = pytest.importorskip("torch")
    record = tmp_path / "runs" / "r1" / "switches.jsonl"
    tilted = with_weights(manifest, {"code": 0.05, "prose": 0.05, "news": 0.9})
    ds = MixtureDataset(manifest, limit=320, columns=["id"], batch_size=8, record=record)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True, prefetch_factor=2,
                                         collate_fn=lambda rows: [(r["_sample"], r["_version"]) for r in rows])
    switch_at = None
    got = []
    for step, batch in enumerate(loader):
        got += batch
        if step == 3:  # the loader may have built up to workers * prefetch batches ahead: switch after them
            switch_at = step + 1 + 2 * 2
            ds.update(tilted, step=switch_at)
    assert [e["sample"] for e in read_record(record)] == [0, switch_at * 8]
    versions = [v for s, v in got]
    assert set(versions[: switch_at * 8]) == {manifest.version} and set(versions[switch_at * 8:]) == {tilted.version}
    assert [s for s, _ in got] == list(range(320))


def test_reproduce_run_rebuilds_the_switched_stream_and_checks_every_digest(manifest, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from dagster_llmdata.errors import ReproduceError
    from dagster_llmdata.mixture.reader import run_record
    from dagster_llmdata.mixture.reproduce import reproduce_run

    root = manifest.root
    record = run_record(root / "data" / "mixtures", "mix", "run-7")
    ds = MixtureDataset(manifest, limit=500, batch_size=10, record=record)
    it = iter(ds)
    for _ in range(120):
        next(it)
    ds.mark()  # a checkpoint at sample 120
    ds.update(with_weights(manifest, {"code": 0.7, "prose": 0.2, "news": 0.1}), step=15)
    for _ in range(200):
        next(it)
    ds.mark(step=32)
    result = reproduce_run(record)
    assert result["matches"] and result["digests_checked"] == 3
    assert [s["sample"] for s in result["switches"]] == [0, 150] and [c["sample"] for c in result["checkpoints"]] == [120, 320]
    cli = subprocess.run([str(Path(sys.executable).parent / "llmdata"), "reproduce", "--run", "run-7", "--project", str(root)],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["digests_checked"] == 3
    # a record whose switch is moved is caught at the checkpoint after it
    lines = record.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["sample"] = 160
    record.write_text("\n".join([*lines[:2], json.dumps(entry), *lines[3:]]) + "\n")
    bad = reproduce_run(record)
    assert not bad["matches"] and any("320" in m for m in bad["mismatches"])
    cli = subprocess.run([str(Path(sys.executable).parent / "llmdata"), "reproduce", "--run", str(record)], capture_output=True, text=True)
    assert cli.returncode == 1
    record.write_text("not json\n")
    with pytest.raises(ReproduceError, match="not a JSON switch entry"):
        reproduce_run(record)
