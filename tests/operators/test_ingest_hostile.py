"""Hostile raw input: every record that was there is kept or quarantined with a reason, and n_in
counts what was there, not what could be read."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import textwrap
import zipfile
from collections import Counter
from io import BytesIO, StringIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from dagster_llmdata import apply_operator
from dagster_llmdata.operators.ingest import IngestParams


def ingest(src: Path, tmp: Path, params: dict | None = None):
    """Run ingest standalone; returns (outcome, kept rows, quarantined rows)."""
    out = tmp / f"out-{src.name}.parquet"
    outcome = apply_operator("ingest", src, out, params)
    qpath = out.with_name(out.stem + ".quarantine.parquet")
    quarantined = pq.read_table(qpath).to_pylist() if qpath.exists() else []
    assert outcome.ledger.balanced
    assert all(r["reason"] for r in quarantined)
    return outcome, pq.read_table(out).to_pylist(), quarantined


def meta(row: dict) -> dict:
    return json.loads(row["meta"])


def reasons(rows: list[dict]) -> Counter:
    return Counter(r["reason"] for r in rows)


# -- 1. folders: every regular file is accounted for ------------------------------------------


def test_folder_accounts_for_every_file(tmp_path, prose):
    folder = tmp_path / "drop"
    (folder / "sub").mkdir(parents=True)
    (folder / "docs.jsonl").write_text("".join(json.dumps({"id": f"j{i}", "text": t}) + "\n" for i, t in enumerate(prose[:3])))
    with open(folder / "sub" / "table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "lang_hint"])
        w.writerows([["c1", prose[3], "en"], ["c2", prose[4], "en"]])
    (folder / "readme.md").write_text("# Notes\n\n" + prose[5])
    (folder / "sub" / "page.html").write_text(f"<html><body><p>{prose[6]}</p></body></html>")
    (folder / "report.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    (folder / "sub" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "dump.jsonl.bz2").write_bytes(b"BZh91AY&SY" + bytes(32))
    with zipfile.ZipFile(folder / "bundle.zip", "w") as zf:
        zf.writestr("inner.txt", prose[7])
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")

    outcome, kept, quarantined = ingest(folder, tmp_path)
    assert outcome.ledger.n_in == 3 + 2 + 1 + 1 + 4
    assert outcome.ledger.n_out == 7
    assert outcome.ledger.quarantined == {"unsupported_file_type": 4}
    assert sorted(meta(r)["path"] for r in quarantined) == ["bundle.zip", "dump.jsonl.bz2", "report.pdf", "sub/logo.png"]
    assert outcome.metadata["skipped_hidden_files"] == 2
    by_file = Counter(meta(r)["file"] for r in kept)
    assert by_file == {"docs.jsonl": 3, "sub/table.csv": 2, "readme.md": 1, "sub/page.html": 1}
    formats = {meta(r)["file"]: meta(r).get("format") for r in kept}
    assert formats["readme.md"] == "markdown" and formats["sub/page.html"] == "html"


def test_single_file_of_unknown_type_is_quarantined_not_fatal(tmp_path):
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    outcome, kept, quarantined = ingest(pdf, tmp_path)
    assert (outcome.ledger.n_in, outcome.ledger.n_out) == (1, 0)
    (row,) = quarantined
    assert row["reason"] == "unsupported_file_type" and meta(row)["path"] == "scan.pdf"


# -- 2. readers count what was there -----------------------------------------------------------


def _parquet_with_groups(path: Path, prose, groups: int = 3, rows: int = 50) -> None:
    n = groups * rows
    table = pa.table({"id": [f"p{i}" for i in range(n)], "text": [prose[i % len(prose)] + f" ({i})" for i in range(n)]})
    pq.write_table(table, path, row_group_size=rows, compression="zstd")


def test_parquet_damaged_row_group_is_counted_row_by_row(tmp_path, prose):
    src = tmp_path / "shard.parquet"
    _parquet_with_groups(src, prose)
    chunk = pq.ParquetFile(src).metadata.row_group(1).column(1)  # the text column of the middle group
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(src.read_bytes())
    for k in range(start + 30, start + chunk.total_compressed_size - 30):
        data[k] ^= 0x5A
    src.write_bytes(bytes(data))

    outcome, kept, quarantined = ingest(src, tmp_path)
    assert outcome.ledger.n_in == 150 and outcome.ledger.n_out == 100
    assert outcome.ledger.quarantined == {"unreadable_row_group": 50}
    assert {meta(r)["row_group"] for r in quarantined} == {1}
    assert [r["id"] for r in kept] == [f"p{i}" for i in range(50)] + [f"p{i}" for i in range(100, 150)]
    assert len({r["id"] for r in quarantined}) == 50  # one row, one id per lost record


def test_parquet_with_broken_footer_is_one_unreadable_file(tmp_path, prose):
    src = tmp_path / "cut.parquet"
    _parquet_with_groups(src, prose)
    src.write_bytes(src.read_bytes()[:-40])
    outcome, kept, quarantined = ingest(src, tmp_path)
    assert (outcome.ledger.n_in, outcome.ledger.n_out) == (1, 0)
    assert outcome.ledger.quarantined == {"unreadable_file": 1}


def _zst(path: Path, data: bytes) -> bytes:
    with pa.CompressedOutputStream(str(path), "zstd") as out:
        out.write(data)
    return path.read_bytes()


def test_jsonl_zst_is_decompressed_and_truncation_recorded(tmp_path, prose):
    lines = "".join(json.dumps({"id": f"z{i}", "text": prose[i % len(prose)]}) + "\n" for i in range(2000)).encode()
    whole = tmp_path / "part.jsonl.zst"
    raw = _zst(whole, lines)
    outcome, kept, _ = ingest(whole, tmp_path)
    assert (outcome.ledger.n_in, outcome.ledger.n_out) == (2000, 2000)
    assert kept[1999]["id"] == "z1999" and kept[0]["text"] == prose[0]

    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(raw[: len(raw) // 2])
    outcome, kept, quarantined = ingest(cut, tmp_path)
    assert outcome.ledger.quarantined == {"unreadable_file": 1}
    assert 500 < outcome.ledger.n_out < 1000 and outcome.ledger.n_in == outcome.ledger.n_out + 1
    assert [r["id"] for r in kept] == [f"z{i}" for i in range(len(kept))]  # the head is kept in order
    assert "truncated" in quarantined[0]["text"].lower()


def _warc_response(writer, url: str, body: bytes, content_type: str | None, status: str = "200 OK"):
    from warcio.statusandheaders import StatusAndHeaders

    headers = [("Content-Type", content_type)] if content_type else []
    http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    return writer.create_warc_record(url, "response", payload=BytesIO(body), http_headers=http)


def _crawl(path: Path, prose, gzip_records: bool = True) -> None:
    """A small crawl with what real crawls hold: HTML in several charsets, plain text, a PDF, an
    image, error pages, a redirect and the request records that go with responses."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=gzip_records)
        w.write_record(w.create_warcinfo_record("crawl.warc", {"software": "test-crawler/1.0"}))
        pages = [
            ("http://news.example/a", f"<html><body><p>{prose[0]}</p></body></html>".encode(), "text/html; charset=utf-8"),
            ("http://news.example/b", f"<html><body><p>Café crème — {prose[1]}</p></body></html>".encode("latin-1", "replace"),
             "text/html; charset=ISO-8859-1"),
            ("http://news.example/c", f"<html><body><p>Ünïcödé {prose[2]}</p></body></html>".encode(), "text/html"),
            ("http://news.example/robots.txt", prose[3].encode(), "text/plain"),
            ("http://news.example/d.pdf", b"%PDF-1.5\n" + bytes(200), "application/pdf"),
            ("http://news.example/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"),
            ("http://news.example/broken", b"\xff\xfe\x00\xd8" * 10, "text/html; charset=utf-8"),
        ]
        for url, body, ctype in pages:
            req = StatusAndHeaders(f"GET {url} HTTP/1.1", [("Host", "news.example")], is_http_request=True)
            w.write_record(w.create_warc_record(url, "request", http_headers=req))
            w.write_record(_warc_response(w, url, body, ctype))
        w.write_record(_warc_response(w, "http://news.example/gone", b"<html><body>Not Found</body></html>", "text/html", "404 Not Found"))
        w.write_record(_warc_response(w, "http://news.example/old", b"", "text/html", "301 Moved Permanently"))


