"""Reproduce a mixture's sample stream from its manifest: every input checked against what the
manifest pinned (Parquet files by sha256, Lance tables at their tagged version by a digest of
their ids), then the stream rebuilt and its locators and ids compared with the manifest's digests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import ManifestError, ReproduceError
from dagster_llmdata.mixture.inputs import INPUT_KINDS
from dagster_llmdata.mixture.manifest import (
    Manifest,
    file_sha256,
    read_manifest,
    resolve_path,
    resolved_inputs,
    stream_digest,
)
from dagster_llmdata.mixture.plan import ids_stream_digest
from dagster_llmdata.mixture.reader import MixtureDataset, read_record
from dagster_llmdata.mixture.stream import STREAM_ORDER


def reproduce(manifest_path: str | Path, out: str | Path | None = None, limit: int | None = None,
              project: str | Path | None = None) -> dict[str, Any]:
    """Rebuild the stream of `manifest_path`. Returns {matches, n, stream_sha256, ids_sha256, ...};
    `out` also writes the first `limit` (default: the manifest's n_samples) samples as JSONL.
    Relative input paths resolve against `project` (default: the project the manifest lies in).
    Every pinned input is checked before anything is read: a ReproduceError lists each mismatch,
    one line each."""

    try:
        manifest = read_manifest(manifest_path, project)
        stream = manifest.stream or {}
        if not stream.get("n"):
            raise ReproduceError(f"{manifest_path}: the manifest records no stream digest to check against")
        if stream.get("order") != STREAM_ORDER:
            raise ReproduceError(f"{manifest_path}: its stream digest is of an older sample order (before order {STREAM_ORDER}); "
                                 "this version of llmdata draws in a different order: re-materialise the mixture")
        if problems := pinned_input_problems(manifest):
            raise ReproduceError("\n".join(problems))
        ds = MixtureDataset(manifest, check_files=False, columns=["id"], limit=stream["n"])
        locators = ds.locators(0, stream["n"])
        ids = [row["id"] for row in ds]
    except ManifestError as exc:
        raise ReproduceError(str(exc)) from None
    got = {"stream_sha256": stream_digest(locators), "ids_sha256": ids_stream_digest(ids)}
    want = {"stream_sha256": stream.get("sha256"), "ids_sha256": stream.get("ids_sha256")}
    checked = {k: v for k, v in want.items() if v}
    result: dict[str, Any] = {
        "manifest": str(manifest.path), "project": str(manifest.root or Path.cwd()), "mixture": manifest.mixture, "version": manifest.version, "n": stream["n"],
        **got, "matches": all(got[k] == v for k, v in checked.items()), "checked": sorted(checked),
        "inputs": [_describe(inp) for inp in manifest.inputs],
    }
    if out is not None:
        result["written"] = write_stream(manifest, Path(out), limit or manifest.n_samples)
    return result


def reproduce_run(record: str | Path, project: str | Path | None = None) -> dict[str, Any]:
    """Rebuild a training run's whole switched stream from its record (the first manifest, each
    switch at its sample, each checkpoint) and compare every recorded digest. Returns {matches,
    switches, checkpoints, mismatches}; the pinned inputs of every manifest are checked first."""
    try:
        entries = read_record(record)
        if not entries or "version" not in entries[0]:
            raise ReproduceError(f"{record}: not a run's switch record (no starting manifest)")
        switches = [e for e in entries if "checkpoint" not in e]
        manifests = [read_manifest(e["manifest"], project) for e in switches]
        for e, m in zip(switches, manifests):
            if m.version != e["version"]:
                raise ReproduceError(f"{e['manifest']} is manifest {m.version}; the record names {e['version']}")
        if problems := [p for m in {m.version: m for m in manifests}.values() for p in pinned_input_problems(m)]:
            raise ReproduceError("\n".join(problems))
        ds = MixtureDataset(manifests[0], check_files=False, limit=0)
        mismatches, checked = [], 0
        for e, m in zip(switches[1:], manifests[1:]):
            ds.update(m, sample=e["sample"])
        # each digest covers the stream before its sample: rebuilt with the whole history (a later
        # switch does not change samples before it)
        for e in entries[1:]:
            if e.get("digest"):
                checked += 1
                if ds.digest(e["sample"]) != e["digest"]:
                    mismatches.append(f"stream up to sample {e['sample']} ({'checkpoint' if 'checkpoint' in e else 'switch'} "
                                      f"at step {e.get('checkpoint', e.get('step'))}) differs")
    except ManifestError as exc:
        raise ReproduceError(str(exc)) from None
    return {"record": str(record), "matches": not mismatches, "digests_checked": checked, "mismatches": mismatches,
            "switches": [{k: e.get(k) for k in ("sample", "step", "version")} for e in switches],
            "checkpoints": [{k: e[k] for k in ("checkpoint", "sample")} for e in entries if "checkpoint" in e]}


def pinned_input_problems(manifest: Manifest) -> list[str]:
    """Every pinned input (Parquet files by size and sha256, Lance versions by tag, rows and id
    digest, the per-document weights file by sha256) checked, one line per mismatch."""
    problems = []
    for spec in resolved_inputs(manifest):
        reader = INPUT_KINDS.get(spec.get("kind"))
        if reader is None:
            problems.append(f"manifest input kind {spec.get('kind')!r} is not known here; known: {sorted(INPUT_KINDS)}")
            continue
        problems += reader(spec, ["id"]).problems(verify_hashes=True)
    if manifest.doc_weights:
        path = resolve_path(manifest, manifest.doc_weights["path"])
        if not path.is_file():
            problems.append(f"per-document weights file is gone: {path}")
        elif file_sha256(path) != manifest.doc_weights.get("sha256"):
            problems.append(f"{path} has changed since the manifest was written (sha256)")
    return problems


def write_stream(manifest, out: Path, limit: int) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in MixtureDataset(manifest, columns=["id", "text"], limit=limit, check_files=False):
            fh.write(json.dumps({"sample": row["_sample"], "domain": row["_domain"], "id": row["id"], "text": row.get("text")},
                                ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)
    return n


def _describe(inp: dict[str, Any]) -> dict[str, Any]:
    if inp.get("kind") == "lance":
        return {"kind": "lance", "dataset": inp["dataset"], "table": inp["table"], "version": inp["version"], "tag": inp.get("tag")}
    return {"kind": inp.get("kind", "parquet"), "dataset": inp.get("dataset"), "files": len(inp.get("files", []))}


__all__ = ["pinned_input_problems", "reproduce", "reproduce_run"]
