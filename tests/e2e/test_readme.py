"""README.md as a user reads it: every shell and Python block is run as written, in order, in a
scratch project that `llmdata demo` built (the full default corpus, as `make demo` builds it);
every complete pipeline / mixture / sensors YAML block must load; the demo table must be what
that demo run printed. The blocks are read from README.md itself, so an edited README is tested
as edited. A block preceded by `<!-- readme: not run (why) -->` is skipped with that reason, and so
is the block of `make` set-up commands (the fixture runs `llmdata demo`, make demo's command)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ..processes import free_port, process_group, wait_for

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
BIN = Path(sys.executable).parent
NOT_RUN = re.compile(r"<!--\s*readme:\s*not run\s*\((?P<why>[^)]*)\)\s*-->")
DEMO_TABLE = "<!-- demo-table"
JUDGE_PORT = "127.0.0.1:8000"  # the port the README's judge examples use; the test serves the CPU judge elsewhere


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    lang: str
    text: str
    note: str  # the HTML comment just above the fence, if any

    @property
    def skip_reason(self) -> str | None:
        m = NOT_RUN.search(self.note)
        if m:
            return m.group("why")
        commands = [line for line in self.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if self.lang == "bash" and commands and all(line.startswith("make ") for line in commands):
            # the set-up: the scratch project is what `llmdata demo` (make demo's command) builds; make test is this run
            return "the set-up commands themselves"
        return None


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.S | re.M):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append(Block(text[: m.start()].count("\n") + 1, m.group(1), m.group(2), before if before.startswith("<!--") else ""))
    return blocks


BLOCKS = readme_blocks(README.read_text())
RUNNABLE = [b for b in BLOCKS if b.lang in ("bash", "python")]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict:
    """The demo's project, built the way `make demo` builds it, plus the small input files the
    README's examples name (docs.jsonl, M.csv, ...) made from the demo's own landing data."""
    root = tmp_path_factory.mktemp("readme")
    for folder in ("assets", "sensors"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copy(REPO / "workspace.yaml", root)
    env = {**os.environ, "DAGSTER_HOME": str(root / ".dagster_home"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("LLMDATA_PROJECT", None)
    demo = subprocess.run([str(BIN / "llmdata"), "demo"], cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    _example_inputs(root)
    return {"root": root, "env": env, "demo_stdout": demo.stdout}


def _example_inputs(root: Path) -> None:
    rows = []
    for path in sorted((root / "data/landing/sample").glob("*.jsonl")):  # a few prose-sized docs of every domain
        taken = 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if taken < 12 and isinstance(doc, dict) and isinstance(doc.get("text"), str) and len(doc["text"].split()) > 40:
                rows.append({"id": f"{path.stem}-{taken}", "text": doc["text"]})
                taken += 1
    assert len(rows) >= 20, "the demo's landing data has too few documents for the README's examples"
    rng = random.Random(0)
    rng.shuffle(rows)
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))  # what the (slow, CPU) judge reads
    with gzip.open(root / "docs.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), root / "docs.parquet")
    # RegMix proxy runs: a mixtures CSV and a losses CSV joined on `index`, and mixtures to predict
    domains = ["code", "python_docs", "debian"]
    with open(root / "M.csv", "w", newline="") as m, open(root / "L.csv", "w", newline="") as lo, open(root / "M2.csv", "w", newline="") as m2:
        wm, wl, w2 = csv.writer(m), csv.writer(lo), csv.writer(m2)
        wm.writerow(["index", *domains]), wl.writerow(["index", "val_loss"]), w2.writerow(["index", *domains])
        for i in range(40):
            w = [rng.random() for _ in domains]
            w = [x / sum(w) for x in w]
            wm.writerow([i, *w])
            wl.writerow([i, 3.0 - 0.8 * w[1] + 0.3 * w[2] + rng.gauss(0, 0.01)])
            w2.writerow([i, *w[::-1]])


@pytest.fixture(scope="module")
def judge_port(scratch):
    """The CPU judge (SmolLM2-135M) as a real OpenAI-compatible server, for the judge examples."""
    port = free_port()
    with process_group([sys.executable, "-m", "dagster_llmdata.judges.serve", "--port", str(port)],
                       scratch["root"] / "judge_server.log", env=scratch["env"]) as proc:
        import urllib.request

        wait_for(lambda: proc.poll() is None and urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).status == 200,
                 300, "the CPU judge server")
        yield port


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[f"README.md:{b.line}:{b.lang}" for b in RUNNABLE])
def test_readme_block_runs(block: Block, scratch, request):
    if block.skip_reason:
        pytest.skip(f"README.md:{block.line}: {block.skip_reason}")
    root, env = scratch["root"], scratch["env"]
    for earlier in BLOCKS:  # files the README shows (a YAML block starting `# intent.yaml`) exist before they are used
        first = earlier.text.splitlines()[0] if earlier.text else ""
        if earlier.line < block.line and earlier.lang == "yaml" and re.fullmatch(r"#\s*[\w./-]+\.ya?ml", first.strip()):
            (root / first.lstrip("# ").strip()).write_text(earlier.text)
    text = block.text
    if JUDGE_PORT in text:
        text = text.replace(JUDGE_PORT, f"127.0.0.1:{request.getfixturevalue('judge_port')}")
    if block.lang == "bash":
        cmd = ["bash", "-e", "-o", "pipefail", "-c", text]
    else:
        script = root / f"readme_{block.line}.py"
        script.write_text(text)
        cmd = [sys.executable, str(script)]
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    where = f"README.md:{block.line} ({block.lang}) failed with exit code {out.returncode}:\n{text}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}"
    assert out.returncode == 0, where
    assert "Traceback (most recent call last)" not in out.stdout + out.stderr, where


SPEC_KEYS = ("pipeline", "mixture", "sensors")
SPEC_BLOCKS = [b for b in BLOCKS if b.lang == "yaml" and isinstance(d := yaml.safe_load(b.text), dict) and set(d) & set(SPEC_KEYS)]


@pytest.mark.parametrize("block", SPEC_BLOCKS, ids=[f"README.md:{b.line}:yaml" for b in SPEC_BLOCKS])
def test_readme_spec_block_loads(block: Block, tmp_path):
    """A whole spec in the README loads in the default project (replacing the spec of its name)."""
    from dagster_llmdata.spec.project import read_project

    for folder in ("assets", "sensors"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    doc = yaml.safe_load(block.text)
    if "sensors" in doc:
        (tmp_path / "sensors" / "readme.yaml").write_text(block.text)
    else:
        name = doc.get("pipeline") or doc.get("mixture")
        for path in (tmp_path / "assets").glob("*.yaml"):
            spec = yaml.safe_load(path.read_text()) or {}
            if name in (spec.get("pipeline"), spec.get("mixture")):
                path.unlink()
        (tmp_path / "assets" / "readme.yaml").write_text(block.text)
    problems = read_project(tmp_path).problems
    assert not problems, f"README.md:{block.line}: " + "\n".join(map(str, problems))


def _table_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stage ") and " op " in line)
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.rstrip())
    return rows


def _row(line: str) -> tuple[str, str, list[int], str]:
    stage, op, *rest = line.split(None, 6)
    numbers, reasons = rest[:4], rest[4] if len(rest) > 4 else ""
    first = reasons.removeprefix("quarantined: ").split("=")[0] if reasons else ""
    return stage, op, [int(n) for n in numbers], first


def _close(a: int, b: int) -> bool:
    return abs(a - b) <= max(10, 0.03 * max(a, b))


@pytest.mark.slow
def test_readme_demo_table_is_what_the_demo_printed(scratch):
    """Same stages, operators and main reasons; counts equal up to what machine load moves: HTML
    extraction has a per-document timeout, so a loaded machine extracts a few pages fewer and the
    counts downstream shift by a few (at most 3%, or 10 documents)."""
    marker = next((i for i, b in enumerate(BLOCKS) if DEMO_TABLE in b.note), None)
    assert marker is not None, f"README.md has no block marked {DEMO_TABLE!r}"
    printed, documented = _table_rows(scratch["demo_stdout"]), _table_rows(BLOCKS[marker].text)
    hint = "README.md's demo table is not what `llmdata demo` prints now; `python bench/readme_demo_table.py` rewrites it:\n"
    assert printed[0].split() == documented[0].split(), hint + "\n".join(printed)
    got, want = [_row(r) for r in printed[1:]], [_row(r) for r in documented[1:]]
    assert [g[:2] for g in got] == [w[:2] for w in want], hint + "\n".join(printed)
    for g, w in zip(got, want):
        assert all(_close(a, b) for a, b in zip(g[2], w[2])) and g[3] == w[3], hint + f"{g} vs README {w}\n" + "\n".join(printed)