def test_warc_responses_are_all_counted_by_kind(tmp_path, prose):
    path = tmp_path / "crawl.warc.gz"
    _crawl(path, prose)
    outcome, kept, quarantined = ingest(path, tmp_path)
    assert outcome.ledger.n_in == 9 and outcome.ledger.n_out == 4
    assert outcome.ledger.quarantined == {"unsupported_content_type": 2, "http_error": 2, "undecodable_bytes": 1}
    assert outcome.metadata["warc_non_response_records"] == 8  # warcinfo + 7 requests
    by_url = {meta(r)["url"]: r for r in kept}
    assert "Café crème" in by_url["http://news.example/b"]["text"]  # the header's charset
    assert "Ünïcödé" in by_url["http://news.example/c"]["text"]  # no charset: UTF-8
    assert meta(by_url["http://news.example/robots.txt"])["format"] == "text"
    html_meta = meta(by_url["http://news.example/a"])
    assert html_meta["format"] == "html" and html_meta["warc_id"].startswith("<urn:uuid:") and html_meta["date"]
    q = {meta(r)["url"]: r for r in quarantined}
    assert meta(q["http://news.example/d.pdf"])["content_type"] == "application/pdf"
    assert meta(q["http://news.example/logo.png"])["content_type"] == "image/png"
    assert meta(q["http://news.example/gone"])["status"] == 404 and q["http://news.example/gone"]["reason"] == "http_error"
    assert meta(q["http://news.example/old"])["status"] == 301
    assert q["http://news.example/broken"]["reason"] == "undecodable_bytes"


