"""Each operator on real text, on its own (no Dagster), with its ledger balanced."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagster_llmdata import apply_operator
from dagster_llmdata.operators import REGISTRY
from tests.conftest import write_jsonl


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _rejected(out: Path) -> list[dict]:
    return _rows(out.with_suffix("").with_name(out.stem + ".rejected.parquet"))


def test_registry_has_the_named_operators():
    expected = {
        "ingest", "extract_html", "normalize", "language_id", "gopher_quality", "gopher_repetition", "c4_quality",
        "fineweb_quality", "exact_dedup", "minhash_dedup", "pii_redact", "export_shards",
    }
    assert expected <= set(REGISTRY)
    for cls in REGISTRY.values():
        described = cls.describe()
        assert described["description"] and "properties" in described["params"]


def test_ingest_jsonl_gz_keeps_fields_and_makes_ids(tmp_path, prose):
    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        fh.write(json.dumps({"text": prose[0], "url": "http://a"}) + "\n")
        fh.write(json.dumps({"id": 7, "text": prose[1], "domain": "docs"}) + "\n")
    out = tmp_path / "out.parquet"
    outcome = apply_operator("ingest", src, out)
    rows = _rows(out)
    assert outcome.ledger.balanced and outcome.ledger.n_out == 2
    assert rows[1]["id"] == "7" and rows[1]["domain"] == "docs"
    assert len(rows[0]["id"]) == 16  # hash of source, file, position
    assert json.loads(rows[0]["meta"])["url"] == "http://a"


def test_ingest_parquet_csv_and_text_folder(tmp_path, prose):
    pq.write_table(pa.table({"text": prose[:3], "id": ["a", "b", "c"]}), tmp_path / "in.parquet")
    assert apply_operator("ingest", tmp_path / "in.parquet", tmp_path / "p.parquet").ledger.n_out == 3

    csv_path = tmp_path / "in.csv"
    csv_path.write_text('id,text\n1,"' + prose[0].replace('"', '""') + '"\n2,plain\n')
    outcome = apply_operator("ingest", csv_path, tmp_path / "c.parquet")
    assert outcome.ledger.balanced
    assert [r["id"] for r in _rows(tmp_path / "c.parquet")] == ["1", "2"]

    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.md").write_text("# Title\n\n" + prose[2])
    (folder / "b.html").write_text(f"<html><body><p>{prose[3]}</p></body></html>")
    (folder / "c.bin").write_bytes(b"\x00\x01")
    outcome = apply_operator("ingest", folder, tmp_path / "t.parquet")
    assert outcome.ledger.n_out == 2
    assert outcome.ledger.quarantined == {"unsupported_file_type": 1}


def test_ingest_warc(tmp_path, prose):
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, text in enumerate(prose[:2]):
            body = f"<html><body><article><p>{text}</p></article></body></html>".encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.0")
            writer.write_record(writer.create_warc_record(f"http://example.com/{i}", "response", payload=BytesIO(body), http_headers=headers))
    out = tmp_path / "w.parquet"
    outcome = apply_operator("ingest", path, out)
    assert outcome.ledger.n_out == 2
    rows = _rows(out)
    assert "<html>" in rows[0]["text"] and "example.com" in rows[0]["meta"]
    # and the HTML becomes main text
    outcome = apply_operator("extract_html", out, tmp_path / "x.parquet")
    texts = [r["text"] for r in _rows(tmp_path / "x.parquet")]
    assert outcome.ledger.n_out == 2 and all("<" not in t[:50] for t in texts)
    assert prose[0].split()[5] in texts[0]


def test_extract_html_on_pydoc_html(tmp_path):
    import pydoc
    import textwrap as module

    page = pydoc.html.page("textwrap", pydoc.html.document(module, "textwrap"))
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "h", "text": page}, {"id": "plain", "text": "Not HTML at all."},
                                               {"id": "empty", "text": "<html><body><script>x()</script></body></html>"}])
    out = tmp_path / "out.parquet"
    outcome = apply_operator("extract_html", src, out)
    kept = {r["id"]: r["text"] for r in _rows(out)}
    assert "wrap" in kept["h"] and "<a href" not in kept["h"]
    assert kept["plain"] == "Not HTML at all."
    assert outcome.ledger.rejected == {"no_main_text": 1}


def test_extract_html_timeout_inside_a_dagster_run_quarantines_quietly(tmp_path, capfd):
    """The sandbox child a timeout terminates dies at once: Dagster's step-interrupt handler, which
    a forked child inherits, must not run in it (it raised there and unwound the parent's cleanup)."""
    import dagster as dg

    from tests.conftest import materialise_partition, one_source_project

    page = "<html><body>" + "".join(f"<p>Paragraph {i} of an article body with enough words.</p>" for i in range(400)) + "</body></html>"
    root = one_source_project(tmp_path / "p", "sbx", [{"name": "extracted", "op": "extract_html", "params": {"timeout": 0.01}},
                                                       {"name": "normalized", "op": "normalize"}],
                              [{"id": f"h{i}", "text": page} for i in range(3)])
    with dg.instance_for_test() as instance:
        result, md = materialise_partition(root, instance)
    assert result.success
    assert md["extracted"]["quarantined/error:TimeoutError"].value == 3 and md["extracted"]["n_out"].value == 0
    assert "DagsterExecutionInterruptedError" not in capfd.readouterr().err


def test_normalize_removes_ansi_control_and_mojibake(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "text": "\x1b[31mred\x1b[0m   text\x07 here\r\n\n\n\nnext"},
        {"id": "b", "text": "cafÃ© crÃ¨me"},
        {"id": "c", "text": "\x1b[0m \x00 \t"},
    ])
    out = tmp_path / "out.parquet"
    outcome = apply_operator("normalize", src, out)
    kept = {r["id"]: r["text"] for r in _rows(out)}
    assert kept["a"] == "red text here\n\nnext"
    assert kept["b"] == "café crème"
    assert outcome.ledger.rejected == {"empty_after_normalize": 1}
    assert outcome.metadata["docs_changed"] == 3


