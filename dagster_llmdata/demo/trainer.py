"""`make train-demo`: a closed loop you can watch.

A small byte-level language model (an MLP over the previous 16 bytes, CPU torch) trains on the
demo's mixture (`sample_mix`), streaming it with MixtureDataset. Every `report_every` steps it
measures its loss on held-out windows of each domain and reports them to the feedback store;
`dagster dev` (webserver + daemon) runs the training-feedback sensor, which re-materialises the
mixture with ODM's new weights; the trainer picks up each new manifest at its current position
and records which version it consumed from which step. Then the same model trains for the same
steps on the uniform mixture, and the demo prints both target losses (the mean of the per-domain
held-out losses)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dagster_llmdata.errors import ManifestError
from dagster_llmdata.engine.datasets import dataset
from dagster_llmdata.mixture.feedback import open_store
from dagster_llmdata.mixture.manifest import Manifest, manifest_dir, read_manifest
from dagster_llmdata.mixture.reader import MixtureDataset
from dagster_llmdata.definitions import load_project
from dagster_llmdata.demo.dagster_dev import dagster_dev
from dagster_llmdata.mixture.mixture_asset import mixture_key
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.spec.project import read_project

CONTEXT = 16
BATCH = 32
EVAL_WINDOWS = 128
MIXTURE = "sample_mix"


@dataclass
class RunResult:
    name: str
    target_loss: float
    domain_losses: dict[str, float]
    versions: list[tuple[int, str]] = field(default_factory=list)  # (step, mixture version) consumed
    seconds: float = 0.0


def _windows(texts: list[bytes], n: int, rng: np.random.Generator) -> np.ndarray:
    """n windows of CONTEXT+1 bytes from the texts (short texts are padded with spaces)."""
    out = np.empty((n, CONTEXT + 1), dtype=np.int64)
    for k in range(n):
        t = texts[rng.integers(len(texts))]
        if len(t) <= CONTEXT + 1:
            t = t + b" " * (CONTEXT + 2 - len(t))
        start = rng.integers(len(t) - CONTEXT - 1)
        out[k] = np.frombuffer(t[start:start + CONTEXT + 1], dtype=np.uint8)
    return out


class ByteLM:
    """An MLP language model over bytes: embed the last CONTEXT bytes, two layers, next-byte logits."""

    def __init__(self, seed: int):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        nn = torch.nn
        self.model = nn.Sequential(nn.Embedding(256, 24), nn.Flatten(), nn.Linear(24 * CONTEXT, 256), nn.GELU(), nn.Linear(256, 256))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=3e-3)

    def step(self, batch: np.ndarray) -> float:
        t = self.torch.from_numpy(batch)
        loss = self.torch.nn.functional.cross_entropy(self.model(t[:, :-1]), t[:, -1])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss)

    def loss(self, batch: np.ndarray) -> float:
        with self.torch.no_grad():
            t = self.torch.from_numpy(batch)
            return float(self.torch.nn.functional.cross_entropy(self.model(t[:, :-1]), t[:, -1]))


def eval_sets(root: Path, manifest: Manifest, seed: int = 123) -> dict[str, np.ndarray]:
    """Held-out windows per domain, from the mixture's input data."""
    table = dataset(root, manifest.inputs[0]["dataset"]).to_table(columns=["text", manifest.inputs[0]["domain_column"]])
    by_domain: dict[str, list[bytes]] = {}
    for text, dom in zip(table.column(0).to_pylist(), table.column(1).to_pylist()):
        if text:
            by_domain.setdefault(dom or "unknown", []).append(text.encode("utf-8", "replace"))
    rng = np.random.default_rng(seed)
    return {d: _windows(texts, EVAL_WINDOWS, rng) for d, texts in sorted(by_domain.items()) if d in manifest.domains}


def train(name: str, root: Path, start: Manifest, steps: int, report_every: int, evals: dict[str, np.ndarray],
          run_id: str | None = None, on_report=None, seed: int = 0, store_path: Path | None = None, log=print) -> RunResult:
    """Train `steps` steps from `start`; with a run_id, report per-domain losses every
    `report_every` steps and, after each report, let `on_report(step)` return a newer manifest."""
    began = time.perf_counter()
    lm = ByteLM(seed)
    rng = np.random.default_rng(seed)
    manifest, position = start, 0
    # endless and uncapped: the demo trains for a fixed number of steps, whatever the data's size
    ds = MixtureDataset(manifest, columns=["text", "domain"], limit=0, epoch_cap=None)
    stream = iter(ds)
    store = open_store(store_path) if run_id and store_path else None
    versions = [(0, manifest.version)]
    if store:
        store.record_consumed(run_id, 0, manifest.mixture, manifest.version)
    losses: dict[str, float] = {}
    for step in range(1, steps + 1):
        texts = [next(stream)["text"].encode("utf-8", "replace") for _ in range(BATCH)]
        position += BATCH
        lm.step(_windows(texts, BATCH, rng))
        if step % report_every == 0 or step == steps:
            losses = {d: lm.loss(w) for d, w in evals.items()}
            target = float(np.mean(list(losses.values())))
            if store:
                res = store.report(run_id, step, losses, target_losses={"target": target}, mixture=manifest.mixture,
                                   mixture_version=manifest.version, source="train_demo")
                if res.rejected:
                    log(f"  feedback rejected: {res.rejected}")
            log(f"  [{name}] step {step:4d}  target {target:.4f}  " + "  ".join(f"{d} {v:.3f}" for d, v in losses.items())
                + f"  (mixture {manifest.version[:8]})")
            newer = on_report(step) if on_report else None
            if newer is not None and newer.version != manifest.version:
                manifest = newer
                # from the next sample on; every domain keeps its place in its own order
                ds.update(manifest, sample=position)
                ds.position = position
                stream = iter(ds)
                versions.append((step + 1, manifest.version))  # step `step` trained on the old one
                if store:
                    store.record_consumed(run_id, step + 1, manifest.mixture, manifest.version)
                log(f"  [{name}] step {step}: new mixture {manifest.version[:8]} from feedback: "
                    + ", ".join(f"{d}={w:.3f}" for d, w in manifest.weights.items()))
    if store:
        store.end_run(run_id)
    return RunResult(name, float(np.mean(list(losses.values()))), losses, versions, time.perf_counter() - began)