def test_truncated_warc_keeps_what_was_read_and_records_the_break(tmp_path, prose):
    path = tmp_path / "crawl.warc.gz"
    _crawl(path, prose)
    raw = path.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    outcome, kept, quarantined = ingest(cut, tmp_path)
    assert outcome.ledger.n_in > 0  # datatrove's reader said 0 with every check green
    assert reasons(quarantined)["unreadable_file"] == 1
    assert [meta(r)["url"] for r in kept] == ["http://news.example/a", "http://news.example/b", "http://news.example/c",
                                              "http://news.example/robots.txt"][: len(kept)]

    plain = tmp_path / "crawl.warc"
    _crawl(plain, prose, gzip_records=False)
    short = tmp_path / "short.warc"
    data = plain.read_bytes()
    first_pdf = data.index(b"%PDF-1.5")
    short.write_bytes(data[: first_pdf + 50])  # cut inside the PDF response's body
    outcome, kept, quarantined = ingest(short, tmp_path)
    assert outcome.ledger.n_out == 4 and outcome.ledger.quarantined == {"unreadable_file": 1}
    assert "cut short" in quarantined[0]["text"]


def _csv_lines(rows: list[list[str]], delimiter: str = ",") -> list[str]:
    buf = StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buf.getvalue().splitlines(keepends=True)


def _one_line(text: str, n: int) -> str:
    return " ".join(text.split())[:n]


