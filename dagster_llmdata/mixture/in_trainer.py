"""In-run mixture switching inside the trainer: the algorithm runs in the training process every
`update_step` steps from per-domain losses (of the training batches or of an eval set) and the
reader switches to the new weights at a batch fixed by rule, never by timing.

The rule: after `step` training steps (`step * gradient_accumulation` batches), a DataLoader with
N workers and prefetch factor P may already have built the next N * P batches (and a wrapper that
reads one batch ahead, as accelerate's does, one more), so the new weights apply from batch
`batches_done + N * P + lookahead`, rounded up to a whole optimiser step. Two runs with the same
configuration and losses switch at the same batches to the same manifests.

`MixtureUpdater` is the plain-loop helper; `mixture_callback` (Hugging Face `Trainer`) and
`lightning_mixture_callback` (PyTorch Lightning) drive it. The reader must have a switch record
(`MixtureDataset(..., record=run_record(...))`): that is how a running iterator and the
DataLoader's workers learn of a switch. `on_switch(entry, manifest)` is called with each history
entry, e.g. `mixture.switch_record.switch_recorder(...)` to record the version as a Dagster
materialisation. With several ranks every rank must observe the same losses (the Trainer's eval
metrics are; reduce training-batch losses across ranks before `observe`) and only rank 0 should
record (`on_switch` runs on every rank)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster_llmdata.mixture.algorithms as alg
from dagster_llmdata.errors import MixtureError
from dagster_llmdata.mixture.manifest import Manifest, read_manifest
from dagster_llmdata.mixture.reweigh import with_weights

UPDATER_FILE = "mixture_updater.json"  # in each HF checkpoint folder: the updater's and the reader's state
TORCH_PREFETCH_DEFAULT = 2  # torch's DataLoader prefetch_factor when workers are used and none is given


def first_safe_batch(batches_done: int, num_workers: int = 0, prefetch_factor: int | None = None,
                     lookahead: int = 0, gradient_accumulation: int = 1) -> int:
    """The first batch no DataLoader worker can have built yet (see the module docstring), at an
    optimiser-step boundary."""
    ahead = num_workers * (prefetch_factor if prefetch_factor is not None else TORCH_PREFETCH_DEFAULT) if num_workers else 0
    batch = batches_done + ahead + lookahead
    ga = max(1, int(gradient_accumulation))
    return -(-batch // ga) * ga


class MixtureUpdater:
    """Run a mixture algorithm in the training loop and switch `ds` (a `MixtureDataset` with a
    `record`) to its weights. `algorithm`: "doremi" or "odm" (or any name `algorithms.online_update`
    knows); `params`: its settings (DoReMi: `reference_losses`, `eta`, `smoothing`; ODM:
    `reward_scale`, `smoothing`). `loader`: the torch DataLoader over `ds`, for its workers and
    prefetch factor (or give `num_workers`, `prefetch_factor`). `observe(step, losses)` after each
    training step; updates at steps `update_step`, 2 * `update_step`, ... from `warmup_step` on."""

    def __init__(self, ds: Any, algorithm: str, params: Mapping[str, Any] | None = None, update_step: int = 50,
                 warmup_step: int = 0, loader: Any = None, on_switch: Callable[[dict, Manifest], Any] | None = None,
                 num_workers: int | None = None, prefetch_factor: int | None = None, gradient_accumulation: int = 1,
                 lookahead: int = 0):
        if update_step < 1:
            raise MixtureError(f"update_step must be >= 1, got {update_step}")
        if warmup_step < 0:
            raise MixtureError(f"warmup_step must be >= 0, got {warmup_step}")
        if getattr(ds, "record", None) is None:
            raise MixtureError("MixtureUpdater needs a MixtureDataset with record= (the run's switch record, "
                               "mixture.reader.run_record): without it a running DataLoader never sees a switch")
        self.ds, self.algorithm, self.params = ds, algorithm, dict(params or {})
        self.update_step, self.warmup_step = int(update_step), int(warmup_step)
        self.on_switch = on_switch
        if loader is not None:
            num_workers = loader.num_workers if num_workers is None else num_workers
            prefetch_factor = loader.prefetch_factor if prefetch_factor is None else prefetch_factor
        self.num_workers, self.prefetch_factor = int(num_workers or 0), prefetch_factor
        self.gradient_accumulation, self.lookahead = max(1, int(gradient_accumulation)), int(lookahead)
        m = ds.manifest
        self.domains = [d for d in m.domains if m.draw.get(d)]  # only pinned domains can get weight
        self.state = alg.init_state(algorithm, self.domains, {d: m.domains[d]["weight"] for d in self.domains})
        # (first batch, manifest): what each batch is drawn with, for ODM's real sampling probability
        self.schedule: list[tuple[int, Manifest]] = [(0, m)]
        self.history: list[dict[str, Any]] = []
        self._window: dict[str, list[Any]] = {}
        self._reference: dict[str, list[Any]] = {}
        self._next = max(self.update_step, -(-self.warmup_step // self.update_step) * self.update_step)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that resumes the updater exactly (save it with the checkpoint,
        beside `ds.state_dict(step=)`): the algorithm state, history, switch schedule and the
        losses gathered since the last update."""
        return {"algorithm": self.algorithm, "state": self.state, "history": self.history, "next": self._next,
                "schedule": [{"batch": b, "version": m.version, "manifest": str(m.path) if m.path else None} for b, m in self.schedule],
                "window": self._window, "reference": self._reference}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["algorithm"] != self.algorithm:
            raise MixtureError(f"the saved updater ran {state['algorithm']!r}, this one runs {self.algorithm!r}")
        known = {seg.manifest.version: seg.manifest for seg in getattr(self.ds, "segments", [])}
        schedule = []
        for s in state["schedule"]:
            m = known.get(s["version"]) or read_manifest(s["manifest"], getattr(self.ds, "project", None))
            if m.version != s["version"]:
                raise MixtureError(f"{s['manifest']} is manifest {m.version}, the saved updater names {s['version']}")
            schedule.append((int(s["batch"]), m))
        self.schedule, self.state, self._next = schedule, dict(state["state"]), int(state["next"])
        self.history = [dict(h) for h in state["history"]]
        self._window = {d: list(v) for d, v in state["window"].items()}
        self._reference = {d: list(v) for d, v in state["reference"].items()}

    def observe(self, step: int, losses: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Per-domain losses after `step` training steps (a mean, or per-token losses for DoReMi;
        `reference`: the reference model's, for DoReMi). Runs the algorithm when an update is due
        and returns the switch's history entry, else None."""
        step = int(step)
        if step < self.warmup_step:
            return None
        unknown = sorted(set(losses) - set(self.domains))
        if unknown:
            raise MixtureError(f"losses for domains {unknown} this mixture does not draw from; known: {self.domains}")
        for target, given in ((self._window, losses), (self._reference, reference or {})):
            for d, v in given.items():
                if isinstance(v, (list, tuple)) or hasattr(v, "tolist") and getattr(v, "ndim", 0) > 0:
                    target.setdefault(d, []).extend(float(x) for x in (v.tolist() if hasattr(v, "tolist") else v))
                else:
                    v = float(v)
                    if math.isfinite(v):  # a NaN batch loss (e.g. an empty domain) says nothing
                        target.setdefault(d, []).append(v)
        if step < self._next or not self._window:
            return None
        return self._update(step)

    def _mean_or_tokens(self, values: dict[str, list[float]], per_token: bool) -> dict[str, Any]:
        return {d: (v if per_token else sum(v) / len(v)) for d, v in values.items() if v}

    def drawn_with(self, batch: int) -> Manifest:
        return [m for start, m in self.schedule if start <= batch][-1]

    def _update(self, step: int) -> dict[str, Any]:
        per_token = self.algorithm == "doremi" and bool(self._reference)
        losses = self._mean_or_tokens(self._window, per_token)
        params = {**self.params, "step": step}
        if self._reference:
            params["reference_losses"] = self._mean_or_tokens(self._reference, per_token)
        batches_done = step * self.gradient_accumulation
        current = self.drawn_with(max(batches_done - 1, 0))
        if self.algorithm == "odm" and "probabilities" not in self.params:
            # the probability a sample was actually drawn from each domain, not its token share
            params["probabilities"] = {d: current.domains[d]["probability"] for d in losses}
        self.state = alg.online_update(self.algorithm, self.state, losses, params)
        weights = alg.weights_out(self.state)
        new = with_weights(current, weights, feedback={"step": step, "losses": losses},
                           algorithm={"name": self.algorithm, "params": self.params, "state": self.state})
        batch = first_safe_batch(batches_done, self.num_workers, self.prefetch_factor, self.lookahead, self.gradient_accumulation)
        switched = self.ds.update(new, step=batch)
        self.schedule.append((batch, new))
        entry = {"step": step, "applies_from_step": batch // self.gradient_accumulation, "applies_from_batch": batch,
                 "sample": switched["sample"], "version": new.version, "weights": weights, "losses": losses}
        if (avg := alg.average_out(self.state)) is not None:
            entry["average_weights"] = avg
        self.history.append(entry)
        self._window, self._reference = {}, {}
        self._next = (step // self.update_step + 1) * self.update_step
        if self.on_switch is not None:
            self.on_switch(entry, new)
        return entry


def logged_domain_losses(logs: Mapping[str, Any], domains: list[str]) -> dict[str, float]:
    """Per-domain losses in a trainer's logs: `eval_<domain>_loss` (the Trainer's eval over a dict
    of per-domain eval sets) or `loss/<domain>` (training-batch losses the trainer logs)."""
    out = {}
    for d in domains:
        for key in (f"eval_{d}_loss", f"loss/{d}"):
            if key in logs and logs[key] is not None:
                out[d] = float(logs[key])
                break
    return out


def mixture_callback(ds: Any, algorithm: str, params: Mapping[str, Any] | None = None, update_step: int = 50,
                     warmup_step: int = 0, on_switch: Callable[[dict, Manifest], Any] | None = None, lookahead: int = 1):
    """A Hugging Face `TrainerCallback` that feeds the logged per-domain losses to a
    `MixtureUpdater` over `ds`. Workers, prefetch factor and gradient accumulation come from the
    TrainingArguments; `lookahead=1` covers accelerate's loader, which fetches one batch ahead.
    The updater is the callback's `.updater` once training begins. Each checkpoint gets the
    updater's state (and the reader's) in `mixture_updater.json`; `resume_from_checkpoint` takes
    it back. The resumed Trainer skips the batches already trained by reading them again, so give
    it a reader at position 0 over the same switch record (which holds the switches made before)."""
    from transformers import TrainerCallback

    class MixtureCallback(TrainerCallback):
        def __init__(self):
            self.updater: MixtureUpdater | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            fresh = self.updater is None
            if fresh:
                self.updater = MixtureUpdater(
                    ds, algorithm, params, update_step=update_step, warmup_step=warmup_step, on_switch=on_switch,
                    num_workers=args.dataloader_num_workers, prefetch_factor=args.dataloader_prefetch_factor,
                    gradient_accumulation=args.gradient_accumulation_steps, lookahead=lookahead)
            if fresh and state.global_step > 0:  # resumed from a checkpoint: take the updater's state saved in it
                saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / UPDATER_FILE
                if saved.exists():
                    self.updater.load_state_dict(json.loads(saved.read_text(encoding="utf-8"))["updater"])

        def on_save(self, args, state, control, **kwargs):
            if self.updater is None:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            batches = state.global_step * args.gradient_accumulation_steps
            body = {"updater": self.updater.state_dict(), "reader": ds.state_dict(step=batches)}
            (folder / UPDATER_FILE).write_text(json.dumps(body, sort_keys=True), encoding="utf-8")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.updater is None or not logs:
                return
            losses = logged_domain_losses(logs, self.updater.domains)
            if losses:
                self.updater.observe(state.global_step, losses)

    return MixtureCallback()


def lightning_mixture_callback(ds: Any, algorithm: str, params: Mapping[str, Any] | None = None, update_step: int = 50,
                               warmup_step: int = 0, on_switch: Callable[[dict, Manifest], Any] | None = None,
                               loader: Any = None, lookahead: int = 1):
    """A PyTorch Lightning callback (`lightning` or `pytorch_lightning`) that feeds per-domain
    losses to a `MixtureUpdater` after each optimiser step: `training_step`'s returned
    `{"loss": ..., "domain_losses": {domain: loss}}`, else what the LightningModule logs as
    `loss/<domain>` (or `eval_<domain>_loss`) in `trainer.callback_metrics`.
    `loader`: the train DataLoader (default: the trainer's); `lookahead=1`: Lightning's fetcher reads
    one batch ahead."""
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            raise MixtureError("lightning_mixture_callback needs `lightning` or `pytorch_lightning` "
                               "(pip install 'dagster-llmdata[train]')") from None

    class LightningMixtureCallback(pl.Callback):
        def __init__(self):
            self.updater: MixtureUpdater | None = None

        def on_train_start(self, trainer, pl_module):
            if self.updater is None:
                dl = loader if loader is not None else trainer.train_dataloader
                self.updater = MixtureUpdater(ds, algorithm, params, update_step=update_step, warmup_step=warmup_step,
                                              on_switch=on_switch, loader=dl, lookahead=lookahead,
                                              gradient_accumulation=trainer.accumulate_grad_batches)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.updater is None:
                return
            # optimiser steps done: (batch_idx + 1) // accumulation within the epoch, but Lightning
            # counts them globally in global_step (updated before this hook)
            if (batch_idx + 1) % self.updater.gradient_accumulation:
                return
            if isinstance(outputs, Mapping) and isinstance(outputs.get("domain_losses"), Mapping):
                given = outputs["domain_losses"]  # this step's own per-domain losses
                losses = {d: float(v.item() if hasattr(v, "item") else v) for d, v in given.items()}
            else:
                metrics = {k: v.item() if hasattr(v, "item") else v for k, v in trainer.callback_metrics.items()}
                losses = logged_domain_losses(metrics, self.updater.domains)
            if losses:
                self.updater.observe(trainer.global_step, losses)

    return LightningMixtureCallback()