def test_language_id_writes_lang_and_filters(tmp_path, prose):
    german = ("Die Katze sitzt auf dem Tisch und schaut aus dem Fenster. Draußen regnet es seit dem Morgen, "
              "und niemand möchte heute spazieren gehen.")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "en", "text": prose[0]}, {"id": "de", "text": german}])
    out = tmp_path / "out.parquet"
    outcome = apply_operator("language_id", src, out, {"languages": ["en"], "min_score": 0.5})
    kept = _rows(out)
    assert [r["id"] for r in kept] == ["en"] and kept[0]["lang"] == "en" and kept[0]["lang_score"] > 0.5
    rejected = _rejected(out)
    assert rejected[0]["lang"] == "de" and rejected[0]["reason"] == "language_not_kept" and rejected[0]["text"] == german
    assert outcome.metadata["languages"] == {"en": 1, "de": 1}


@pytest.mark.parametrize("op", ["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"])
def test_quality_filters_keep_prose_and_drop_junk(tmp_path, prose, op):
    junk = {
        "menu": " | ".join(["Home", "About", "Contact", "Login"] * 3),
        "repeated": "\n".join(["Click here to subscribe to our newsletter!"] * 30),
        "symbols": "#### $$$$ %%%% ^^^^ &&&& **** " * 20,
    }
    rows = [{"id": f"p{i}", "text": t} for i, t in enumerate(prose[:20])] + [{"id": k, "text": v} for k, v in junk.items()]
    out = tmp_path / "out.parquet"
    outcome = apply_operator(op, write_jsonl(tmp_path / "in.jsonl", rows), out)
    assert outcome.ledger.balanced
    rejected = {r["id"]: r["reason"] for r in _rejected(out)}
    assert rejected, f"{op} rejected nothing"
    assert all(reason for reason in rejected.values())
    assert {"menu", "repeated", "symbols"} & set(rejected), rejected
    assert outcome.ledger.n_out >= 1


