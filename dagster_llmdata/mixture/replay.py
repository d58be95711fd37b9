"""Replay a feedback file through an online mixture algorithm (`llmdata mixture update`).

A feedback file is JSON lines, one report per line:
`{"step": N, "losses": {domain: loss}, "reference": {domain: loss}, "probabilities": {domain: p}}`.
A loss is a number (the domain's mean loss) or a list of per-token losses (DoReMi then clips
each token's excess, as in the paper); `reference` is DoReMi's reference model's losses, of the
same shape; `probabilities` (ODM) are the probabilities the sampled domains were drawn with,
defaulting to the weights the previous report produced. Every line is one update (one EXP3
round for ODM). Errors name the file and line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import MixtureError
import dagster_llmdata.mixture.algorithms as alg

# what each algorithm takes from --params (typos are errors, not silently default values)
PARAMS = {"doremi": {"eta", "smoothing"}, "odm": {"reward_scale", "smoothing"}}
ALGORITHMS = tuple(PARAMS)


@dataclass
class Report:
    line: int
    step: int
    losses: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)
    probabilities: dict[str, float] | None = None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _loss_map(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise MixtureError(f"{where}: `{key}` must be a non-empty object {{domain: loss}}")
    for d, v in value.items():
        ok = _number(v) or (isinstance(v, list) and v and all(_number(x) for x in v))
        if not ok:
            raise MixtureError(f"{where}: {key}[{d!r}] must be a finite number or a non-empty list of finite numbers, got {v!r}")
    return dict(value)


def read_feedback(path: str | Path) -> list[Report]:
    """The reports of a feedback file, in order; a malformed line is an error naming file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MixtureError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MixtureError(f"{path}: not UTF-8 text") from None
    reports: list[Report] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise MixtureError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise MixtureError(f"{where}: expected a JSON object with step and losses")
        unknown = sorted(set(obj) - {"step", "losses", "reference", "probabilities"})
        if unknown:
            raise MixtureError(f"{where}: unknown keys {unknown} (allowed: step, losses, reference, probabilities)")
        step = obj.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise MixtureError(f"{where}: `step` must be an integer >= 0, got {step!r}")
        if reports and step <= reports[-1].step:
            raise MixtureError(f"{where}: step {step} is not after the previous report's step {reports[-1].step}")
        losses = _loss_map(obj.get("losses"), "losses", where)
        reference = _loss_map(obj["reference"], "reference", where) if obj.get("reference") is not None else {}
        probs = obj.get("probabilities")
        if probs is not None:
            if not isinstance(probs, dict) or not all(_number(v) and 0 < v <= 1 for v in probs.values()):
                raise MixtureError(f"{where}: `probabilities` must be an object {{domain: p}} with 0 < p <= 1")
            probs = {d: float(v) for d, v in probs.items()}
        reports.append(Report(n, step, losses, reference, probs))
    if not reports:
        raise MixtureError(f"{path}: no feedback lines")
    return reports


def _start_state(algorithm: str, state: dict[str, Any] | None, reports: list[Report]) -> dict[str, Any]:
    if state is None:
        domains: list[str] = []
        for r in reports:
            domains += [d for d in r.losses if d not in domains]
        return alg.init_state(algorithm, domains, {d: 1.0 for d in domains})
    state = state.get("state", state) if isinstance(state, dict) else state  # a previous run's whole output works too
    if not isinstance(state, dict) or "domains" not in state or "weights" not in state:
        raise MixtureError("the state must be a JSON object with domains and weights (the `state` this command printed)")
    if state.get("algorithm") != algorithm:
        raise MixtureError(f"the state is {state.get('algorithm')!r}'s, not {algorithm!r}'s")
    return state


def replay(algorithm: str, reports: list[Report], params: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
           source: str = "feedback") -> dict[str, Any]:
    """Apply every report in order; returns {"weights", "average_weights"?, "state"}."""
    if algorithm not in PARAMS:
        raise MixtureError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    params = dict(params or {})
    unknown = sorted(set(params) - PARAMS[algorithm])
    if unknown:
        raise MixtureError(f"{algorithm} takes params {sorted(PARAMS[algorithm])}, not {unknown}")
    bad = {k: v for k, v in params.items() if not _number(v)}
    if bad:
        raise MixtureError(f"params must be numbers: {bad}")
    s = _start_state(algorithm, state, reports)
    for r in reports:
        extra: dict[str, Any] = {"step": r.step}
        if algorithm == "doremi":
            if not r.reference:
                raise MixtureError(f"{source}:{r.line}: DoReMi needs `reference` losses (the reference model's) on every line")
            extra["reference_losses"] = r.reference
        elif r.probabilities is not None:
            extra["probabilities"] = r.probabilities
        if algorithm == "odm" and any(isinstance(v, list) for v in r.losses.values()):
            raise MixtureError(f"{source}:{r.line}: ODM takes one batch loss per domain, not per-token lists")
        try:
            s = alg.online_update(algorithm, s, r.losses, {**params, **extra})
        except MixtureError as exc:
            raise MixtureError(f"{source}:{r.line}: {exc}") from None
    out: dict[str, Any] = {"weights": alg.weights_out(s)}
    avg = alg.average_out(s)
    if avg is not None:
        out["average_weights"] = avg
    out["state"] = s
    return out