def _table(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def _assert_only_broken_lines_quarantined(outcome, kept, quarantined, n_rows: int, broken: dict[str, str]):
    """Every other row kept in order; each broken line quarantined alone, shown as written."""
    assert outcome.ledger.n_in == n_rows and outcome.ledger.n_out == n_rows - len(broken)
    assert outcome.ledger.n_in == outcome.ledger.n_out + outcome.ledger.n_rejected + outcome.ledger.n_quarantined
    assert outcome.ledger.quarantined == {"malformed_csv": len(broken)}
    assert [r["text"] for r in quarantined] == list(broken.values())
    assert all(meta(r)["csv_error"] for r in quarantined)
    positions = [meta(r)["position"] for r in kept + quarantined]
    assert sorted(positions, key=int) == [str(i) for i in range(1, n_rows + 1)]  # one per record
    return [r["id"] for r in kept]


@pytest.mark.parametrize("quoted_after", [True, False], ids=["quote-later", "no-quote-until-eof"])
def test_csv_unterminated_quote_mid_file_quarantines_only_that_line(tmp_path, prose, quoted_after):
    # a later quote makes strict parsing stop there; with none, the reader stops at the end of the file
    rows = [[f"c{i}", _one_line(prose[i], 300) if quoted_after else f"row {i} plain"] for i in range(10)]
    lines = _csv_lines([["id", "text"], *rows])
    if quoted_after:
        lines = [line if '"' in line else line.replace(",", ',"', 1).replace("\n", '"\n') for line in lines]
    lines[5] = 'c4,"an opening quote that nothing closes\n'
    outcome, kept, quarantined = ingest(_table(tmp_path / "broken.csv", lines), tmp_path)
    ids = _assert_only_broken_lines_quarantined(outcome, kept, quarantined, 10, {"c4": 'c4,"an opening quote that nothing closes'})
    assert ids == [f"c{i}" for i in range(10) if i != 4]
    assert kept[4]["text"] == rows[5][1] and meta(quarantined[0])["line"] == 6


def test_csv_unterminated_quote_on_last_line_and_garbage_after_closing_quote(tmp_path, prose):
    lines = _csv_lines([["id", "text"], *([f"c{i}", _one_line(prose[i], 200)] for i in range(3))])
    outcome, kept, quarantined = ingest(_table(tmp_path / "last.csv", [*lines, 'c3,"cut off at the end']), tmp_path)
    assert _assert_only_broken_lines_quarantined(outcome, kept, quarantined, 4, {"c3": 'c3,"cut off at the end'}) == ["c0", "c1", "c2"]
    assert meta(quarantined[0])["csv_error"] == "unexpected end of data"

    garbage = [*lines[:2], 'g1,"closed"then more\n', *lines[2:]]  # non-strict csv would keep `closedthen more`
    outcome, kept, quarantined = ingest(_table(tmp_path / "garbage.csv", garbage), tmp_path)
    assert _assert_only_broken_lines_quarantined(outcome, kept, quarantined, 4, {"g1": 'g1,"closed"then more'}) == ["c0", "c1", "c2"]


def test_csv_multi_line_field_is_one_doc_and_two_broken_quotes_each_cost_one_line(tmp_path, prose):
    rows = [["m1", "first paragraph\nsecond paragraph"], *([f"c{i}", f"row {i}"] for i in range(6))]
    lines = _csv_lines([["id", "text"], *rows])
    assert len(lines) == 9  # the quoted field spans two physical lines
    lines[3] = 'b1,"stray\n'
    lines[6] = 'b2,"another "stray\n'
    outcome, kept, quarantined = ingest(_table(tmp_path / "multi.csv", lines), tmp_path)
    broken = {"b1": 'b1,"stray', "b2": 'b2,"another "stray'}
    assert _assert_only_broken_lines_quarantined(outcome, kept, quarantined, 7, broken) == ["m1", "c1", "c2", "c4", "c5"]
    assert kept[0]["text"] == "first paragraph\nsecond paragraph"


def test_tsv_unterminated_quote(tmp_path, prose):
    lines = _csv_lines([["id", "text"], *([f"t{i}", _one_line(prose[i], 200)] for i in range(5))], delimiter="\t")
    lines[2] = 't1\t"half-quoted cell\n'
    outcome, kept, quarantined = ingest(_table(tmp_path / "broken.tsv", lines), tmp_path)
    ids = _assert_only_broken_lines_quarantined(outcome, kept, quarantined, 5, {"t1": 't1\t"half-quoted cell'})
    assert ids == ["t0", "t2", "t3", "t4"] and kept[1]["text"] == _one_line(prose[2], 200)


def test_csv_stray_quote_running_past_the_size_limit_costs_one_line(tmp_path):
    # with no quote to stop it, the field grows past the parser's limit (6x max_doc_bytes + 64 KiB)
    lines = ["id,text\n", 'big,"never closed\n', *(f"r{i},{'w' * 1000}\n" for i in range(100))]
    outcome, kept, quarantined = ingest(_table(tmp_path / "runaway.csv", lines), tmp_path, {"max_doc_bytes": 2000})
    assert outcome.ledger.n_in == 101 and outcome.ledger.quarantined == {"too_large": 1}
    assert quarantined[0]["text"] == 'big,"never closed' and "field larger" in meta(quarantined[0])["csv_error"]
    assert [r["id"] for r in kept] == [f"r{i}" for i in range(100)]


# -- 3. encodings --------------------------------------------------------------------------------


def test_byte_order_mark_is_stripped_everywhere(tmp_path, prose):
    bom = b"\xef\xbb\xbf"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(bom + "".join(json.dumps({"id": f"b{i}", "text": t}) + "\n" for i, t in enumerate(prose[:3])).encode())
    outcome, kept, _ = ingest(jsonl, tmp_path)
    assert outcome.ledger.n_out == 3 and kept[0]["id"] == "b0"

    table = tmp_path / "bom.csv"
    table.write_bytes(bom + b'id,text\nc1,"' + prose[0].replace('"', '""').encode() + b'"\nc2,second\n')
    outcome, kept, _ = ingest(table, tmp_path)
    assert [r["id"] for r in kept] == ["c1", "c2"]  # the first column is `id`, not `\ufeffid`

    note = tmp_path / "note.txt"
    note.write_bytes(bom + prose[1].encode())
    outcome, kept, _ = ingest(note, tmp_path)
    assert kept[0]["text"] == prose[1]


def test_invalid_unicode_escape_in_any_field_quarantines_that_record(tmp_path, prose):
    src = tmp_path / "escapes.jsonl"
    lines = [
        json.dumps({"id": "ok1", "text": prose[0]}),
        '{"id": "in-text", "text": "broken \\ud800 pair in the middle of a sentence"}',
        '{"id": "bad\\udfffid", "text": ' + json.dumps(prose[1]) + "}",
        '{"id": "in-extra", "text": ' + json.dumps(prose[2]) + ', "title": "T\\ud83d"}',
        '{"id": "in-nested", "text": ' + json.dumps(prose[3]) + ', "meta": {"authors": ["A", "\\udc00B"]}}',
        '{"id": "in-key", "text": ' + json.dumps(prose[4]) + ', "k\\ud800": 1}',
        json.dumps({"id": "pair-ok", "text": "emoji 😀 " + prose[5]}),  # a valid pair, escaped
        json.dumps({"id": "ok2", "text": prose[6]}),
    ]
    src.write_text("\n".join(lines) + "\n")
    outcome, kept, quarantined = ingest(src, tmp_path)
    assert outcome.ledger.n_in == 8
    assert [r["id"] for r in kept] == ["ok1", "pair-ok", "ok2"]
    assert outcome.ledger.quarantined == {"invalid_unicode": 5}
    q = {meta(r).get("title") or r["id"]: r for r in quarantined}
    assert "broken \ufffd pair" in q["in-text"]["text"]
    assert "bad\ufffdid" in q  # the id itself is made writable
    assert "T\ufffd" in q and "\ufffdB" in quarantined[3]["meta"]
    assert "😀" in kept[1]["text"]


# -- 4. ids --------------------------------------------------------------------------------------


def test_repeated_and_lookalike_ids_get_unique_ids(tmp_path, prose):
    src = tmp_path / "ids.jsonl"
    rows = [
        {"id": 7, "text": prose[0]},  # 1
        {"id": "7", "text": prose[1]},  # 2: prints the same as 7 -> 7#2
        {"id": "x#5", "text": prose[2]},  # 3: takes what a repeat at line 5 would be given
        {"id": "x", "text": prose[3]},  # 4
        {"id": "x", "text": prose[4]},  # 5: x#5 is taken -> hash
        {"id": "x", "text": prose[5]},  # 6 -> x#6
        {"id": "x#6", "text": prose[6]},  # 7: a real id equal to a generated one -> x#6#7
        {"text": prose[7]},  # 8: no id -> hash
        {"id": {"shard": 1, "row": 2}, "text": prose[8]},  # 9: an object id -> its JSON text
        {"id": True, "text": prose[9]},  # 10
        {"id": 7, "text": prose[10]},  # 11 -> 7#11, source_id 7 (a number)
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    outcome, kept, _ = ingest(src, tmp_path)
    ids = [r["id"] for r in kept]
    assert len(ids) == len(set(ids)) == 11
    assert ids[:4] == ["7", "7#2", "x#5", "x"]
    assert len(ids[4]) == 16 and ids[5:7] == ["x#6", "x#6#7"]
    assert len(ids[7]) == 16 and ids[8] == '{"row": 2, "shard": 1}' and ids[9] == "true" and ids[10] == "7#11"
    assert outcome.metadata["ids_repeated"] == 5
    assert meta(kept[1])["source_id"] == "7" and meta(kept[4])["source_id"] == "x" and meta(kept[10])["source_id"] == 7
    assert "source_id" not in meta(kept[0]) and "source_id" not in meta(kept[3]) and "source_id" not in meta(kept[7])


def test_ids_repeated_across_files_of_a_folder(tmp_path, prose):
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(json.dumps({"id": i, "text": prose[i]}) for i in range(3)))
    (folder / "b.jsonl").write_text("\n".join(json.dumps({"id": str(i), "text": prose[3 + i]}) for i in range(3)))
    outcome, kept, _ = ingest(folder, tmp_path)
    assert [r["id"] for r in kept] == ["0", "1", "2", "0#1", "1#2", "2#3"]
    assert outcome.metadata["ids_repeated"] == 3
    assert [meta(r)["file"] for r in kept[3:]] == ["b.jsonl"] * 3


# -- 5. size limits are enforced while reading -----------------------------------------------------


def test_over_long_records_are_cut_while_reading(tmp_path, prose):
    limit = 2000  # max_doc_bytes; a JSONL line may take 6x that plus 64 KiB before it is cut unread
    huge = "lorem ipsum " * 20_000  # 240 KB
    src = tmp_path / "big.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        fh.write(json.dumps({"id": "first", "text": prose[0][:1500]}) + "\n")
        fh.write(json.dumps({"id": "line-too-long", "text": huge}) + "\n")
        fh.write(json.dumps({"id": "text-too-long", "text": "word " * 1000}) + "\n")
        fh.write(json.dumps({"id": "last", "text": prose[1][:1500]}) + "\n")
    outcome, kept, quarantined = ingest(src, tmp_path, {"max_doc_bytes": limit})
    assert [r["id"] for r in kept] == ["first", "last"]
    assert outcome.ledger.quarantined == {"too_large": 2}
    cut, parsed = quarantined
    assert meta(cut)["original_bytes"] == len(json.dumps({"id": "line-too-long", "text": huge}))
    assert len(cut["text"]) == 4096 and cut["text"].startswith('{"id": "line-too-long"')
    assert parsed["id"] == "text-too-long" and meta(parsed)["original_bytes"] == 5000

    table = tmp_path / "big.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerow(["r1", prose[2][:1500]])
        w.writerow(["r2", 'a "quoted" ' + huge])  # one physical line far over the cut
        w.writerow(["r3", "multi\nline " + "y" * 3000])  # a field over max_doc_bytes
        w.writerow(["r4", prose[3][:1500]])
    outcome, kept, quarantined = ingest(table, tmp_path, {"max_doc_bytes": limit})
    assert [r["id"] for r in kept] == ["r1", "r4"]  # the quote parity survived the cut
    assert outcome.ledger.n_in == 4 and outcome.ledger.quarantined == {"too_large": 2}
    assert meta(quarantined[0])["original_bytes"] == len('r2,"a ""quoted"" ' + huge + '"')

    page = tmp_path / "page.html"
    page.write_text("<html><body>" + huge + "</body></html>")
    outcome, kept, quarantined = ingest(page, tmp_path, {"max_doc_bytes": limit})
    assert outcome.ledger.quarantined == {"too_large": 1}
    assert meta(quarantined[0])["original_bytes"] == page.stat().st_size and len(quarantined[0]["text"]) <= 4096


PEAK_RSS = textwrap.dedent("""
    import resource, sys
    from dagster_llmdata import apply_operator
    outcome = apply_operator("ingest", sys.argv[1], sys.argv[2])
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(rss // 1024, outcome.ledger.n_in, outcome.ledger.n_out, dict(outcome.ledger.quarantined))
""")


def _peak_mb(src: Path, out: Path) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-c", PEAK_RSS, str(src), str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    mb, rest = res.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(mb), rest


def test_decompression_bomb_line_is_never_held_whole(tmp_path, prose):
    line_mb = 300
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as fh:
        fh.write(b'{"id": "bomb", "text": "')
        block = b"all work and no play " * 50_000  # ~1 MB
        for _ in range(line_mb):
            fh.write(block)
        fh.write(b'"}\n' + json.dumps({"id": "after", "text": prose[0]}).encode() + b"\n")
    assert bomb.stat().st_size < 5_000_000
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"id": "after", "text": prose[0]}) + "\n")

    base_mb, _ = _peak_mb(tiny, tmp_path / "t.parquet")
    peak_mb, ledger = _peak_mb(bomb, tmp_path / "b.parquet")
    assert ledger == "2 1 {'too_large': 1}"
    assert peak_mb - base_mb < 250, (base_mb, peak_mb)
    (row,) = pq.read_table(tmp_path / "b.quarantine.parquet").to_pylist()
    assert meta(row)["original_bytes"] == len(b'{"id": "bomb", "text": "') + len(block) * line_mb + 2


