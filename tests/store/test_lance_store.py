"""The LanceDB sample store: a pipeline's lance_table stage writes one tagged version per
materialisation with its diff in the asset metadata; search by meaning, words or both from the
CLI and Python; concurrent writers lose nothing; bad input gets a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import materialise_partition, one_source_project, write_jsonl
from dagster_llmdata.errors import StoreError
from dagster_llmdata import apply_operator
from dagster_llmdata.store import SampleStore, search_samples
from dagster_llmdata.store.lance_store import sample_schema

BIN = Path(sys.executable).parent
STAGES = [{"name": "semantic", "op": "semantic_dedup"}, {"name": "store", "op": "lance_table"}]


def _rows(prose: list[str]) -> list[dict]:
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:10])]
    rows.append({"id": "copy", "text": prose[2].replace("\n\n", " ")})  # a near copy of d2
    return rows


def test_pipeline_writes_tagged_versions_with_diffs_and_search_finds_them(tmp_path, prose, instance):
    root = one_source_project(tmp_path, "lake", STAGES, _rows(prose))
    result, meta = materialise_partition(root, instance)
    assert result.success
    store_meta = meta["store"]
    run_id = result.run_id
    version = store_meta["lance/version"].value
    assert store_meta["lance/tag"].value == f"run-{run_id}"
    assert store_meta["lance/rows_added"].value == 10 and store_meta["lance/rows_removed"].value == 0
    assert len(store_meta["lance/diff_sample"].value.records) == 5
    assert meta["semantic"]["semantic_duplicates"].value == 1  # the copy, dropped before the store
    uri = store_meta["lance/uri"].value
    assert uri.startswith(str(root.resolve())) and uri.endswith("/lake/lance")  # beside the pipeline's datasets
    store = SampleStore(uri, "store")
    assert store.tags()[f"run-{run_id}"] == version

    # the upstream changes: two docs gone, one new; the next version says so
    rows = _rows(prose)[2:] + [{"id": "new", "text": prose[20]}]
    write_jsonl(root / "landing" / "b.jsonl", rows)
    result2, meta2 = materialise_partition(root, instance)
    m = meta2["store"]
    assert m["lance/previous_version"].value >= version and m["lance/version"].value > version
    assert (m["lance/rows_added"].value, m["lance/rows_removed"].value) == (1, 2)
    changes = {(r.data["change"], r.data["id"]) for r in m["lance/diff_sample"].value.records}
    assert changes == {("added", "new"), ("removed", "d0"), ("removed", "d1")}
    assert store.table(version).count_rows() == 10 and store.table().count_rows() == 9  # the old version is still readable

    # search from the project folder: --table pipeline/stage finds the table; lineage is printed
    query = " ".join(prose[5].split()[:25])
    proc = subprocess.run([str(BIN / "llmdata"), "search", query, "--table", "lake/store", "-n", "3"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert " d5 " in first
    assert "lineage: lake/raw -> lake/semantic -> lake/store" in proc.stdout
    for mode in ("--fts", "--hybrid"):
        proc = subprocess.run([str(BIN / "llmdata"), "search", query, "--table", "lake/store", mode, "-n", "2", "--json",
                               "--where", "id != 'd9'"], cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        hits = json.loads(proc.stdout)
        assert hits[0]["id"] == "d5" and hits[0]["run_id"] == result2.run_id and hits[0]["partition"] == "web/b.jsonl"
    # the same from Python, at the first version (d0 was still there)
    hits = search_samples(prose[0], uri, "store", mode="vector", k=1, version=version)
    assert hits[0].id == "d0" and hits[0].score > 0.9


def test_standalone_lance_table_and_clear_errors(tmp_path, prose):
    import pyarrow.parquet as pq

    src = tmp_path / "docs.parquet"  # Parquet goes in as it is (JSONL's ingest would make ids unique)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(6)] + ["d1"], "text": prose[:6] + [prose[7]]}), src)
    uri = str(tmp_path / "lance")
    outcome = apply_operator("lance_table", src, tmp_path / "out.parquet", {"uri": uri, "table": "t"})
    assert outcome.ledger.n_out == 6 and outcome.ledger.rejected == {"duplicate_id": 1}
    assert outcome.metadata["lance/rows_total"] == 6 and outcome.metadata["lance/tag"].startswith("run-local-")

    with pytest.raises(StoreError, match="bad --where filter"):
        search_samples("licence", uri, "t", where="id = ")
    with pytest.raises(StoreError, match="bad --where filter"):
        search_samples("licence", uri, "t", where="no_such_column > 1")
    with pytest.raises(StoreError, match="query vector has 3 dimensions; the table's vectors have 384"):
        search_samples(np.ones(3), uri, "t")
    with pytest.raises(StoreError, match="no LanceDB table 'nope'.*tables there: t"):
        search_samples("x", uri, "nope")
    store = SampleStore(uri, "t")
    small = sample_schema(8).empty_table()
    with pytest.raises(StoreError, match="holds 384-dimensional vectors; these are 8-dimensional"):
        store.write_partition(small, "p", "r")
    SampleStore(uri, "empty")._create_or_open(sample_schema(384))
    with pytest.raises(StoreError, match="is empty"):
        search_samples("x", uri, "empty")
    proc = subprocess.run([str(BIN / "llmdata"), "search", "x", "--table", "t", "--uri", uri, "--where", "id ="],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "bad --where filter" in proc.stderr and "Traceback" not in proc.stderr


WRITER = textwrap.dedent(
    """\
    import sys, numpy as np, pyarrow as pa
    from dagster_llmdata.store.lance_store import SampleStore, sample_schema
    uri, partition, n, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    schema = sample_schema(4)
    rng = np.random.default_rng(abs(hash(partition)) % 2**32)
    ids = [f"{partition}-{i}" for i in range(n)]
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(id=pa.array(ids), text=pa.array([f"text {i}" for i in ids]), partition=pa.array([partition] * n))
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(4 * n, dtype=np.float32)), 4)
    table = pa.Table.from_pydict(cols, schema=schema)
    import os, time
    while not os.path.exists(barrier):  # start together
        time.sleep(0.01)
    for round in range(3):
        result = SampleStore(uri, "shared").write_partition(table, partition, f"{partition}-r{round}")
        print(result.version, result.attempts, flush=True)
    """
)


def test_two_processes_writing_one_table_lose_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    uri, barrier = str(tmp_path / "lance"), tmp_path / "go"
    # first writers race to create the table too
    procs = [subprocess.Popen([sys.executable, str(script), uri, p, "300", str(barrier)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in ("a", "b", "a")]
    barrier.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    store = SampleStore(uri, "shared")
    tbl = store.table()
    assert tbl.count_rows() == 600
    ids = tbl.to_arrow().column("id").to_pylist()
    assert len(set(ids)) == 600 and sorted(ids) == sorted([f"a-{i}" for i in range(300)] + [f"b-{i}" for i in range(300)])
    versions = [int(line.split()[0]) for out, _ in outs for line in out.splitlines()]
    assert len(versions) == 9 and len(set(versions)) == 9  # every commit its own version, none lost
    tags = store.tags()
    assert {t for t in tags if t.startswith("run-b-r")} == {"run-b-r0", "run-b-r1", "run-b-r2"}
    for version in versions:  # every committed version is whole: each partition there has all its rows
        counts = pa.table(store.table(version).to_arrow().select(["partition"])).group_by("partition").aggregate([([], "count_all")])
        assert set(counts.column("count_all").to_pylist()) <= {300}


def test_cleanup_keeps_tagged_versions(tmp_path, prose):
    from datetime import timedelta

    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:4])])
    uri = str(tmp_path / "lance")
    first = apply_operator("lance_table", src, tmp_path / "o.parquet", {"uri": uri, "table": "t"}).metadata["lance/version"]
    write_jsonl(src, [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[4:6])])
    apply_operator("lance_table", src, tmp_path / "o.parquet", {"uri": uri, "table": "t"})
    store = SampleStore(uri, "t")
    with pytest.raises(StoreError, match="pinned by a manifest but not tagged"):
        store.cleanup(timedelta(0), protect={1})
    store.cleanup(timedelta(0), protect={first})
    kept = {v["version"] for v in store.versions()}
    assert first in kept and 1 not in kept
    assert store.table(first).count_rows() == 4
