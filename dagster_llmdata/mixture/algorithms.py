"""Mixture algorithms as pure updates over explicit, JSON-serialisable state.

Every online algorithm is `update(state, losses, params) -> state` where `state["weights"]` is the
mixture to train on next; nothing is hidden in objects, so the sensor keeps the state in its cursor
and the manifest records it, and a test can replay any sequence of updates (tests/mixture/
test_algorithms_vs_authors.py replays them against the authors' update equations).

- static / temperature: weights from the spec, or token counts ** (1/T).
- DoReMi (Xie et al. 2023): per-token excess loss over a reference model, clipped at 0 and
  averaged per domain (a clipped domain-mean excess when only means are given, and the state says
  so), drives an exponentiated-gradient step on the log of the previous smoothed weights; the
  average of the weights over steps (`average_weights`) is the output for a fresh run.
- ODM (Albalak et al. 2023): EXP3 over domains; only the sampled domains' reward estimates move,
  importance-weighted by the probability they were drawn with; eps_t = min(1/K, sqrt(ln K/(K t))).
- Sample re-weighting: per-document weights from per-document losses (`doc_weights`); per-sample
  online selection (top-k loss, RHO-loss) is in selection.py.
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

PER_TOKEN = "per_token"
DOMAIN_MEAN = "domain_mean"
DOMAIN_MEAN_NOTE = ("only per-domain mean losses were given: the domain-mean excess is clipped at 0 (the paper clips "
                    "each token's excess and averages; report per-token losses for that)")


def doremi_init(domains: list[str], prior: Mapping[str, float] | None = None) -> dict[str, Any]:
    w = static_weights(domains, prior)
    return {"algorithm": "doremi", "domains": domains, "t": 0, "weights": w, "scores": [0.0] * len(domains),
            "weights_sum": [0.0] * len(domains), "average_weights": w, "excess": {}, "excess_mode": None}


def _token_array(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size == 0:
        raise MixtureError(f"{what}: no per-token losses")
    if not np.all(np.isfinite(arr)):
        raise MixtureError(f"{what}: per-token losses must be finite")
    return arr


def doremi_excess(losses: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[dict[str, float], str]:
    """Per-domain clipped excess loss and how it was computed. A domain's loss (and its reference)
    is either a list of per-token losses, giving mean_tokens(max(l - ref, 0)) as in the paper, or
    one mean loss, giving max(mean l - mean ref, 0) as the fallback (which under-counts: tokens
    where the proxy is better cancel tokens where it is worse)."""
    missing = sorted(set(losses) - set(reference))
    if missing:
        raise MixtureError(f"DoReMi needs a reference loss for {missing}")
    out, modes = {}, set()
    for d, value in losses.items():
        ref = reference[d]
        if isinstance(value, (list, tuple, np.ndarray)):
            lt, rt = _token_array(value, f"losses[{d}]"), _token_array(ref, f"reference[{d}]")
            if lt.shape != rt.shape:
                raise MixtureError(f"domain {d}: {lt.size} per-token losses but {rt.size} reference losses")
            out[d] = float(np.maximum(lt - rt, 0.0).mean())
            modes.add(PER_TOKEN)
        else:
            if isinstance(ref, (list, tuple, np.ndarray)):
                raise MixtureError(f"domain {d}: a mean loss with per-token reference losses; give both per token or both as means")
            lv, rv = float(value), float(ref)
            if not (math.isfinite(lv) and math.isfinite(rv)):
                raise MixtureError(f"domain {d}: losses must be finite, got {lv} and reference {rv}")
            out[d] = max(lv - rv, 0.0)
            modes.add(DOMAIN_MEAN)
    return out, (DOMAIN_MEAN if DOMAIN_MEAN in modes else PER_TOKEN)


def doremi_update(state: dict[str, Any], losses: Mapping[str, Any], reference: Mapping[str, Any],
                  eta: float = 1.0, smoothing: float = 1e-3) -> dict[str, Any]:
    """One DoReMi step (Xie et al. 2023, Algorithm 1; the authors' `update_domain_weights`):
    alpha' = softmax(log alpha + eta * lambda), alpha = (1 - c) alpha' + c / K, where alpha is the
    previous SMOOTHED mixture, so the smoothing feeds back into the next step. lambda is the
    clipped excess loss (see `doremi_excess`); a domain absent from this step keeps its previous
    lambda (the authors keep `perdomain_scores` for domains not in the batch). `weights` is the
    mixture to train the proxy on next; `average_weights` (the mean over steps) is DoReMi's output,
    meant for a fresh run, and never fed back."""
    domains = state["domains"]
    unknown = sorted(set(losses) - set(domains))
    if unknown:
        raise MixtureError(f"losses for unknown domains {unknown}; known: {domains}")
    if not 0 <= smoothing <= 1:
        raise MixtureError(f"smoothing c must be in [0, 1], got {smoothing}")
    excess, mode = doremi_excess(losses, {d: v for d, v in reference.items() if d in losses})
    scores = np.array([excess.get(d, s) for d, s in zip(domains, state["scores"])])
    w_prev = np.array([state["weights"][d] for d in domains])
    with np.errstate(divide="ignore"):
        log_w = np.log(w_prev) + eta * scores
    log_w -= log_w.max()  # the softmax is shift-invariant
    soft = np.exp(log_w) / np.exp(log_w).sum()
    w = (1 - smoothing) * soft + smoothing / len(domains)
    t = state["t"] + 1
    total = np.array(state["weights_sum"]) + w
    avg = total / t
    out = {**state, "t": t, "weights": dict(zip(domains, w.tolist())), "scores": scores.tolist(),
           "weights_sum": total.tolist(), "average_weights": dict(zip(domains, (avg / avg.sum()).tolist())),
           "excess": excess, "excess_mode": mode}
    if mode == DOMAIN_MEAN:
        out["note"] = DOMAIN_MEAN_NOTE
    else:
        out.pop("note", None)
    return out


# ---- ODM (EXP3) ---------------------------------------------------------------------------------

ODM_REWARD_SCALE = 0.1  # the authors' Exp3WeightUpdater divides the loss by 10 before using it


def odm_init(domains: list[str], prior: Mapping[str, float] | None = None) -> dict[str, Any]:
    k = len(domains)
    return {"algorithm": "odm", "domains": domains, "t": 0, "rewards": [0.0] * k,
            "weights": static_weights(domains, prior), "epsilon": 1.0 / k, "prev_epsilon": None}


def odm_epsilon(t: int, k: int) -> float:
    """Exploration rate of ODM's EXP3 at round t: min(1/K, sqrt(ln K / (K t)))."""
    return min(1.0 / k, math.sqrt(math.log(k) / (k * max(t, 1)))) if k > 1 else 0.0


def odm_update(state: dict[str, Any], losses: Mapping[str, float], probabilities: Mapping[str, float] | None = None,
               step: int | None = None, reward_scale: float = ODM_REWARD_SCALE, smoothing: float | None = None) -> dict[str, Any]:
    """One EXP3 round of ODM (Albalak et al. 2023; the authors' `Exp3WeightUpdater.update`).

    `losses` holds the batch loss of the domain(s) sampled this round; only those domains' reward
    estimates change: R_d += reward_scale * loss_d / p_d, with p_d the probability d was actually
    drawn with (`probabilities`, as the trainer reports it; default: the weights this state handed
    out last round). With `smoothing` alpha the estimate is the paper's moving average
    R_d = alpha R_d + (1 - alpha) reward / p_d instead of the code's running sum. Then
    eps_t = min(1/K, sqrt(ln K / (K t))) with t the training `step` (default: the next round), and
    p = (1 - K eps_t) softmax(eps_{t-1} R) + eps_t. One call is one round."""
    domains = state["domains"]
    losses = _check_losses(losses, domains)
    if not losses:
        raise MixtureError("ODM needs the loss of at least one sampled domain")
    k = len(domains)
    t = int(step) if step is not None else state["t"] + 1
    if t <= state["t"]:
        raise MixtureError(f"ODM round at step {t} is not after the last round (step {state['t']})")
    p_drawn = dict(state["weights"]) if probabilities is None else {d: float(v) for d, v in probabilities.items()}
    rewards = np.array(state["rewards"], dtype=float)
    for i, d in enumerate(domains):
        if d not in losses:
            continue
        p = p_drawn.get(d)
        if p is None or not math.isfinite(p) or p <= 0:
            raise MixtureError(f"ODM: domain {d} has a loss but its sampling probability is {p}; a sampled domain needs p > 0")
        estimate = reward_scale * losses[d] / p
        rewards[i] = rewards[i] + estimate if smoothing is None else smoothing * rewards[i] + (1 - smoothing) * estimate
    prev_eps = float(state["epsilon"])
    eps = odm_epsilon(t, k)
    z = rewards * prev_eps
    z -= z.max()  # (1 - K eps) / sum exp(.) rescales, so a shift changes nothing
    w = (1 - k * eps) * np.exp(z) / np.exp(z).sum() + eps
    w /= w.sum()
    return {**state, "t": t, "rewards": rewards.tolist(), "weights": dict(zip(domains, w.tolist())),
            "epsilon": eps, "prev_epsilon": prev_eps, "sampled": sorted(losses),
            "drawn_with": {d: p_drawn[d] for d in sorted(losses)}}


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
        return odm_init(domains, prior)
    return {"algorithm": name, "domains": domains, "t": 0, "weights": static_weights(domains, prior)}


def online_update(name: str, state: dict[str, Any], losses: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """One update of an online algorithm; returns the new state. `params` carries the algorithm's
    settings and this report's extras: `step` (the training step), `reference_losses` (DoReMi),
    `probabilities` (ODM: what the sampled domains were drawn with)."""
    if name in ("doremi", "odm") and ("scores" if name == "doremi" else "rewards") not in state:
        # a state written before the faithful updates (log weights / scores): start over from its weights
        state = init_state(name, list(state["domains"]), state["weights"])
    if name == "doremi":
        reference = params.get("reference_losses") or params.get("reference") or {}
        return doremi_update(state, losses, reference, eta=float(params.get("eta", 1.0)), smoothing=float(params.get("smoothing", 1e-3)))
    if name == "odm":
        smoothing = params.get("smoothing")
        return odm_update(state, losses, probabilities=params.get("probabilities"), step=params.get("step"),
                          reward_scale=float(params.get("reward_scale", ODM_REWARD_SCALE)),
                          smoothing=None if smoothing is None else float(smoothing))
    # static / temperature / regmix / reweight keep the domain weights; reweight acts on documents
    _check_losses(losses, state["domains"])
    return {**state, "t": state["t"] + 1}


def weights_out(state: dict[str, Any]) -> Weights:
    """The mixture the running trainer samples next: the current weights for every algorithm.
    DoReMi's `average_weights` are for a fresh run (see `average_out`), never fed back."""
    return dict(state["weights"])


def average_out(state: dict[str, Any]) -> Weights | None:
    """The averaged mixture where the algorithm defines one (DoReMi), else None."""
    avg = state.get("average_weights")
    return dict(avg) if avg else None
