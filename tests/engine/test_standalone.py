"""`llmdata op` / `apply_operator`: every record of the input is accounted for, the same way a
pipeline accounts for it, and the output files say what they are."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagster_llmdata import apply_operator, load_project

BIN = Path(sys.executable).parent


def _mixed_jsonl(path: Path, prose: list[str]) -> Path:
    """Good docs, short ones (rejected by gopher_quality) and broken records (quarantined by ingest)."""
    with open(path, "wb") as fh:
        for i, text in enumerate(prose[:6]):
            fh.write(json.dumps({"id": f"p{i}", "text": text, "url": f"https://example.org/{i}"}).encode() + b"\n")
        fh.write(json.dumps({"id": "tiny", "text": "Only a few words here."}).encode() + b"\n")
        fh.write(b'{"id": "cut", "text": "half a rec\n')
        fh.write(b'{"id": "latin1", "text": "caf\xe9"}\n')
        fh.write(b'{"id": "nope", "body": "no text field"}\n')
        fh.write(b'{"id": "blank", "text": "   "}\n')
    return path


def _rows(path: Path) -> list[dict]:
    if path.name.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_standalone_counts_what_ingest_quarantined(tmp_path, prose):
    src = _mixed_jsonl(tmp_path / "in.jsonl", prose)
    out = tmp_path / "kept.parquet"
    outcome = apply_operator("gopher_quality", src, out)
    led = outcome.ledger
    assert led.n_in == 11 and led.balanced
    assert led.n_out + led.n_rejected == 7 and led.rejected["gopher_short_doc"] == 1
    assert led.quarantined == {"malformed_json": 1, "undecodable_bytes": 1, "missing_text_field": 1, "empty_text": 1}
    quarantined = _rows(tmp_path / "kept.quarantine.parquet")
    assert sorted(r["reason"] for r in quarantined) == sorted(["malformed_json", "undecodable_bytes", "missing_text_field", "empty_text"])
    rejected = {r["id"]: r for r in _rows(tmp_path / "kept.rejected.parquet")}
    assert rejected["tiny"]["reason"] == "gopher_short_doc"
    assert rejected["tiny"]["value"] == 5 and rejected["tiny"]["threshold"] == 50
    kept = _rows(out)
    assert {r["id"] for r in kept} == {f"p{i}" for i in range(6)} - set(rejected)
    assert kept[0]["url"].startswith("https://example.org/")  # extra fields come back as columns


def test_standalone_and_pipeline_agree(tmp_path, prose, instance):
    """The same file through `llmdata op` and through a two-stage pipeline in Dagster."""
    src = _mixed_jsonl(tmp_path / "in.jsonl", prose)
    cli = subprocess.run([str(BIN / "llmdata"), "op", "gopher_quality", "--in", str(src), "--out", str(tmp_path / "o.parquet")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    standalone = json.loads(cli.stdout)

    project = tmp_path / "project"
    (project / "assets").mkdir(parents=True)
    (project / "assets" / "p.yaml").write_text(textwrap.dedent("""\
        pipeline: p
        sources: [{name: web, landing: landing}]
        stages:
          - {name: raw, op: ingest}
          - {name: quality, op: gopher_quality}
        """))
    (project / "landing").mkdir()
    (project / "landing" / "in.jsonl").write_bytes(src.read_bytes())
    instance.add_dynamic_partitions("p_files", ["web/in.jsonl"])
    result = dg.materialize(list(load_project(project).assets), partition_key="web/in.jsonl", instance=instance)
    meta = {e.materialization.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert standalone["n_in"] == meta["raw"]["n_in"].value == 11
    assert standalone["kept"] == meta["quality"]["n_out"].value
    assert sum(standalone["rejected"].values()) == meta["quality"]["n_rejected"].value
    assert sum(standalone["quarantined"].values()) == meta["raw"]["n_quarantined"].value + meta["quality"]["n_quarantined"].value


def test_second_run_to_same_out_leaves_nothing_stale(tmp_path, prose):
    out = tmp_path / "o.parquet"
    apply_operator("normalize", _mixed_jsonl(tmp_path / "bad.jsonl", prose), out)
    assert len(_rows(tmp_path / "o.quarantine.parquet")) == 4
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(json.dumps({"text": t}) for t in prose[:3]) + "\n")
    outcome = apply_operator("normalize", clean, out)
    assert outcome.ledger.n_in == 3
    assert _rows(tmp_path / "o.quarantine.parquet") == [] and _rows(tmp_path / "o.rejected.parquet") == []
    assert len(_rows(out)) == 3


@pytest.mark.parametrize("name", ["kept.jsonl", "kept.jsonl.gz"])
def test_out_suffix_chooses_the_format(tmp_path, prose, name):
    src = _mixed_jsonl(tmp_path / "in.jsonl", prose)
    outcome = apply_operator("gopher_quality", src, tmp_path / name)
    stem = name.split(".")[0]
    ext = name[len(stem):]
    kept = _rows(tmp_path / name)
    assert len(kept) == outcome.ledger.n_out >= 1 and kept[0]["text"]
    assert len(_rows(tmp_path / f"{stem}.rejected{ext}")) == outcome.ledger.n_rejected >= 1
    assert len(_rows(tmp_path / f"{stem}.quarantine{ext}")) == 4


def test_unknown_out_suffix_is_refused_before_any_work(tmp_path, prose):
    src = _mixed_jsonl(tmp_path / "in.jsonl", prose)
    with pytest.raises(ValueError, match=r"end it in \.parquet, \.jsonl\.gz, \.jsonl"):
        apply_operator("normalize", src, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_parquet_input_with_unusable_text(tmp_path, prose):
    # non-string text goes through ingest and is quarantined record by record
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array([1, 2], pa.int64())}), ints)
    outcome = apply_operator("gopher_quality", ints, tmp_path / "o.parquet")
    assert outcome.ledger.n_in == 2 and outcome.ledger.quarantined == {"text_not_a_string": 2}

    # a string column with nulls and blanks: those rows are set aside, the rest keep their columns
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": [prose[0], None, "  ", prose[1]], "score": [0.1, 0.2, 0.3, 0.4]}), mixed)
    outcome = apply_operator("normalize", mixed, tmp_path / "m.parquet")
    assert outcome.ledger.n_in == 4 and outcome.ledger.balanced
    assert outcome.ledger.quarantined == {"missing_text_field": 1, "empty_text": 1}
    kept = _rows(tmp_path / "m.parquet")
    assert [r["id"] for r in kept] == ["1", "4"] and [r["score"] for r in kept] == [0.1, 0.4]


def test_cli_is_quiet_helpful_and_leaves_no_dagster_home(tmp_path, prose):
    src = _mixed_jsonl(tmp_path / "in.jsonl", prose)
    llmdata = str(BIN / "llmdata")
    res = subprocess.run([llmdata, "op", "normalize", "--in", str(src), "--out", "o.parquet"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["n_in"] == 11
    assert "datatrove" not in res.stderr and "Stats" not in res.stdout + res.stderr
    assert not (tmp_path / ".dagster_home").exists()
    verbose = subprocess.run([llmdata, "op", "normalize", "--in", str(src), "--out", "o.parquet", "-v"], capture_output=True, text=True, cwd=tmp_path)
    assert "Stats" in verbose.stderr

    typo = subprocess.run([llmdata, "op", "gopher_quality", "--in", str(src), "--out", "o.parquet", "--param", "min_doc_wrds=3"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert typo.returncode == 2 and "did you mean 'min_doc_words'" in typo.stderr and "Traceback" not in typo.stderr
    assert "llmdata ops" in subprocess.run([llmdata, "op", "--help"], capture_output=True, text=True).stdout
    ops = subprocess.run([llmdata, "ops", "pii_redact"], capture_output=True, text=True).stdout
    assert "kinds (list of one of email|ip|phone" in ops

    status = subprocess.run([llmdata, "status", "--project", str(tmp_path)], capture_output=True, text=True)
    assert status.returncode == 2 and "is not an llmdata project" in status.stderr


@pytest.mark.parametrize("sigterm", ["default", "ignored"])
def test_python_api_needs_no_main_guard(tmp_path, prose, sigterm):
    """A plain script (no `if __name__ == "__main__":`) with several row groups and two workers;
    also from a process that ignores SIGTERM (the worker pool stops its workers with it)."""
    data = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(6000)], "text": [prose[i % 20] for i in range(6000)]}), data, row_group_size=1000)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""\
        import signal
        if {sigterm == "ignored"}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        from dagster_llmdata import ExecutorConfig, apply_operator
        outcome = apply_operator("normalize", {str(data)!r}, {str(tmp_path / 'o.parquet')!r}, executor=ExecutorConfig(tasks=2, workers=2))
        print("n_out", outcome.ledger.n_out)
        """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and "n_out 6000" in res.stdout, res.stderr[-2000:]


def test_progress_bar_on_a_terminal(tmp_path, prose):
    """On a terminal `llmdata op` draws a bar per reader, on the terminal even though datatrove's
    logs go to a file. (The delay before a bar shows is 0 here, 2 s by default.)"""
    import fcntl
    import os
    import pty
    import struct
    import termios

    data = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(3000)], "text": [prose[i % 20] for i in range(3000)]}), data)
    env = dict(os.environ, LLMDATA_PROGRESS_DELAY_S="0")
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of 120 columns, then llmdata
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.execve(str(BIN / "llmdata"), ["llmdata", "op", "normalize", "--in", str(data), "--out", str(tmp_path / "o.parquet")], env)
    screen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    text = screen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "normalize: 100%" in text and "3000/3000" in text
    assert '"n_in": 3000' in text and "Stats" not in text
