"""Plan a mixture: scan its input datasets (files, hashes, domains, tokens), settle the weights and
turn them into a manifest. No Dagster here; assets.py calls it inside the mixture asset."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import dagster_llmdata.mixture.algorithms as alg
from dagster_llmdata.engine.datasets import dataset_partitions
from dagster_llmdata.errors import MixtureError, RepetitionWarning, SpecError
from dagster_llmdata.io.parquet_store import write_table_atomic
from dagster_llmdata.mixture.inputs import INPUT_KINDS
from dagster_llmdata.mixture.manifest import (
    STREAM_DIGEST_SAMPLES,
    Manifest,
    file_sha256,
    manifest_dir,
    pin_path,
    resolve_input,
    stream_digest,
    write_manifest,
)
from dagster_llmdata.mixture.reader import MixtureDataset
from dagster_llmdata.mixture.regmix import read_proxy_runs, regmix
from dagster_llmdata.mixture.store_input import scan_lance_input
from dagster_llmdata.mixture.stream import STREAM_ORDER
from dagster_llmdata.spec.mixture import MixtureSpec
from dagster_llmdata.spec.pipeline import PipelineSpec

UNKNOWN_DOMAIN = "unknown"


@dataclass
class DomainScan:
    docs: int = 0
    tokens: int = 0
    ranges: list[list[int]] = field(default_factory=list)  # [input, file, row_start, row_end)


@dataclass
class InputScan:
    inputs: list[dict[str, Any]]
    domains: dict[str, DomainScan]


def scan_inputs(spec: MixtureSpec, root: Path, pipelines: dict[str, PipelineSpec] | None = None) -> InputScan:
    """Every finished partition file of every input, hashed, with its rows per domain as ranges."""
    inputs: list[dict[str, Any]] = []
    domains: dict[str, DomainScan] = {}
    for i, inp in enumerate(spec.inputs):
        if inp.kind == "lance":  # a LanceDB table pinned at a version (store/mixture_input.py)

            inputs.append(scan_lance_input(inp, i, root, pipelines, spec.mixture, domains, DomainScan))
            continue
        files = []
        for part in dataset_partitions(root, inp.dataset, pipelines=pipelines):
            for path in part.files:
                j = len(files)
                pf = pq.ParquetFile(path)
                files.append({"path": pin_path(path, root), "sha256": file_sha256(path), "bytes": Path(path).stat().st_size,
                              "rows": pf.metadata.num_rows, "partition": part.partition, "data_version": part.data_version})
                _scan_file(pf, i, j, inp.domain_column, inp.tokens_column, domains)
        inputs.append({"kind": inp.kind, "dataset": inp.dataset, "domain_column": inp.domain_column,
                       "tokens_column": inp.tokens_column, "files": files})
    return InputScan(inputs, domains)


def _scan_file(pf: pq.ParquetFile, i: int, j: int, domain_column: str, tokens_column: str | None, domains: dict[str, DomainScan]) -> None:
    names = pf.schema_arrow.names
    cols = [c for c in (domain_column, tokens_column if tokens_column in names else "text") if c in names]
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=65536):
        n = batch.num_rows
        dom = batch.column(domain_column).to_pylist() if domain_column in names else [None] * n
        if tokens_column in names:
            tok = pc.fill_null(batch.column(tokens_column), 0).to_pylist()
        elif "text" in names:  # no token counts: about 4 bytes a token
            tok = [math.ceil(b / 4) for b in pc.fill_null(pc.binary_length(batch.column("text")), 0).to_pylist()]
        else:
            tok = [0] * n
        for k in range(n):
            d = dom[k] or UNKNOWN_DOMAIN
            s = domains.setdefault(d, DomainScan())
            s.docs += 1
            s.tokens += int(tok[k])
            if s.ranges and s.ranges[-1][0] == i and s.ranges[-1][1] == j and s.ranges[-1][3] == row + k:
                s.ranges[-1][3] += 1  # extend the run
            else:
                s.ranges.append([i, j, row + k, row + k + 1])
        row += n


def settle_weights(weights: Mapping[str, float], scan: InputScan, domains: list[str], problems: list[str]) -> dict[str, float]:
    """Weights over `domains`, normalised: weights of empty domains move to the others, weights
    that did not sum to 1 are rescaled (both noted in `problems`)."""
    w = {d: float(weights.get(d, 0.0)) for d in domains}
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        problems.append(f"weights for domains not in the mixture ignored: {unknown}")
    empty = [d for d in domains if w[d] > 0 and scan.domains.get(d, DomainScan()).docs == 0]
    if empty:
        problems.append(f"domains with weight but no documents get weight 0: {empty}")
        for d in empty:
            w[d] = 0.0
    total = sum(w.values())
    if total <= 0:
        raise MixtureError(f"no domain with both weight and documents (weights {dict(weights)}, "
                               f"documents {({d: scan.domains[d].docs for d in scan.domains})})")
    if abs(total - 1) > 1e-6 and not empty:
        problems.append(f"weights summed to {total:.6g}; normalised to 1")
    return alg.normalise(w, domains)


def cap_epochs(weights: Mapping[str, float], tokens: Mapping[str, int], budget: int, cap: int | None) -> tuple[dict[str, float], int]:
    """Token shares with no domain planned beyond `cap` epochs of its tokens: a capped domain's
    excess goes to the uncapped ones in proportion to their weights (repeatedly, as that can cap
    them too). Returns the shares and the tokens of the budget no domain can take (0 unless every
    domain with weight is capped)."""
    w = {d: float(v) for d, v in weights.items()}
    if cap is None:
        return w, 0
    limit = {d: cap * tokens.get(d, 0) / budget for d in w}
    fixed: dict[str, float] = {}
    while True:
        free = {d: v for d, v in w.items() if d not in fixed and v > 0}
        room = 1.0 - sum(fixed.values())
        total = sum(free.values())
        if not free or total <= 0:
            break
        scaled = {d: v / total * room for d, v in free.items()}
        over = {d for d, v in scaled.items() if v > limit[d] + 1e-12}
        if not over:
            fixed.update(scaled)
            break
        fixed.update({d: limit[d] for d in over})
    out = {d: fixed.get(d, 0.0) for d in w}
    covered = sum(out.values())
    short = max(0, round((1.0 - covered) * budget))
    return (alg.normalise(out) if covered > 0 else out), short


def initial_weights(spec: MixtureSpec, root: Path, scan: InputScan, domains: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """The weights the spec's algorithm gives before any feedback, and the algorithm's state."""
    name, params = spec.algorithm.name, spec.algorithm.params
    tokens = {d: scan.domains.get(d, DomainScan()).tokens for d in domains}
    nonempty = {d: 1.0 for d in domains if tokens[d] > 0 or scan.domains.get(d, DomainScan()).docs > 0}
    prior = spec.weights or params.get("weights") or nonempty or {d: 1.0 for d in domains}
    if name == "temperature":
        w = alg.temperature_weights(tokens, float(params.get("temperature", 1.0)))
        return w, {"algorithm": name, "temperature": float(params.get("temperature", 1.0)), "weights": w}
    if name == "regmix":

        for key in ("mixtures", "losses", "target"):
            if key not in params:
                raise MixtureError(f"regmix needs params.{key}")
        runs = read_proxy_runs(root / params["mixtures"], root / params["losses"], params["target"])
        missing = sorted(set(domains) - set(runs.domains))
        if missing:
            raise MixtureError(f"regmix proxy runs have no column for domains {missing}")
        token_prior = alg.temperature_weights({d: tokens.get(d, 0) for d in runs.domains}) if any(tokens.values()) else None
        result = regmix(runs, prior=token_prior, top_k=int(params.get("top_k", 100)), n_samples=int(params.get("n_samples", 20000)),
                        seed=spec.seed)
        return result.weights, result.state
    w = alg.static_weights(domains, {d: v for d, v in prior.items() if d in domains} or None)
    return w, alg.init_state(name, domains, w)


def plan_manifest(spec: MixtureSpec, root: Path, scan: InputScan, weights: Mapping[str, float] | None = None,
                  state: dict[str, Any] | None = None, feedback: dict[str, Any] | None = None,
                  doc_weights: Mapping[str, float] | None = None) -> Manifest:
    """Weights (given, or the spec algorithm's initial ones) -> a manifest with per-domain draw
    probabilities, the document count for the budget, repetition and warnings; written under
    the mixture's storage, with the stream digest."""
    domains = list(spec.domains) if spec.domains else sorted(scan.domains)
    if not domains:
        raise MixtureError(f"mixture {spec.mixture!r}: its inputs hold no documents")
    problems: list[str] = []
    if weights is None and spec.weights and abs(sum(spec.weights.values()) - 1) > 1e-6:
        problems.append(f"weights summed to {sum(spec.weights.values()):.6g}; normalised to 1")
    if weights is None:
        weights, state = initial_weights(spec, root, scan, domains)
    weights = settle_weights(weights, scan, domains, problems)
    asked = dict(weights)
    weights, short = cap_epochs(weights, {d: scan.domains.get(d, DomainScan()).tokens for d in domains}, spec.token_budget,
                                spec.epoch_cap)
    capped = sorted(d for d in domains if weights[d] < asked[d] - 1e-12)
    if capped:
        problems.append(f"{', '.join(capped)} capped at {spec.epoch_cap} epochs (epoch_cap): their share of the budget beyond "
                        f"that goes to the other domains, in proportion"
                        + (f"; every domain is capped, so the stream ends {short} tokens short of the budget" if short else ""))
    info: dict[str, dict[str, Any]] = {}
    for d in domains:
        s = scan.domains.get(d, DomainScan())
        mean = s.tokens / s.docs if s.docs else 0.0
        info[d] = {"weight": weights[d], "docs": s.docs, "tokens": s.tokens, "mean_tokens": mean}
        if d in capped:
            info[d]["weight_asked"] = asked[d]
    doc_mean = _mean_doc_weight(scan, domains, doc_weights, root) if doc_weights else {}
    if doc_mean:
        for d in domains:
            info[d]["mean_doc_weight"] = doc_mean.get(d, 1.0)
    budget = spec.token_budget - short  # what the capped data can give
    probs, n_samples, repetition = draw_plan(info, budget)
    if repetition:
        text = "token budget exceeds the data of " + ", ".join(f"{d} ({e:.2f} epochs)" for d, e in sorted(repetition.items()))
        problems.append(text)
        warnings.warn(text, RepetitionWarning, stacklevel=2)
    folder = manifest_dir((root / spec.storage).resolve(), spec.mixture)
    manifest = Manifest(
        mixture=spec.mixture, seed=spec.seed, token_budget=spec.token_budget, n_samples=n_samples,
        algorithm={"name": spec.algorithm.name, "params": spec.algorithm.params, "state": state or {}},
        domains=info, inputs=scan.inputs, draw={d: scan.domains[d].ranges for d in domains if d in scan.domains and probs[d] > 0},
        feedback=feedback, repetition=repetition, warnings=problems, epoch_cap=spec.epoch_cap,
    )
    if doc_weights:
        manifest.doc_weights = write_doc_weights(folder, doc_weights)
    manifest.path = folder / "pending.json"  # so the reader resolves doc_weights before the manifest is written
    manifest.root = Path(root).resolve()  # and its inputs' paths, pinned relative to the project root
    manifest.stream = compute_stream(manifest)
    write_manifest(manifest, folder)
    return manifest


def draw_plan(info: dict[str, dict[str, Any]], budget: int) -> tuple[dict[str, float], int, dict[str, float]]:
    """Per-domain draw probabilities from the token shares in `info` (weight, mean_tokens, tokens,
    mean_doc_weight), the documents the stream yields for `budget` tokens and the domains it
    repeats. A domain's share of documents is its share of tokens over its mean document length;
    with per-document weights, also its documents' mean weight (a domain of learned or noisy
    documents gives way to the others, not only within itself). Fills in each domain's
    probability, tokens_planned and epochs."""
    domains = list(info)
    raw = {d: (i["weight"] * i.get("mean_doc_weight", 1.0) / max(i["mean_tokens"], 1e-9)) if i["weight"] > 0 else 0.0
           for d, i in info.items()}
    probs = alg.normalise(raw, domains)
    tokens_per_sample = sum(probs[d] * info[d]["mean_tokens"] for d in domains)
    n_samples = max(1, math.ceil(budget / max(tokens_per_sample, 1e-9)))
    repetition = {}
    for d in domains:
        planned = info[d]["weight"] * budget
        epochs = planned / info[d]["tokens"] if info[d]["tokens"] else 0.0
        info[d].update(probability=probs[d], tokens_planned=round(planned), epochs=epochs)
        if epochs > 1:
            repetition[d] = round(epochs, 4)
    return probs, n_samples, repetition


def _mean_doc_weight(scan: InputScan, domains: list[str], weights: Mapping[str, float], root: Path) -> dict[str, float]:
    """Mean per-document weight of each domain's documents (1 for a document without one)."""
    readers = [INPUT_KINDS[inp.get("kind", "parquet")](resolve_input(inp, root), ["id"]) for inp in scan.inputs]
    out = {}
    for d in domains:
        total, n = 0.0, 0
        for i, j, lo, hi in scan.domains.get(d, DomainScan()).ranges:
            for row in readers[i].rows(j, list(range(lo, hi))):
                doc_id = row["id"]
                total += weights.get(doc_id, 1.0)
                n += 1
        if n:
            out[d] = total / n
    return out


def write_doc_weights(folder: Path, weights: Mapping[str, float]) -> dict[str, Any]:
    """Per-document weights as a Parquet file (id, weight) named by its content."""
    ids = sorted(weights)
    table = pa.table({"id": pa.array(ids, pa.string()), "weight": pa.array([float(weights[i]) for i in ids], pa.float64())})
    digest = hashlib.sha256("\n".join(f"{i}\t{weights[i]!r}" for i in ids).encode()).hexdigest()[:16]
    name = f"doc_weights-{digest}.parquet"
    path = folder / name
    if not path.exists():
        write_table_atomic(table, path)
    return {"path": name, "sha256": file_sha256(path), "rows": len(ids)}


def compute_stream(manifest: Manifest) -> dict[str, Any]:
    n = min(STREAM_DIGEST_SAMPLES, manifest.n_samples)
    ds = MixtureDataset(manifest, check_files=False)
    # and of the documents they are: `llmdata reproduce` checks the same ids come out in the same order
    ids = MixtureDataset(manifest, check_files=False, columns=["id"], limit=n)
    return {"n": n, "sha256": stream_digest(ds.locators(0, n)), "ids_sha256": ids_stream_digest(row["id"] for row in ids),
            "order": STREAM_ORDER}


def ids_stream_digest(ids) -> str:
    h = hashlib.sha256()
    for doc_id in ids:
        h.update(f"{doc_id}\n".encode())
    return h.hexdigest()


def plan(spec: MixtureSpec, root: Path, pipelines: dict[str, PipelineSpec] | None = None, **kwargs) -> Manifest:
    """Scan + plan in one call (what `llmdata mixture plan` and tests use)."""
    try:
        scan = scan_inputs(spec, root, pipelines)
    except SpecError as exc:
        raise MixtureError(str(exc)) from None
    return plan_manifest(spec, root, scan, **kwargs)
