"""The mixture manifest: what a training run samples from, pinned exactly. One module reads and
writes it; `MANIFEST_SCHEMA` names its version.

```
schema        "llmdata.mixture/1"
mixture       mixture name;  version: hash of everything below except created_at and stream
seed, token_budget, n_samples (documents the stream yields for the budget)
epoch_cap     epochs a domain is read at most in the stream (null: no cap)
algorithm     {name, params, state}      feedback: {run_id, step} that triggered it, or null
domains       {domain: {weight, probability, docs, tokens, mean_tokens, tokens_planned, epochs}}
              weight = share of tokens, probability = per-document draw probability
inputs        [{kind: "parquet", dataset: "<pipeline>/<stage>", domain_column, tokens_column,
                files: [{path, sha256, bytes, rows, partition, data_version}]}]
              paths (and a Lance input's local uri) are relative to the project root, so a moved
              or copied project reproduces (`read_manifest(project=)`); older manifests hold
              absolute ones, read as they are
              (another input kind, e.g. a Lance table pinned at a version, adds its own fields and
              a row reader in inputs.INPUT_KINDS; `draw` addresses rows as (input, file, row))
draw          {domain: [[input, file, row_start, row_end], ...]}  the shard ranges drawn from
doc_weights   {path, sha256, rows} of a Parquet file (id, weight), or null
repetition    {domain: epochs} for domains the budget repeats;  warnings: [text]
stream        {n, sha256, ids_sha256, order}: digests of the first n sample locators and ids
              for `seed` (what reproduces); `order`: the sample order's version (stream.py)
```"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import ManifestError

MANIFEST_SCHEMA = "llmdata.mixture/1"
LATEST = "latest.json"
STREAM_DIGEST_SAMPLES = 1000
DEFAULT_EPOCH_CAP = 4  # repeated data stops paying after ~4 epochs (Muennighoff et al. 2023)


@dataclass
class Manifest:
    mixture: str
    seed: int
    token_budget: int
    n_samples: int
    algorithm: dict[str, Any]
    domains: dict[str, dict[str, Any]]
    inputs: list[dict[str, Any]]
    draw: dict[str, list[list[int]]]
    feedback: dict[str, Any] | None = None
    doc_weights: dict[str, Any] | None = None
    repetition: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stream: dict[str, Any] | None = None
    epoch_cap: int | None = DEFAULT_EPOCH_CAP
    created_at: float = field(default_factory=time.time)
    version: str = ""
    path: Path | None = None  # where it was read from / written to (not part of the manifest)
    root: Path | None = None  # the project its relative input paths resolve against (not part of it either)

    @property
    def weights(self) -> dict[str, float]:
        return {d: info["weight"] for d, info in self.domains.items()}

    @property
    def probabilities(self) -> dict[str, float]:
        return {d: info["probability"] for d, info in self.domains.items()}

    def body(self) -> dict[str, Any]:
        # a manifest without a cap has no `epoch_cap` key, so those written before it keep their version
        cap = {"epoch_cap": self.epoch_cap} if self.epoch_cap is not None else {}
        return cap | {"schema": MANIFEST_SCHEMA, "mixture": self.mixture, "seed": self.seed, "token_budget": self.token_budget,
                "n_samples": self.n_samples, "algorithm": self.algorithm, "feedback": self.feedback, "domains": self.domains,
                "inputs": self.inputs, "draw": self.draw, "doc_weights": self.doc_weights, "repetition": self.repetition,
                "warnings": self.warnings}

    def compute_version(self) -> str:
        return hashlib.sha256(_canonical(self.body()).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "version": self.version, "created_at": self.created_at, "stream": self.stream}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def stream_digest(locators: list[tuple[int, int, int]]) -> str:
    h = hashlib.sha256()
    for loc in locators:
        h.update(f"{loc[0]}:{loc[1]}:{loc[2]};".encode())
    return h.hexdigest()


def manifest_dir(storage: Path, mixture: str) -> Path:
    return storage / mixture / "manifests"


def write_manifest(manifest: Manifest, folder: Path, point_latest: bool = True) -> Path:
    """Write `<version>.json` and point `latest.json` at it (both atomically; `point_latest=False`:
    a manifest for one run only, which the mixture's latest stays without). The version is the
    content hash, so the same plan written twice is one file."""
    manifest.version = manifest.compute_version()
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest.to_dict(), indent=1, sort_keys=True, allow_nan=False)
    path = folder / f"{manifest.version}.json"
    for target in (path, folder / LATEST) if point_latest else (path,):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    manifest.path = path
    return path


def read_manifest(path: str | Path | dict, project: str | Path | None = None) -> Manifest:
    """A manifest from its file (or a folder holding latest.json, or an already-parsed dict).
    Its relative input paths resolve against `project`, by default the project the manifest
    lies in (the nearest folder above it with an assets/ folder), else the working directory."""
    if isinstance(path, dict):
        data, where = path, "<dict>"
    else:
        p = Path(path)
        if p.is_dir():
            p = p / LATEST if (p / LATEST).exists() else p / "manifests" / LATEST
        where = str(p)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {p}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{p} is not a manifest (invalid JSON at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(f"{where}: not a {MANIFEST_SCHEMA} manifest (schema {data.get('schema') if isinstance(data, dict) else None!r})")
    try:
        m = Manifest(
            mixture=data["mixture"], seed=int(data["seed"]), token_budget=int(data["token_budget"]), n_samples=int(data["n_samples"]),
            algorithm=data["algorithm"], domains=data["domains"], inputs=data["inputs"], draw=data["draw"],
            feedback=data.get("feedback"), doc_weights=data.get("doc_weights"), repetition=data.get("repetition") or {},
            warnings=data.get("warnings") or [], stream=data.get("stream"), created_at=float(data.get("created_at") or 0),
            version=data.get("version", ""),
            # a manifest from before the cap: its stream had none
            epoch_cap=data["epoch_cap"] if "epoch_cap" in data else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: manifest field missing or malformed: {exc}") from None
    if m.version and m.version != m.compute_version():
        raise ManifestError(f"{where}: content does not match its version {m.version} (edited by hand?)")
    if not isinstance(path, dict):
        m.path = Path(where)
    m.root = Path(project).resolve() if project is not None else project_of(m.path)
    return m


def project_of(path: Path | None) -> Path | None:
    """The nearest folder at or above `path` holding an assets/ folder (an llmdata project)."""
    if path is None:
        return None
    for folder in Path(path).resolve().parents:
        if (folder / "assets").is_dir():
            return folder
    return None


def pin_path(path: str | Path, root: Path) -> str:
    """How a manifest pins a local path: relative to the project root when inside it."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(p)


def input_path(root: Path | None, path: str) -> str:
    """A pinned input path (or LanceDB uri) as a place to read: object-store URIs and absolute paths
    as they are, relative ones under the project root `root` (None: the working directory)."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str((root or Path.cwd()) / path)


def resolve_input(inp: dict[str, Any], root: Path | None) -> dict[str, Any]:
    """A copy of a manifest input with its file paths (or its local Lance uri) made readable."""
    inp = dict(inp)
    if inp.get("kind") == "lance":
        inp["uri"] = input_path(root, inp["uri"])
    else:
        inp["files"] = [{**f, "path": input_path(root, f["path"])} for f in inp.get("files", [])]
    return inp


def resolved_inputs(manifest: Manifest) -> list[dict[str, Any]]:
    return [resolve_input(inp, manifest.root) for inp in manifest.inputs]


def resolve_path(manifest: Manifest, rel: str) -> Path:
    """Paths in a manifest are absolute, or relative to the manifest's folder."""
    p = Path(rel)
    if p.is_absolute() or manifest.path is None:
        return p
    return manifest.path.parent / p
