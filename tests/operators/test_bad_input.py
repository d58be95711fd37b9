"""Bad input is quarantined with a reason or refused with a clear message; nothing disappears."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from dagster_llmdata import Operator, apply_operator, register_operator
from dagster_llmdata.operators import REGISTRY


def _quarantine(out):
    return pq.read_table(out.with_name(out.stem + ".quarantine.parquet")).to_pylist()


def test_broken_jsonl_lines_are_quarantined_with_reasons(tmp_path, prose):
    src = tmp_path / "in.jsonl"
    with open(src, "wb") as fh:
        fh.write(json.dumps({"id": "good", "text": prose[0]}).encode() + b"\n")
        fh.write(b'{"id": "cut", "text": "half a rec\n')
        fh.write(b'{"id": "latin1", "text": "caf\xe9"}\n')
        fh.write(b'{"id": "notext", "body": "x"}\n')
        fh.write(b'{"id": "num", "text": 42}\n')
        fh.write(b'{"id": "blank", "text": " \\n\\t "}\n')
        fh.write(b"\n\n")  # blank lines are not records
        fh.write(b'"just a string"\n')
        fh.write(b'{"id": "nul", "text": "nul \\u0000 inside is fine"}\n')
        fh.write(b"[" * 100000 + b"\n")  # hostile nesting
    out = tmp_path / "out.parquet"
    outcome = apply_operator("ingest", src, out)
    assert outcome.ledger.balanced and outcome.ledger.n_in == 9
    assert outcome.ledger.n_out == 2
    assert outcome.ledger.quarantined == {
        "malformed_json": 2, "undecodable_bytes": 1, "missing_text_field": 1, "text_not_a_string": 1,
        "empty_text": 1, "not_an_object": 1,
    }
    by_reason = {r["reason"]: r for r in _quarantine(out)}
    assert "caf" in by_reason["undecodable_bytes"]["text"]  # the raw line is kept for inspection
    assert json.loads(by_reason["missing_text_field"]["meta"])["position"] == "4"


def test_huge_document_is_quarantined_not_loaded_downstream(tmp_path, prose):
    src = tmp_path / "in.jsonl"
    big = ("word " * 10_500_000)  # ~52 MB
    with open(src, "w") as fh:
        fh.write(json.dumps({"id": "big", "text": big}) + "\n")
        fh.write(json.dumps({"id": "ok", "text": prose[0]}) + "\n")
    out = tmp_path / "out.parquet"
    outcome = apply_operator("ingest", src, out, {"max_doc_bytes": 10_000_000})
    assert outcome.ledger.quarantined == {"too_large": 1} and outcome.ledger.n_out == 1
    (row,) = _quarantine(out)
    assert json.loads(row["meta"])["original_bytes"] == len(big)
    assert len(row["text"]) <= 4096


def test_empty_file_and_truncated_gzip(tmp_path, prose):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    outcome = apply_operator("ingest", empty, tmp_path / "e.parquet")
    assert (outcome.ledger.n_in, outcome.ledger.n_out) == (0, 0) and outcome.ledger.balanced
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0

    data = gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in prose[:20]).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    outcome = apply_operator("ingest", cut, tmp_path / "c.parquet")
    assert outcome.ledger.balanced and outcome.ledger.quarantined == {"unreadable_file": 1}
    assert 0 < outcome.ledger.n_out < 20


def test_missing_path_and_unknown_operator_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        apply_operator("ingest", tmp_path / "nope.jsonl", tmp_path / "o.parquet")
    with pytest.raises(KeyError, match="unknown operator 'nope'"):
        apply_operator("nope", tmp_path / "x.jsonl", tmp_path / "o.parquet")


def test_cli_reports_bad_arguments_without_traceback(tmp_path):
    cli = [sys.executable, "-m", "dagster_llmdata.cli"]
    res = subprocess.run(cli + ["op", "ingest", "--in", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.parquet")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(cli + ["op", "gopher_quality", "--in", str(tmp_path), "--out", "o.parquet", "--param", "bogus=1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "bogus" in res.stderr and "Traceback" not in res.stderr


class ExplodesOnMarker(Operator):
    name = "explodes_on_marker_test"
    description = "test operator: raises on docs containing BOOM"

    def doc_fn(self):
        def fn(doc):
            if "BOOM" in doc.text:
                raise RuntimeError("operator bug triggered by this doc")
            return True

        return fn


def test_operator_error_quarantines_the_doc_not_the_stage(tmp_path, prose):
    register_operator(ExplodesOnMarker)
    try:
        src = tmp_path / "in.jsonl"
        src.write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate([prose[0], "BOOM " + prose[1], prose[2]])))
        out = tmp_path / "out.parquet"
        outcome = apply_operator("explodes_on_marker_test", src, out)
        assert outcome.ledger.n_out == 2 and outcome.ledger.quarantined == {"error:RuntimeError": 1}
        (row,) = _quarantine(out)
        assert row["id"] == "1" and "operator bug" in json.loads(row["meta"])["error"]
    finally:
        REGISTRY.pop(ExplodesOnMarker.name)
