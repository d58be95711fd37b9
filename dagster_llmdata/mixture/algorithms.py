"""Mixture algorithms as pure updates over explicit, JSON-serialisable state.

Every online algorithm is `update(state, losses, params) -> state` where `state["weights"]` is the
mixture to train on next; nothing is hidden in objects, so the sensor keeps the state in its cursor
and the manifest records it, and a test can replay any sequence of updates.

- static / temperature: weights from the spec, or token counts ** (1/T).
- DoReMi (Xie et al. 2023): excess loss over a reference model, clipped at 0, drives an
  exponentiated-gradient step on log weights (step size eta), smoothed with uniform by c; the
  output is the average of the weights over all steps.
- ODM (Albalak et al. 2023): EXP3 over domains, reward = per-domain training loss,
  importance-weighted by the probability the domain was drawn with, exploration rate
  eps_t = min(1/K, sqrt(ln K / (K t))) decaying with t.
- Sample re-weighting: per-document weights from per-document losses (`doc_weights`).
RegMix, which fits a regressor to proxy runs, lives in regmix.py."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dagster_llmdata.errors import MixtureError

Weights = dict[str, float]


def normalise(weights: Mapping[str, float], domains: list[str] | None = None) -> Weights:
    """Weights over `domains` (default: the given ones) summing to 1. Negative, NaN or infinite
    weights are an error; all-zero weights are an error (there is nothing to sample)."""
    domains = list(domains if domains is not None else weights)
    if not domains:
        raise MixtureError("no domains to weight")
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise MixtureError(f"weights name unknown domains {unknown}; known: {domains}")
    values = np.array([float(weights.get(d, 0.0)) for d in domains])
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise MixtureError(f"weights must be finite and >= 0: {dict(zip(domains, values.tolist()))}")
    total = values.sum()
    if total <= 0:
        raise MixtureError(f"weights are all zero over {domains}")
    return {d: float(v / total) for d, v in zip(domains, values)}


def weight_change(old: Mapping[str, float], new: Mapping[str, float]) -> float:
    """Total-variation distance between two mixtures (0: same, 1: disjoint)."""
    domains = set(old) | set(new)
    return 0.5 * sum(abs(old.get(d, 0.0) - new.get(d, 0.0)) for d in domains)


def _check_losses(losses: Mapping[str, float], domains: list[str]) -> dict[str, float]:
    unknown = sorted(set(losses) - set(domains))
    if unknown:
        raise MixtureError(f"losses for unknown domains {unknown}; known: {domains}")
    bad = {d: v for d, v in losses.items() if not math.isfinite(float(v))}
    if bad:
        raise MixtureError(f"losses must be finite: {bad}")
    return {d: float(v) for d, v in losses.items()}


# ---- static and temperature ---------------------------------------------------------------------

def static_weights(domains: list[str], weights: Mapping[str, float] | None = None) -> Weights:
    """The spec's weights (normalised), or uniform when none are given."""
    return normalise(weights if weights else {d: 1.0 for d in domains}, domains)


def temperature_weights(tokens: Mapping[str, int], temperature: float = 1.0) -> Weights:
    """w_d proportional to tokens_d ** (1 / T): T=1 is token-proportional, T -> inf uniform.
    Empty domains (0 tokens) get weight 0."""
    if temperature <= 0:
        raise MixtureError(f"temperature must be > 0, got {temperature}")
    if not any(v > 0 for v in tokens.values()):
        raise MixtureError(f"every domain is empty: {dict(tokens)}")
    return normalise({d: (float(n) ** (1.0 / temperature) if n > 0 else 0.0) for d, n in tokens.items()})


# ---- DoReMi -------------------------------------------------------------------------------------

def doremi_init(domains: list[str], prior: Mapping[str, float] | None = None) -> dict[str, Any]:
    w = static_weights(domains, prior)
    return {"algorithm": "doremi", "domains": domains, "t": 0, "log_weights": [math.log(max(w[d], 1e-12)) for d in domains],
            "weights": w, "weights_sum": [0.0] * len(domains), "average": w, "excess": {}}


def doremi_update(state: dict[str, Any], losses: Mapping[str, float], reference: Mapping[str, float],
                  eta: float = 1.0, smoothing: float = 1e-3) -> dict[str, Any]:
    """One DoReMi step. Domains without a loss this step keep their log weight (excess 0).
    Returns a new state; `weights` is the smoothed current mixture, `average` the DoReMi output."""
    domains = state["domains"]
    losses = _check_losses(losses, domains)
    reference = _check_losses({d: v for d, v in reference.items() if d in domains}, domains)
    missing_ref = sorted(set(losses) - set(reference))
    if missing_ref:
        raise MixtureError(f"DoReMi needs a reference loss for {missing_ref}")
    if not 0 <= smoothing <= 1:
        raise MixtureError(f"smoothing c must be in [0, 1], got {smoothing}")
    excess = np.array([max(losses[d] - reference[d], 0.0) if d in losses else 0.0 for d in domains])
    log_w = np.array(state["log_weights"]) + eta * excess
    log_w -= log_w.max()  # numerically stable softmax; the update is shift-invariant
    soft = np.exp(log_w) / np.exp(log_w).sum()
    w = (1 - smoothing) * soft + smoothing / len(domains)
    t = state["t"] + 1
    total = np.array(state["weights_sum"]) + w
    avg = total / t
    return {**state, "t": t, "log_weights": log_w.tolist(), "weights": dict(zip(domains, w.tolist())),
            "weights_sum": total.tolist(), "average": dict(zip(domains, (avg / avg.sum()).tolist())),
            "excess": dict(zip(domains, excess.tolist()))}


