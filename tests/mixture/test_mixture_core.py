"""dataset(), the manifest a mixture plans, and MixtureDataset streaming it."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.dataset as pads
import pytest

from dagster_llmdata.errors import ManifestError, MixtureError, RepetitionWarning, SpecError
from dagster_llmdata.engine.datasets import dataset, dataset_files, dataset_partitions
from dagster_llmdata.mixture.manifest import read_manifest
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.mixture.reader import MixtureDataset
from dagster_llmdata.spec.mixture import MixtureSpec, load_mixture_spec

from ..mixture_helpers import MIXTURE_YAML, docs, mixture_project, write_stage


def _spec(root, **over):
    data = load_mixture_spec(root / "assets" / "mix.yaml").model_dump()
    data.update(over)
    return MixtureSpec.model_validate(data)


def test_dataset_reads_all_partitions_or_one(tmp_path):
    root = mixture_project(tmp_path)
    ds = dataset(root, "tiny/shards")
    assert isinstance(ds, pads.Dataset)
    assert ds.count_rows() == 100
    one = dataset(root, "tiny/shards", partition="web/b.jsonl")
    assert one.count_rows() == 20
    assert set(one.to_table(columns=["domain"]).column(0).to_pylist()) == {"news"}
    assert len(dataset_files(root, "tiny/shards")) == 4
    assert [p.data_version for p in dataset_partitions(root, "tiny/shards")] == ["dv-web/a.jsonl-80", "dv-web/b.jsonl-20"]


def test_dataset_errors_name_what_exists(tmp_path):
    root = mixture_project(tmp_path)
    with pytest.raises(SpecError, match="no pipeline 'nope'"):
        dataset(root, "nope/shards")
    with pytest.raises(SpecError, match="has no stage 'shardz'"):
        dataset(root, "tiny/shardz")
    with pytest.raises(SpecError, match="must be `<pipeline>/<stage>`"):
        dataset(root, "tiny")
    with pytest.raises(SpecError, match="no finished partition"):
        dataset(root, "tiny/shards", partition="web/zzz.jsonl")
    with pytest.raises(SpecError, match="no materialised data yet"):
        dataset(root, "tiny/raw")
    # a partition being written (no ledger record yet) is not read
    folder = write_stage(root, "shards", "web/c.jsonl", docs("late", 5))
    (folder / "_ledger.json").unlink()
    assert dataset(root, "tiny/shards").count_rows() == 100


def test_manifest_pins_files_domains_and_weights(tmp_path):
    root = mixture_project(tmp_path)
    m = plan(_spec(root), root)
    assert m.version and m.path.exists() and (m.path.parent / "latest.json").exists()
    assert set(m.domains) == {"code", "news", "prose"}
    assert m.weights == pytest.approx({"code": 1 / 3, "news": 1 / 3, "prose": 1 / 3})
    assert {d: i["docs"] for d, i in m.domains.items()} == {"code": 30, "news": 20, "prose": 50}
    assert m.domains["news"]["tokens"] == 800
    files = m.inputs[0]["files"]
    assert m.inputs[0]["kind"] == "parquet" and m.inputs[0]["dataset"] == "tiny/shards"
    assert len(files) == 4 and all(len(f["sha256"]) == 64 and f["rows"] > 0 and f["data_version"] for f in files)
    # the ranges cover every document of each domain exactly once
    for d, ranges in m.draw.items():
        assert sum(hi - lo for _, _, lo, hi in ranges) == m.domains[d]["docs"]
    # per-document probability favours short documents so that token shares match the weights
    assert m.domains["prose"]["probability"] > m.domains["code"]["probability"] > m.domains["news"]["probability"]
    again = read_manifest(m.path)
    assert again.version == m.version and again.stream == m.stream
    # same inputs + weights -> same version (content-addressed)
    assert plan(_spec(root), root).version == m.version


def test_manifest_edited_by_hand_is_refused(tmp_path):
    root = mixture_project(tmp_path)
    m = plan(_spec(root), root)
    data = json.loads(m.path.read_text())
    data["domains"]["code"]["weight"] = 0.9
    m.path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="does not match its version"):
        read_manifest(m.path)
    m.path.write_text("{not json")
    with pytest.raises(ManifestError, match="invalid JSON"):
        read_manifest(m.path)


def test_reader_follows_token_weights_deterministic_and_resumable(tmp_path):
    root = mixture_project(tmp_path)
    # ~100 epochs of the data: no epoch cap, to see the weights over a long stream
    m = plan(_spec(root, weights={"code": 0.5, "prose": 0.3, "news": 0.2}, token_budget=200_000, epoch_cap=None), root)
    rows = list(MixtureDataset(m, limit=6000))
    assert [r["_sample"] for r in rows] == list(range(6000))
    tokens = Counter()
    for r in rows:
        assert r["domain"] == r["_domain"]
        tokens[r["domain"]] += r["n_tokens"]
    total = sum(tokens.values())
    for d, w in {"code": 0.5, "prose": 0.3, "news": 0.2}.items():
        assert tokens[d] / total == pytest.approx(w, abs=0.03)
    ids = [r["id"] for r in rows]
    assert ids == [r["id"] for r in MixtureDataset(m.path, limit=6000)]  # same seed, same stream
    assert ids != [r["id"] for r in MixtureDataset(m, seed=8, limit=6000)]
    # resume at any offset (inside a block and across block boundaries) gives the same tail
    for start in (1, 4095, 4096, 5000):
        assert [r["id"] for r in MixtureDataset(m, start=start, limit=6000)] == ids[start:]
    # without replacement within an epoch: the first 20 draws of `news` are its 20 docs
    news = [r["id"] for r in rows if r["domain"] == "news"][:20]
    assert len(set(news)) == 20


def test_reader_stops_at_budget_and_digest_reproduces(tmp_path):
    root = mixture_project(tmp_path)
    m = plan(_spec(root), root)
    rows = list(MixtureDataset(m))
    assert len(rows) == m.n_samples
    assert sum(r["n_tokens"] for r in rows) == pytest.approx(m.token_budget, rel=0.25)
    from dagster_llmdata.mixture.manifest import stream_digest

    ds = MixtureDataset(m)
    assert stream_digest(ds.locators(0, m.stream["n"])) == m.stream["sha256"]


def test_reader_is_a_torch_iterable_dataset_with_workers(tmp_path):
    torch = pytest.importorskip("torch")
    root = mixture_project(tmp_path)
    m = plan(_spec(root), root)
    ds = MixtureDataset(m, columns=["id", "domain"], limit=300)
    assert isinstance(ds, torch.utils.data.IterableDataset)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = sorted(r["_sample"] for r in loader)
    assert got == list(range(300))  # two workers split the stream, nothing twice or missing


def test_changed_input_file_is_detected(tmp_path):
    root = mixture_project(tmp_path)
    m = plan(_spec(root), root)
    write_stage(root, "shards", "web/b.jsonl", docs("news", 25, 40), files=2)
    with pytest.raises(ManifestError, match="changed since the manifest"):
        MixtureDataset(m, verify_hashes=True)


def test_zero_weight_empty_domain_and_unnormalised_weights(tmp_path):
    root = mixture_project(tmp_path)
    m = plan(_spec(root, weights={"code": 2, "prose": 2, "news": 0}), root)
    assert m.weights == pytest.approx({"code": 0.5, "prose": 0.5, "news": 0.0})
    assert any("summed to 4" in w for w in m.warnings)
    assert "news" not in m.draw
    assert not any(r["domain"] == "news" for r in MixtureDataset(m, limit=500))
    # a listed domain with no documents: its weight moves to the others, with a warning
    m = plan(_spec(root, domains=["code", "prose", "news", "empty"], weights={"code": 1, "prose": 1, "news": 1, "empty": 1}), root)
    assert m.weights["empty"] == 0 and m.domains["empty"]["docs"] == 0
    assert sum(m.weights.values()) == pytest.approx(1)
    assert any("no documents" in w for w in m.warnings)
    with pytest.raises(MixtureError, match="no domain with both weight and documents"):
        plan(_spec(root, domains=["empty"], weights={"empty": 1}), root)
    with pytest.raises(ValueError, match="finite and >= 0"):  # in a spec: a validation error
        _spec(root, weights={"code": -1, "prose": 1})
    with pytest.raises(MixtureError, match="finite and >= 0"):  # from feedback: refused, nothing written
        plan(_spec(root), root, weights={"code": float("nan"), "prose": 1})


def test_budget_larger_than_data_records_repetition(tmp_path):
    root = mixture_project(tmp_path)
    with pytest.warns(RepetitionWarning, match="exceeds the data"):
        m = plan(_spec(root, token_budget=10_000, epoch_cap=None), root)
    assert set(m.repetition) == {"code", "news", "prose"}
    assert m.domains["prose"]["epochs"] == pytest.approx(10_000 / 3 / 500)
    rows = list(MixtureDataset(m))
    per = Counter(r["id"] for r in rows if r["domain"] == "prose")
    assert len(per) == 50 and max(per.values()) - min(per.values()) <= 1  # epochs, not random repeats


def test_epoch_cap_moves_the_budget_to_domains_with_data_left(tmp_path):
    # news: 800 tokens of data, code 600, prose 500; 3,600 tokens at equal weights would read
    # prose 2.4 times: with a cap of 2 epochs prose takes 1,000, its excess caps code too (1,200),
    # and news takes the rest (1,400: 1.75 epochs)
    root = mixture_project(tmp_path)
    with pytest.warns(RepetitionWarning):
        m = plan(_spec(root, token_budget=3_600, epoch_cap=2), root)
    assert m.epoch_cap == 2
    assert m.weights["prose"] == pytest.approx(1000 / 3600) and m.weights["code"] == pytest.approx(1200 / 3600)
    assert m.weights["news"] == pytest.approx(1400 / 3600) and m.domains["news"]["epochs"] == pytest.approx(1.75)
    assert m.domains["prose"]["weight_asked"] == pytest.approx(1 / 3)
    assert any("capped at 2 epochs" in w for w in m.warnings)
    # every domain capped: the stream ends short of the budget, and says so
    m = plan(_spec(root, token_budget=100_000, epoch_cap=2), root)
    assert any("ends" in w and "short of the budget" in w for w in m.warnings)
    rows = list(MixtureDataset(m, limit=0))
    per = Counter(r["id"] for r in rows)
    assert len(rows) == 2 * 100 and set(per.values()) == {2}  # each document exactly twice, then the end
    assert len(rows) <= m.n_samples + 5


def test_no_data_is_a_clear_error(tmp_path):
    root = mixture_project(tmp_path, MIXTURE_YAML.replace("tiny/shards", "tiny/raw"))
    with pytest.raises(MixtureError, match="hold no documents"):
        plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)


def test_temperature_weights_from_tokens(tmp_path):
    root = mixture_project(tmp_path, MIXTURE_YAML + "algorithm: {name: temperature, params: {temperature: 1.0}}\n")
    m = plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)
    assert m.weights == pytest.approx({"code": 600 / 1900, "news": 800 / 1900, "prose": 500 / 1900})


def test_doc_weights_steer_the_reader(tmp_path):
    root = mixture_project(tmp_path)
    weights = {f"prose-{i}": (0.0 if i < 25 else 1.0) for i in range(50)}
    m = plan(_spec(root, weights={"prose": 1}), root, doc_weights=weights)
    assert m.doc_weights["rows"] == 50
    seen = Counter(r["id"] for r in MixtureDataset(m, limit=2000))
    assert not any(seen[f"prose-{i}"] for i in range(25))
    assert all(seen[f"prose-{i}"] for i in range(25, 50))


def test_bad_spec_reports_file_and_line(tmp_path):
    root = mixture_project(tmp_path, MIXTURE_YAML.replace("token_budget: 1500", "token_budget: -5"))
    with pytest.raises(SpecError, match=r"mix.yaml:4: token_budget"):
        load_mixture_spec(root / "assets" / "mix.yaml")
