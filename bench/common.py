"""Shared benchmark helpers: corpora of a given size, a throwaway project, Dagster runs, timing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from dagster_llmdata.io.logs import stderr_to as quiet_stderr  # noqa: E402, F401  (re-exported to the benchmarks)


def corpus_files(n_docs: int, n_files: int = 1) -> list[Path]:
    """The sample corpus at `n_docs` docs, dealt round-robin into `n_files` JSONL files (so every
    file has the same mix of domains and the same work), cached under bench/work."""
    folder = WORK / f"corpus-{n_docs}-{n_files}-rr"
    done = folder / "_done"
    if done.exists():
        return sorted(folder.glob("part-*.jsonl"))
    from dagster_llmdata.demo.sample_corpus import build_sample_corpus

    shutil.rmtree(folder, ignore_errors=True)
    raw = folder / "_raw"
    build_sample_corpus(raw, n_docs)
    import gzip

    outs = [open(folder / f"part-{i:03d}.jsonl", "w") for i in range(n_files)]
    n = 0
    for path in sorted(raw.iterdir()):
        if path.is_dir():
            lines = (json.dumps({"id": p.name, "text": p.read_text(errors="replace"), "domain": "html"}) + "\n" for p in sorted(path.iterdir()))
        else:
            lines = (gzip.open(path, "rt") if path.suffix == ".gz" else open(path))
        for line in lines:
            outs[n % n_files].write(line)
            n += 1
    for f in outs:
        f.close()
    shutil.rmtree(raw)
    done.write_text(str(n))
    return sorted(folder.glob("part-*.jsonl"))


def make_project(name: str, stages_yaml: str, landing: dict[str, list[Path]], tasks: int = 2, workers: int = 2) -> Path:
    """A throwaway project; `landing` maps each partition (a landing folder entry) to its files."""
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "assets").mkdir(parents=True)
    for entry, files in landing.items():
        folder = root / "landing" / "src" / entry
        folder.mkdir(parents=True)
        for f in files:
            os.link(f, folder / f.name)
    spec = textwrap.dedent(
        f"""\
        pipeline: {name}
        storage: data
        executor: {{kind: local, tasks: {tasks}, workers: {workers}}}
        sources:
          - {{name: src, landing: landing/src}}
        stages:
        """
    ) + textwrap.indent(textwrap.dedent(stages_yaml), "  ")
    (root / "assets" / f"{name}.yaml").write_text(spec)
    return root


def materialize(root: Path, partitions: list[str], selection: list[str] | None = None, instance=None) -> float:
    """Materialise partitions of the project's pipeline through Dagster; returns wall seconds."""
    import dagster as dg

    from dagster_llmdata import load_project

    defs = load_project(root)
    assets = list(defs.assets)
    name = assets[0].key.path[0]
    own = instance is None
    if own:
        instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(f"{name}_files", [p for p in partitions if not instance.has_dynamic_partition(f"{name}_files", p)])
    sel = dg.AssetSelection.assets(*[dg.AssetKey([name, s]) for s in selection]) if selection else None
    start = time.perf_counter()
    for p in partitions:
        result = dg.materialize(assets, partition_key=p, instance=instance, selection=sel, raise_on_error=True, resources=defs.resources)
        assert result.success
        failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
        assert not failed, failed
    return time.perf_counter() - start


def bench_args(**defaults) -> argparse.ArgumentParser:
    """A benchmark's command line: its own size options plus the executor's tasks and workers."""
    ap = argparse.ArgumentParser()
    for name, value in defaults.items():
        ap.add_argument(f"--{name}", type=type(value), default=value)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    return ap


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