def uniform_manifest(root: Path, spec) -> Manifest:
    """The mixture with uniform weights, written apart from the mixture's own manifests."""
    uniform = spec.model_copy(update={"storage": "data/train_demo", "weights": {}, "algorithm": spec.algorithm.model_copy(update={"name": "static"})})
    return plan(uniform, root)


def wait_for_new_manifest(folder: Path, current: str, timeout: float, log=print):
    """Poll the mixture's latest manifest until its version differs from `current` (or time out)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            m = read_manifest(folder / "latest.json")
            if m.version != current:
                return m
        except ManifestError:
            pass
        time.sleep(1)
    log(f"  (no new mixture within {timeout:.0f}s; training on)")
    return None


def run_train_demo(root: Path, steps: int = 300, report_every: int = 50, dagster: bool = True, mixture: str = MIXTURE,
                   wait_s: float = 75.0, log=print) -> int:
    import warnings


    project = read_project(root)
    spec = project.specs.get("mixture", {}).get(mixture)
    if spec is None:
        log(f"no mixture {mixture!r} in {root / 'assets'}; run from the project root")
        return 2
    store_path = root / spec.feedback_store
    folder = manifest_dir((root / spec.storage).resolve(), mixture)
    if not (folder / "latest.json").exists():
        log("the demo's mixture has not been materialised yet: run `make demo` first")
        return 2
    warnings.simplefilter("ignore")
    start = uniform_manifest(root, spec)
    evals = eval_sets(root, start)
    run_id = f"train-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"training run {run_id}: {steps} steps of {BATCH} documents, per-domain losses reported every {report_every} steps")

    current_version = [read_manifest(folder / "latest.json").version]  # a newer one comes from the feedback sensor

    def await_feedback(step: int):  # the daemon's sensor may re-materialise the mixture now
        m = wait_for_new_manifest(folder, current_version[0], wait_s, log)
        if m is not None:
            current_version[0] = m.version
        return m

    if dagster:

        home = root / ".dagster_home"
        log("starting dagster dev (webserver + daemon, running the training-feedback sensor) ...")
        with dagster_dev(root, home, root / "data" / "train_demo" / "dagster_dev.log") as port:
            log(f"  UI: http://127.0.0.1:{port}  (asset {mixture}/mixture: weight history; {mixture}/training_run: observations)")
            adaptive = train("adaptive", root, start, steps, report_every, evals, run_id=run_id, on_report=await_feedback,
                             store_path=store_path, log=log)
        log("dagster dev stopped (process group killed)")
    else:
        adaptive = train("adaptive", root, start, steps, report_every, evals, run_id=run_id, store_path=store_path,
                         on_report=lambda step: _in_process_loop(root, mixture), log=log)
    uniform = train("uniform", root, start, steps, report_every, evals, log=log)
    log("")
    log(f"{'run':<10}{'target loss':>12}  mixture versions consumed (step: version)")
    for r in (uniform, adaptive):
        log(f"{r.name:<10}{r.target_loss:>12.4f}  " + ", ".join(f"{s}: {v[:8]}" for s, v in r.versions))
    log(f"uniform vs adaptive target loss: {uniform.target_loss:.4f} vs {adaptive.target_loss:.4f} "
        f"({(adaptive.target_loss / uniform.target_loss - 1) * 100:+.1f}%)")
    return 0


def _in_process_loop(root: Path, mixture: str) -> Any:
    """Without dagster dev: one sensor evaluation and, when it asks, the mixture materialised in process."""
    import dagster as dg


    defs = load_project(root)
    sensor = defs.resolve_sensor_def(f"{mixture}_feedback")
    instance = dg.DagsterInstance.get()
    with dg.build_sensor_context(instance=instance, cursor=_CURSOR.get("c"), definitions=defs) as ctx:
        result = sensor.evaluate_tick(ctx)
    _CURSOR["c"] = result.cursor or _CURSOR.get("c")
    newest = None
    job = dg.define_asset_job("train_demo_mixture", selection=[mixture_key(mixture)]).resolve(asset_graph=defs.resolve_asset_graph())
    for req in result.run_requests or []:
        out = job.execute_in_process(instance=instance, run_config=req.run_config, tags=req.tags, raise_on_error=False)
        if out.success:
            newest = read_manifest(out.get_asset_materialization_events()[0].materialization.metadata["manifest"].value)
    return newest


_CURSOR: dict[str, str | None] = {}  # the in-process loop's sensor cursor, across reports of one demo