# ---- ODM (EXP3) ---------------------------------------------------------------------------------

def odm_init(domains: list[str]) -> dict[str, Any]:
    k = len(domains)
    return {"algorithm": "odm", "domains": domains, "t": 0, "log_scores": [0.0] * k,
            "weights": {d: 1.0 / k for d in domains}, "epsilon": 1.0 / k}


def odm_epsilon(t: int, k: int) -> float:
    """Exploration rate of EXP3 in ODM: min(1/K, sqrt(ln K / (K t)))."""
    return min(1.0 / k, math.sqrt(math.log(k) / (k * max(t, 1)))) if k > 1 else 0.0


def odm_update(state: dict[str, Any], losses: Mapping[str, float], smoothing: float = 0.9, step: int | None = None) -> dict[str, Any]:
    """One EXP3 update. The reward of a domain is its loss (what is left to learn there) divided
    by the probability it was drawn with (importance weighting); a domain's score is a moving
    average (`smoothing`) of eps * reward over rounds. ODM plays one round per batch: `step` (the
    training step) says how many rounds this update stands for (the same reward in each) and sets
    the exploration rate eps_t; without it, one round per update."""
    domains = state["domains"]
    losses = _check_losses(losses, domains)
    k = len(domains)
    t0 = state["t"]
    t = max(t0 + 1, int(step) if step is not None else 0)
    scores = np.array(state["log_scores"])
    w = np.array([state["weights"][d] for d in domains])
    eps = state.get("epsilon", 1.0 / k)
    seen = np.array([d in losses for d in domains])
    loss = np.array([losses.get(d, 0.0) for d in domains])
    for r in range(t0 + 1, t + 1):  # one EXP3 round per training step, each with these losses
        eps_prev = odm_epsilon(r - 1, k) if r > 1 else 1.0 / k
        scores = np.where(seen, smoothing * scores + (1 - smoothing) * eps_prev * loss / np.maximum(w, 1e-12), scores)
        eps = odm_epsilon(r, k)
        z = scores - scores.max()
        w = (1 - k * eps) * np.exp(z) / np.exp(z).sum() + eps
        w /= w.sum()
    return {**state, "t": t, "log_scores": scores.tolist(), "weights": dict(zip(domains, w.tolist())), "epsilon": eps}


# ---- sample-level re-weighting ------------------------------------------------------------------

def doc_weights(losses: Mapping[str, float], low_quantile: float = 0.2, high_quantile: float = 0.95,
                learned_weight: float = 0.2, noisy_weight: float = 0.1) -> dict[str, float]:
    """Per-document weights from per-document losses: documents below the `low_quantile` loss are
    already learned and are down-weighted to `learned_weight`; those above `high_quantile` are the
    noisy tail (unlearnable text) and get `noisy_weight`; the rest keep weight 1. NaN/inf losses
    are dropped (those documents keep the default weight 1 in the reader)."""
    if not 0 <= low_quantile < high_quantile <= 1:
        raise MixtureError(f"need 0 <= low_quantile < high_quantile <= 1, got {low_quantile}, {high_quantile}")
    ids = [i for i, v in losses.items() if math.isfinite(float(v))]
    if not ids:
        return {}
    values = np.array([float(losses[i]) for i in ids])
    lo, hi = np.quantile(values, low_quantile), np.quantile(values, high_quantile)
    out = np.ones(len(ids))
    out[values <= lo] = learned_weight
    out[values > hi] = noisy_weight
    return dict(zip(ids, out.tolist()))


# ---- dispatch -----------------------------------------------------------------------------------

ONLINE = ("doremi", "odm", "reweight")


def init_state(name: str, domains: list[str], prior: Mapping[str, float]) -> dict[str, Any]:
    """The state an online algorithm starts from (its weights: `prior`)."""
    if name == "doremi":
        return doremi_init(domains, prior)
    if name == "odm":
        state = odm_init(domains)
        return {**state, "weights": static_weights(domains, prior)}
    return {"algorithm": name, "domains": domains, "t": 0, "weights": static_weights(domains, prior)}


def online_update(name: str, state: dict[str, Any], losses: Mapping[str, float], params: Mapping[str, Any]) -> dict[str, Any]:
    """One update of an online algorithm (params may carry the training `step`); returns the new state. `weights_out(state)` is the
    mixture to use (DoReMi's average, the others' current weights)."""
    if name == "doremi":
        reference = params.get("reference_losses") or {}
        return doremi_update(state, losses, reference, eta=params.get("eta", 1.0), smoothing=params.get("smoothing", 1e-3))
    if name == "odm":
        return odm_update(state, losses, smoothing=params.get("smoothing", 0.9), step=params.get("step"))
    # static / temperature / regmix / reweight keep the domain weights; reweight acts on documents
    _check_losses(losses, state["domains"])
    return {**state, "t": state["t"] + 1}


def weights_out(state: dict[str, Any]) -> Weights:
    return dict(state.get("average") or state["weights"]) if state.get("algorithm") == "doremi" else dict(state["weights"])
