"""The mixture algorithms replayed on fixed inputs against values computed here, by hand, from
the update equations in the authors' published code (read, not copied):

- DoReMi: github.com/sangmichaelxie/doremi, doremi/trainer.py, DoReMiTrainer.update_domain_weights
  (doremiv1) and write_weights.
- ODM: github.com/alon-albalak/online-data-mixing, megatron/data/data_sampling_utils.py,
  Exp3WeightUpdater.update.
- RegMix: github.com/sail-sg/regmix, mixture_config/synthesize_mixture.py
  (generate_weights_dirichlet, sort_and_deduplicate) and regression_fitting/regression.ipynb
  (LightGBM hyper_params, the 100k-sample Dirichlet search and the top-128 average).
- RHO-loss: Mindermann et al. 2022, Algorithm 1 (reducible loss = training loss - irreducible loss).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dagster_llmdata.errors import MixtureError
from dagster_llmdata.mixture import algorithms as alg
from dagster_llmdata.mixture import selection
from dagster_llmdata.mixture.regmix import (
    LGBM_PARAMS,
    ProxyRuns,
    cv_spearman,
    make_regressor,
    min_child_samples,
    proxy_mixtures,
    regmix,
    repetition_caps,
    search,
)

D = ["a", "b", "c"]


# ---- DoReMi -------------------------------------------------------------------------------------

def _authors_doremi(weights, scores, pertoken, ref, eta, eps):
    """update_domain_weights, doremiv1, by hand: per-domain score = mean over the domain's tokens of
    clip(excess, min=0) (a domain absent from the batch keeps its previous score); new =
    softmax(log(train_domain_weights) + eta * scores); train_domain_weights = (1-eps) new + eps/K."""
    scores = list(scores)
    for i, d in enumerate(D):
        if d in pertoken:
            scores[i] = float(np.mean(np.clip(np.array(pertoken[d]) - np.array(ref[d]), 0, None)))
    logits = np.log(np.array(weights)) + eta * np.array(scores)
    soft = np.exp(logits) / np.exp(logits).sum()
    return (1 - eps) * soft + eps / len(D), scores


def test_doremi_per_token_replay_matches_authors_update():
    # mirrors doremi/trainer.py update_domain_weights + write_weights over three batches
    batches = [
        ({"a": [3.0, 1.0, 2.5], "b": [2.0, 2.0], "c": [1.0]}, {"a": [2.0, 2.0, 2.0], "b": [2.5, 1.0], "c": [1.5]}),
        ({"a": [2.0, 2.2], "c": [4.0, 0.5, 1.0]}, {"a": [2.1, 2.0], "c": [1.0, 1.0, 1.0]}),  # b absent: keeps its score
        ({"b": [5.0, 1.0, 1.0], "c": [1.0, 1.0]}, {"b": [1.0, 1.0, 1.0], "c": [1.2, 0.8]}),
    ]
    eta, eps = 0.7, 0.05
    s = alg.doremi_init(D)
    w, scores, history = [1 / 3] * 3, [0.0] * 3, []
    for losses, ref in batches:
        s = alg.doremi_update(s, losses, ref, eta=eta, smoothing=eps)
        w, scores = _authors_doremi(w, scores, losses, ref, eta, eps)
        history.append(w)
        if len(history) == 2:  # b was absent from batch 2: it kept its batch-1 score mean(clip([-0.5, 1.0], 0))
            assert s["scores"][1] == pytest.approx(0.5)
        assert [s["weights"][d] for d in D] == pytest.approx(w.tolist(), rel=1e-12)
        assert s["scores"] == pytest.approx(scores, rel=1e-12)
        assert s["excess_mode"] == "per_token" and "note" not in s
    # avg_domain_weights: running mean of the written (smoothed) weights, the initial ones excluded
    assert [s["average_weights"][d] for d in D] == pytest.approx(np.mean(history, axis=0).tolist(), rel=1e-12)


def test_doremi_smoothing_feeds_back_and_the_average_is_not_fed_back():
    # 20 steps of excess on a, then 30 on b (eta 1, c 1e-3): in the authors' update the log of the
    # smoothed weight is the next step's base, so a domain never falls below c/K and b recovers
    # fast: it ends near 1. Keeping the log of the unsmoothed softmax instead (the old state) lets
    # a's lead grow without bound and b needs 20 steps just to draw level.
    s = alg.doremi_init(D)
    ref = {d: 1.0 for d in D}
    for _ in range(20):
        s = alg.doremi_update(s, {"a": 2.0, "b": 1.0, "c": 1.0}, ref, eta=1.0, smoothing=1e-3)
    assert s["weights"]["a"] > 0.998
    took_over = None
    for i in range(30):
        s = alg.doremi_update(s, {"a": 1.0, "b": 2.0, "c": 1.0}, ref, eta=1.0, smoothing=1e-3)
        if took_over is None and s["weights"]["b"] > s["weights"]["a"]:
            took_over = i + 1
    assert s["weights"]["b"] > 0.99 and s["weights"]["a"] < 0.001
    assert took_over == 8  # log(0.999 / (1e-3/3)) ~ 8.0: eight unit steps close the gap
    unsmoothed = np.log(np.full(3, 1 / 3)) + 20 * np.array([1.0, 0, 0])
    steps = next(i for i in range(1, 40) if unsmoothed[1] + i > unsmoothed[0])
    assert steps == 21
    # the average over 50 steps is the output for a fresh run, and only reported
    assert s["average_weights"]["a"] == pytest.approx((20 * 0.99895 + 7 * 0.7) / 50, abs=0.05)
    assert alg.weights_out(s) == s["weights"] != s["average_weights"]


def test_doremi_domain_mean_fallback_is_said_and_differs_from_per_token():
    per_token = alg.doremi_update(alg.doremi_init(D), {"a": [3.0, 1.0]}, {"a": [2.0, 2.0]})
    means = alg.doremi_update(alg.doremi_init(D), {"a": 2.0}, {"a": 2.0})
    assert per_token["excess"]["a"] == 0.5 and means["excess"]["a"] == 0.0  # clip then mean vs mean then clip
    assert means["excess_mode"] == "domain_mean" and "per-domain mean" in means["note"]
    with pytest.raises(MixtureError, match="2 per-token losses but 1 reference"):
        alg.doremi_update(alg.doremi_init(D), {"a": [3.0, 1.0]}, {"a": [2.0]})
    with pytest.raises(MixtureError, match="reference loss for"):
        alg.doremi_update(alg.doremi_init(D), {"a": 1.0, "b": 1.0}, {"a": 1.0})


# ---- ODM ----------------------------------------------------------------------------------------

def _authors_exp3(rounds, k=3):
    """Exp3WeightUpdater.update by hand: reward = loss / 10; R[d] += reward / p[d];
    prev_eps = eps; eps = min(1/K, sqrt(ln K / (K * iteration))); w = exp(R * prev_eps) *
    (1 - K eps) / sum exp(R * prev_eps) + eps; p = w / sum w."""
    R, p, eps, out = np.zeros(k), np.full(k, 1 / k), 1 / k, []
    for d, loss, it in rounds:
        R[d] += (loss / 10) / p[d]
        prev, eps = eps, min(1 / k, math.sqrt(math.log(k) / (k * it)))
        w = np.exp(R * prev) * (1 - k * eps) / np.exp(R * prev).sum() + eps
        p = w / w.sum()
        out.append(p.copy())
    return out, R


def test_odm_replay_matches_authors_exp3():
    # mirrors megatron/data/data_sampling_utils.py Exp3WeightUpdater.update: one sampled domain a round
    rounds = [(0, 4.1, 1), (2, 3.0, 2), (0, 3.9, 3), (1, 5.5, 4), (1, 5.2, 5), (0, 3.5, 6), (2, 2.9, 7), (1, 5.0, 8)]
    expected, R = _authors_exp3(rounds)
    s = alg.odm_init(D)
    for (d, loss, it), p in zip(rounds, expected):
        before = list(s["rewards"])
        s = alg.odm_update(s, {D[d]: loss}, step=it)
        assert [s["weights"][x] for x in D] == pytest.approx(p.tolist(), rel=1e-12)
        assert [r for i, r in enumerate(s["rewards"]) if i != d] == [r for i, r in enumerate(before) if i != d]  # only the sampled one
    assert s["rewards"] == pytest.approx(R.tolist(), rel=1e-12)
    assert s["epsilon"] == pytest.approx(min(1 / 3, math.sqrt(math.log(3) / (3 * 8))))


def test_odm_importance_weight_uses_the_real_sampling_probability():
    s = alg.odm_init(D, {"a": 0.5, "b": 0.25, "c": 0.25})
    # the trainer drew domain b with p = 0.1 (not its token share, not the state's 0.25)
    s2 = alg.odm_update(s, {"b": 2.0}, probabilities={"b": 0.1}, step=1)
    assert s2["rewards"] == pytest.approx([0.0, 0.2 / 0.1, 0.0]) and s2["drawn_with"] == {"b": 0.1}
    s3 = alg.odm_update(s, {"b": 2.0}, step=1)  # default: the probability this state handed out
    assert s3["rewards"][1] == pytest.approx(0.2 / 0.25)
    with pytest.raises(MixtureError, match="sampling probability"):
        alg.odm_update(s, {"b": 2.0}, probabilities={"b": 0.0}, step=1)


def test_odm_one_report_is_one_round_and_the_exploration_schedule():
    s = alg.odm_update(alg.odm_init(D), {"a": 3.0}, step=100)  # step 100 sets eps_t, it is not 100 rounds
    assert s["t"] == 100 and s["rewards"] == pytest.approx([0.3 * 3, 0.0, 0.0])
    assert s["epsilon"] == pytest.approx(math.sqrt(math.log(3) / 300)) and s["prev_epsilon"] == pytest.approx(1 / 3)
    assert [alg.odm_epsilon(t, 3) for t in (1, 3, 4, 100)] == pytest.approx(
        [1 / 3, 1 / 3, math.sqrt(math.log(3) / 12), math.sqrt(math.log(3) / 300)])
    with pytest.raises(MixtureError, match="not after the last round"):
        alg.odm_update(s, {"a": 3.0}, step=100)


def test_old_states_restart_from_their_weights():
    old = {"algorithm": "odm", "domains": D, "t": 5, "log_scores": [0, 0, 0], "weights": {"a": 0.5, "b": 0.3, "c": 0.2}, "epsilon": 0.2}
    s = alg.online_update("odm", old, {"a": 1.0}, {"step": 6})
    assert s["rewards"] == pytest.approx([0.1 / 0.5, 0, 0])


# ---- RegMix -------------------------------------------------------------------------------------

def test_proxy_mixtures_follow_the_authors_generator_with_a_repetition_cap():
    # mirrors mixture_config/synthesize_mixture.py generate_weights_dirichlet: Dirichlet around the
    # tempered prior at 15 log-spaced strengths, rejection above the usage bound, zero below
    # MINIMUM, rounding to multiples of MINIMUM, de-duplication, n picked at random
    tokens = {"web": 5_000_000, "code": 2_000_000, "books": 600_000, "tiny": 50_000}
    caps = repetition_caps(tokens, budget_tokens=2_000_000, max_epochs=4)
    assert caps == {"web": 1.0, "code": 1.0, "books": 1.0, "tiny": pytest.approx(0.1)}
    prior = {d: n / sum(tokens.values()) for d, n in tokens.items()}
    domains, X = proxy_mixtures(prior, 48, caps=caps, seed=3)
    assert domains == list(tokens) and X.shape == (48, 4)
    assert np.all(X[:, 3] <= 0.1 + 1e-4)  # "tiny" never repeated more than 4 epochs of 2M tokens
    assert np.allclose(X / 2e-4, np.round(X / 2e-4)) and np.allclose(X.sum(1), 1, atol=4 * 1e-4)
    assert len({tuple(r) for r in np.round(X, 6)}) == 48
    _, again = proxy_mixtures(prior, 48, caps=caps, seed=3)
    assert np.array_equal(X, again)
    # default bound = prior * max_epochs, the authors' MAXIMUM_USAGE bound on the untempered prior
    _, Y = proxy_mixtures(prior, 16, max_epochs=2, seed=0)
    assert np.all(Y <= np.minimum(np.array(list(prior.values())) * 2, 1) + 1e-4)
    with pytest.raises(MixtureError, match="without repeating"):
        repetition_caps({"a": 10, "b": 10}, budget_tokens=100, max_epochs=4)


class _Quadratic:
    """A fixed regressor: loss = |w - target|^2, so the search's answer can be computed by hand."""

    target = np.array([0.5, 0.3, 0.2])

    def predict(self, X):
        return ((np.asarray(X) - self.target) ** 2).sum(1)