def test_filter_params_are_exposed(tmp_path, prose):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "p", "text": prose[0]}])
    strict = apply_operator("gopher_quality", src, tmp_path / "s.parquet", {"min_doc_words": 100000})
    assert strict.ledger.rejected == {"gopher_short_doc": 1}


def test_exact_dedup_records_kept_id(tmp_path, prose):
    rows = [{"id": "a", "text": prose[0]}, {"id": "b", "text": prose[1]}, {"id": "c", "text": "  " + prose[0] + "\n"}]
    out = tmp_path / "out.parquet"
    outcome = apply_operator("exact_dedup", write_jsonl(tmp_path / "in.jsonl", rows), out)
    assert [r["id"] for r in _rows(out)] == ["a", "b"]
    (dup,) = _rejected(out)
    assert (dup["id"], dup["reason"], dup["kept_id"], dup["stage"]) == ("c", "exact_duplicate", "a", "exact_dedup")
    assert outcome.ledger.balanced


def test_minhash_dedup_catches_near_duplicates(tmp_path, prose):
    near = prose[2].replace(" the ", " THE ", 2) + " An extra closing remark."
    rows = [{"id": f"p{i}", "text": t} for i, t in enumerate(prose[:6])] + [{"id": "near", "text": near}]
    out = tmp_path / "out.parquet"
    outcome = apply_operator("minhash_dedup", write_jsonl(tmp_path / "in.jsonl", rows), out)
    rejected = _rejected(out)
    assert [(r["id"], r["reason"], r["kept_id"]) for r in rejected] == [("near", "near_duplicate", "p2")]
    assert outcome.ledger.n_out == 6 and outcome.ledger.balanced
    assert rejected[0]["text"] == near


def test_pii_redact_counts_each_kind(tmp_path):
    text = ("Mail ops@example.com or j.smith@mail.example.co.uk; server 8.8.8.8 and 192.168.0.1; "
            "phone (212) 555-0187 or +44 20 7946 0958. Version 3.11.7, 2024-01-01 and 14.02.28.02 stay.")
    out = tmp_path / "out.parquet"
    outcome = apply_operator("pii_redact", write_jsonl(tmp_path / "in.jsonl", [{"id": "x", "text": text}]), out)
    (row,) = _rows(out)
    assert "example.com" not in row["text"] and "8.8.8.8" not in row["text"]
    assert "192.168.0.1" in row["text"] and "3.11.7" in row["text"] and "2024-01-01" in row["text"]
    assert "14.02.28.02" in row["text"] and outcome.ledger.quarantined == {}  # a dotted date, not an address (was a crash)
    assert outcome.metadata["pii_email"] == 2 and outcome.metadata["pii_ip"] == 1 and outcome.metadata["pii_phone"] == 2


def test_export_shards_sizes_and_tokens(tmp_path, prose):
    rows = [{"id": f"p{i}", "text": t, "domain": "docs" if i % 2 else "ref"} for i, t in enumerate(prose[:20])]
    out = tmp_path / "out.parquet"
    target = sum(len(t.encode()) for t in prose[:20]) // 4
    outcome = apply_operator("export_shards", write_jsonl(tmp_path / "in.jsonl", rows), out, {"target_shard_bytes": target})
    kept = _rows(out)
    assert outcome.metadata["shards"] >= 4
    assert all(r["n_tokens"] > 10 for r in kept)
    assert outcome.metadata["total_tokens"] == sum(r["n_tokens"] for r in kept)
    assert set(outcome.metadata["tokens_by_domain"]) == {"docs", "ref"}


def test_operator_params_are_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        REGISTRY["gopher_quality"]({"min_doc_word": 3})
