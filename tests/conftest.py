from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("DATATROVE_COLORIZE_LOGS", "0")


def prose_docs(n: int = 30) -> list[str]:
    """Real English prose nobody here wrote: the licence texts Debian ships, cut into ~150-word
    documents (Python's own reference text tops it up where they are missing)."""
    docs: list[str] = []
    licences = Path("/usr/share/common-licenses")
    for f in sorted(p for p in licences.iterdir() if p.is_file()) if licences.is_dir() else []:
        chunk: list[str] = []
        for para in (p for p in f.read_text(errors="replace").split("\n\n") if p.strip()):
            chunk.append(para)
            if sum(len(x.split()) for x in chunk) > 150:
                docs.append("\n\n".join(chunk))
                chunk = []
    if len(docs) < n:
        from dagster_llmdata.demo.sample_corpus import python_docs

        docs += [d["text"] for d in python_docs() if len(d["text"].split()) > 120]
    # spread over the licences rather than 40 chunks of the first one
    step = max(1, len(docs) // n)
    return (docs[::step] + docs)[:n]


@pytest.fixture(scope="session")
def prose() -> list[str]:
    return prose_docs(40)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


PIPELINE_YAML = textwrap.dedent(
    """\
    pipeline: tiny
    storage: data/pipelines
    executor: {kind: local, tasks: 1, workers: 1}
    sources:
      - name: web
        landing: landing/web
    stages:
      - {name: raw, op: ingest}
      - {name: normalized, op: normalize}
      - {name: deduplicated, op: exact_dedup}
      - {name: near_deduplicated, op: minhash_dedup}
      - {name: quality_filtered, op: gopher_quality, params: {min_doc_words: 50}}
      - {name: redacted, op: pii_redact}
      - {name: shards, op: export_shards, params: {target_shard_bytes: 20000}}
    """
)


@pytest.fixture()
def project(tmp_path: Path, prose: list[str]) -> Path:
    """A user project: assets/ + sensors/ + a landing folder with one real-text file."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "sensors").mkdir()
    (tmp_path / "assets" / "tiny.yaml").write_text(PIPELINE_YAML)
    (tmp_path / "sensors" / "landing.yaml").write_text("sensors:\n  - {type: landing, pipeline: tiny}\n")
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:12])]
    rows.append({"id": "dup", "text": prose[0]})  # an exact copy of d0
    rows.append({"id": "short", "text": "Too short to keep."})
    rows.append({"id": "mail", "text": prose[13] + "\nWrite to jane.doe@example.org or call +1 415-555-0134."})
    write_jsonl(tmp_path / "landing" / "web" / "batch1.jsonl", rows)
    return tmp_path


@pytest.fixture()
def instance(tmp_path: Path):
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


JUDGE_SERVER = Path(__file__).with_name("judge_server.py")


@contextlib.contextmanager
def judge_server(*args: str):
    """tests/judge_server.py (an OpenAI-compatible server with injectable faults) in its own
    process group; yields its base URL and kills the group after."""
    proc = subprocess.Popen([sys.executable, str(JUDGE_SERVER), "--port", "0", *args], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def judge_server_url():
    with judge_server() as base_url:
        yield base_url


@pytest.fixture
def judge_url(judge_server_url, tmp_path, monkeypatch):
    """The module's judge server with its counters reset, and a fresh score cache for the test."""
    import httpx

    httpx.post(judge_server_url.removesuffix("/v1") + "/reset")
    monkeypatch.setenv("LLMDATA_CACHE_DIR", str(tmp_path / "cache"))
    return judge_server_url


def judge_requests(base_url: str) -> int:
    """Requests the judge server has answered since its last reset."""
    import httpx

    return httpx.get(base_url.removesuffix("/v1") + "/stats").json()["requests"]


PARTITION_B = "web/b.jsonl"


def one_source_project(root: Path, pipeline: str, stages: list[dict], rows: list[dict]) -> Path:
    """A project whose pipeline `pipeline` ingests landing/b.jsonl (`rows`) and then runs `stages`."""
    import yaml

    (root / "assets").mkdir(parents=True, exist_ok=True)
    spec = {"pipeline": pipeline, "sources": [{"name": "web", "landing": "landing"}],
            "stages": [{"name": "raw", "op": "ingest"}, *stages]}
    (root / "assets" / f"{pipeline}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_jsonl(root / "landing" / "b.jsonl", rows)
    return root


def materialise_partition(root: Path, instance, resources: dict | None = None, partition: str = PARTITION_B):
    """Materialise one partition of the project's pipeline through Dagster, with the code
    location's resources unless others are given; returns the result and {stage: metadata}."""
    import dagster as dg

    from dagster_llmdata import load_project

    defs = load_project(root)
    assets = list(defs.assets)
    pipeline = next(iter(assets[0].keys)).path[0]
    instance.add_dynamic_partitions(f"{pipeline}_files", [partition])
    result = dg.materialize(assets, partition_key=partition, instance=instance, resources=resources or defs.resources)
    metadata = {e.materialization.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    return result, metadata