def test_search_is_the_notebooks_dirichlet_top_128_average():
    # mirrors regression.ipynb: samples = dirichlet(prior * 1, 100000); mean of the top-128 predicted
    prior = {"a": 0.6, "b": 0.3, "c": 0.1}
    w, pred = search(_Quadratic(), D, prior, seed=7)
    samples = np.random.default_rng(7).dirichlet(np.array([0.6, 0.3, 0.1]), 100_000)
    scores = _Quadratic().predict(samples)
    top = np.argsort(scores, kind="stable")[:128]
    assert [w[d] for d in D] == pytest.approx((samples[top].mean(0) / samples[top].mean(0).sum()).tolist(), rel=1e-12)
    assert pred == pytest.approx(scores[top].mean())
    capped, _ = search(_Quadratic(), D, prior, seed=7, caps={"a": 0.4, "b": 1.0, "c": 1.0})
    assert capped["a"] <= 0.4


def test_lightgbm_settings_as_published():
    assert LGBM_PARAMS == {"boosting_type": "gbdt", "objective": "regression", "n_estimators": 1000, "learning_rate": 1e-2,
                           "random_state": 42, "verbosity": -1}
    name, model = make_regressor()
    if name == "lightgbm":
        got = model.get_params()
        assert got["n_estimators"] == 1000 and got["learning_rate"] == 0.01 and got["random_state"] == 42