# -- 6. text that is not a string in Parquet -----------------------------------------------------------


def test_parquet_text_column_types(tmp_path, prose):
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": ["i1", "i2"], "text": pa.array([42, 7], pa.int64())}), ints)
    outcome, _, quarantined = ingest(ints, tmp_path)
    assert outcome.ledger.quarantined == {"text_not_a_string": 2} and quarantined[0]["text"] == "42"

    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"id": ["n1", "n2", "n3", "n4"], "text": [prose[0], None, "  ", prose[1]]}), nulls)
    outcome, kept, quarantined = ingest(nulls, tmp_path)
    assert [r["id"] for r in kept] == ["n1", "n4"]
    assert {r["id"]: r["reason"] for r in quarantined} == {"n2": "missing_text_field", "n3": "empty_text"}

    lists = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"id": ["l1"], "text": pa.array([["para one", "para two"]])}), lists)
    outcome, _, quarantined = ingest(lists, tmp_path)
    assert outcome.ledger.quarantined == {"text_not_a_string": 1} and quarantined[0]["text"] == '["para one", "para two"]'

    blobs = tmp_path / "blobs.parquet"
    values = [prose[2].encode(), b"caf\xe9 au lait", "naïve ☕".encode(), None]
    pq.write_table(pa.table({"id": ["b1", "b2", "b3", "b4"], "text": pa.array(values, pa.binary())}), blobs)
    outcome, kept, quarantined = ingest(blobs, tmp_path)
    assert [r["id"] for r in kept] == ["b1", "b3"] and kept[1]["text"] == "naïve ☕"
    assert {r["id"]: r["reason"] for r in quarantined} == {"b2": "undecodable_bytes", "b4": "missing_text_field"}
    assert quarantined[0]["text"] == "caf\ufffd au lait"


# -- 7. params ------------------------------------------------------------------------------------------


def test_params_are_described_and_bounded():
    schema = IngestParams.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())
    assert "auto" in schema["properties"]["format"]["enum"]
    for bad in ({"max_doc_bytes": 0}, {"format": "pdf"}, {"encoding": "no-such-codec"}, {"text_field": ""}):
        with pytest.raises(ValidationError):
            IngestParams(**bad)
    assert IngestParams(encoding="latin-1", format="csv").max_doc_bytes == 10_000_000


def test_latin1_csv_with_explicit_encoding(tmp_path, prose):
    src = tmp_path / "legacy.txt"  # an explicit format reads a file whatever its name
    src.write_bytes("id,text\nl1,Crème brûlée à la française\n".encode("latin-1"))
    outcome, kept, _ = ingest(src, tmp_path, {"format": "csv", "encoding": "latin-1"})
    assert kept[0]["text"] == "Crème brûlée à la française"
