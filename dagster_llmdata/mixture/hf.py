"""A Hugging Face `TrainerCallback` that reports per-domain losses to the feedback store.

`Trainer(eval_dataset={"code": ..., "prose": ...})` logs `eval_<name>_loss` per evaluation set;
the callback turns every logged metric matching `pattern` (default: that, or `loss/<domain>`) into
feedback for the step, and the run's end (or crash) into the run's status. transformers is
imported only when the callback is built."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from dagster_llmdata.mixture.feedback import DEFAULT_STORE, FeedbackStore, open_store

DEFAULT_PATTERN = r"^(?:eval_(?P<domain>.+)_loss|loss/(?P<domain2>.+))$"


def feedback_callback(run_id: str, store: str | Path | FeedbackStore = DEFAULT_STORE, mixture: str | None = None,
                      mixture_version: str | None = None, pattern: str = DEFAULT_PATTERN, target_domain: str | None = None):
    """A `transformers.TrainerCallback` reporting matching logged losses as per-domain feedback.
    `target_domain`: the eval set whose loss is also reported as the target loss."""
    from transformers import TrainerCallback

    fs = store if isinstance(store, FeedbackStore) else open_store(store)
    rx = re.compile(pattern)

    class FeedbackCallback(TrainerCallback):
        """Reports per-domain losses from `on_log` / `on_evaluate` to the llmdata feedback store."""

        def __init__(self):
            self.results: list[Any] = []

        def _report(self, state, logs: dict[str, Any] | None) -> None:
            losses = {}
            for key, value in (logs or {}).items():
                m = rx.match(key)
                if m and isinstance(value, (int, float)):
                    losses[next(g for g in m.groups() if g)] = float(value)
            if not losses:
                return
            targets = {"target": losses[target_domain]} if target_domain in losses and math.isfinite(losses[target_domain]) else None
            self.results.append(fs.report(run_id, int(state.global_step), losses, target_losses=targets, mixture=mixture,
                                          mixture_version=mixture_version, source="hf_trainer"))

        def on_log(self, args, state, control, logs=None, **kwargs):
            self._report(state, logs)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self._report(state, metrics)

        def on_train_end(self, args, state, control, **kwargs):
            fs.end_run(run_id, "finished")

    return FeedbackCallback()