def test_few_proxy_runs_keep_the_published_leaf_share_and_find_a_clean_signal():
    # the notebook fits 872 runs with LightGBM's default leaf of 20; 40 runs with that default
    # allow one split, so the leaf scales with the runs (>= 2) and a clean signal ranks well
    assert min_child_samples(872) == 20 and min_child_samples(5000) == 20 and min_child_samples(40) == 2
    assert min_child_samples(300) == round(300 * 20 / 872)
    if make_regressor()[0] != "lightgbm":
        pytest.skip("lightgbm is not installed")
    assert make_regressor(n_runs=40)[1].get_params()["min_child_samples"] == 2
    assert make_regressor(n_runs=40, params={"min_child_samples": 9})[1].get_params()["min_child_samples"] == 9
    rng = np.random.default_rng(3)
    X = rng.dirichlet(np.ones(3), 32)
    y = 3.0 - 0.8 * X[:, 1] + 0.3 * X[:, 2] + rng.normal(0, 0.01, 32)
    assert cv_spearman(ProxyRuns(D, [str(i) for i in range(32)], X, y, "val")) > 0.8
    fixed = cv_spearman(ProxyRuns(D, [str(i) for i in range(32)], X, y, "val"), params={"min_child_samples": 20})
    assert fixed is None or fixed < 0.5  # what the unscaled default gave


def test_spearman_gate_refuses_with_the_number():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), 120)
    runs = ProxyRuns(D, [str(i) for i in range(120)], X, rng.normal(2.0, 0.1, 120), "val")  # loss unrelated to the mixture
    with pytest.raises(MixtureError, match=r"RegMix refused: cross-validated Spearman over 120 proxy runs is (-?0\.\d{4}|not measurable).*below the gate 0.5"):
        regmix(runs, n_samples=2000, top_k=16)


# ---- per-sample selection -----------------------------------------------------------------------

def test_loss_based_and_rho_loss_selection_by_hand():
    losses = [2.0, 5.0, 1.0, 4.0, 4.0, 0.5]
    reference = [0.1, 4.9, 0.2, 1.0, 3.9, 0.4]  # sample 1 is noisy (high under the reference model too)
    assert selection.loss_selection(losses, 3).tolist() == [1, 3, 4]  # ties: the earlier sample wins
    # reducible loss: [1.9, 0.1, 0.8, 3.0, 0.1, 0.1] -> samples 3, 0, 2
    assert selection.rho_loss_selection(losses, reference, 3).tolist() == [0, 2, 3]
    assert selection.select(losses, 2, reference).tolist() == [0, 3] and selection.select(losses, 2).tolist() == [1, 3]
    assert selection.k_for(32, 0.1) == 3 and selection.k_for(4, 0.01) == 1
    with pytest.raises(MixtureError, match="k must be in 1..6"):
        selection.loss_selection(losses, 7)
    with pytest.raises(MixtureError, match="6 losses but 2 reference"):
        selection.rho_loss_selection(losses, [1.0, 2.0], 2)
    with pytest.raises(MixtureError, match="finite"):
        selection.loss_selection([1.0, float("nan")], 1)
