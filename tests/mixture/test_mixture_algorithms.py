"""The mixture algorithms as pure updates over explicit state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dagster_llmdata.errors import MixtureError
from dagster_llmdata.mixture import algorithms as alg
from dagster_llmdata.mixture.regmix import read_proxy_runs, regmix, spearman

D = ["a", "b", "c"]


def test_normalise_and_change():
    assert alg.normalise({"a": 2, "b": 6}) == {"a": 0.25, "b": 0.75}
    assert alg.normalise({"a": 1}, ["a", "b"]) == {"a": 1.0, "b": 0.0}
    for bad in ({"a": -1, "b": 1}, {"a": float("nan")}, {"a": 0, "b": 0}, {"z": 1}):
        with pytest.raises(MixtureError):
            alg.normalise(bad, ["a", "b"])
    assert alg.weight_change({"a": 0.5, "b": 0.5}, {"a": 0.7, "b": 0.3}) == pytest.approx(0.2)


def test_temperature():
    tokens = {"a": 100, "b": 300, "c": 0}
    assert alg.temperature_weights(tokens, 1.0) == pytest.approx({"a": 0.25, "b": 0.75, "c": 0.0})
    hot = alg.temperature_weights(tokens, 1000.0)
    assert hot["a"] == pytest.approx(0.5, abs=0.01) and hot["c"] == 0
    with pytest.raises(MixtureError):
        alg.temperature_weights({"a": 0}, 1.0)


def test_doremi_one_step_by_hand():
    s = alg.doremi_init(D)
    s2 = alg.doremi_update(s, {"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 2.0, "b": 2.5, "c": 1.0}, eta=1.0, smoothing=0.1)
    # excess = max(loss - ref, 0) = (1, 0, 0); log w = log(1/3) + eta * excess
    soft = np.exp([1.0, 0.0, 0.0]) / np.exp([1.0, 0.0, 0.0]).sum()
    expect = 0.9 * soft + 0.1 / 3
    assert [s2["weights"][d] for d in D] == pytest.approx(expect.tolist())
    assert s2["excess"] == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert s2["t"] == 1 and s["t"] == 0  # pure: the old state is unchanged
    assert sum(s2["average_weights"].values()) == pytest.approx(1)
    assert s2["excess_mode"] == "domain_mean" and "per-domain mean" in s2["note"]
    json.dumps(s2)  # the state is plain JSON


def test_doremi_average_lags_and_upweights_hard_domain():
    s = alg.doremi_init(D)
    for _ in range(20):
        s = alg.doremi_update(s, {"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 2.0, "b": 2.0, "c": 1.0}, eta=0.5, smoothing=1e-3)
    assert s["weights"]["a"] > 0.95
    assert 0.5 < s["average_weights"]["a"] < s["weights"]["a"]
    # the running trainer gets the current weights; the average is for a fresh run only
    assert alg.weights_out(s) == s["weights"] and alg.average_out(s) == s["average_weights"]


def test_doremi_bad_input():
    s = alg.doremi_init(D)
    with pytest.raises(MixtureError, match="unknown domains"):
        alg.doremi_update(s, {"zz": 1.0}, {"zz": 1.0})
    with pytest.raises(MixtureError, match="finite"):
        alg.doremi_update(s, {"a": float("nan")}, {"a": 1.0})
    with pytest.raises(MixtureError, match="reference loss"):
        alg.doremi_update(s, {"a": 1.0}, {})


def test_odm_exp3():
    s = alg.odm_init(D)
    assert s["weights"] == pytest.approx({d: 1 / 3 for d in D})
    eps = [alg.odm_epsilon(t, 3) for t in (1, 10, 100, 1000)]
    assert eps[0] == pytest.approx(1 / 3) and eps == sorted(eps, reverse=True) and eps[-1] < 0.02
    for _ in range(200):
        s = alg.odm_update(s, {"a": 4.0, "b": 2.0, "c": 1.0})  # a mixed batch: every domain sampled
    w = s["weights"]
    assert w["a"] > w["b"] > w["c"] and sum(w.values()) == pytest.approx(1)
    assert min(w.values()) >= s["epsilon"] - 1e-12  # exploration floor
    # a domain not sampled this round keeps its reward estimate
    s2 = alg.odm_update(s, {"a": 4.0})
    assert s2["rewards"][1:] == s["rewards"][1:] and s2["rewards"][0] > s["rewards"][0]


def test_doc_weights_quantiles():
    losses = {f"d{i}": float(i) for i in range(100)}
    losses["nan"] = float("nan")
    w = alg.doc_weights(losses, low_quantile=0.2, high_quantile=0.9, learned_weight=0.3, noisy_weight=0.05)
    assert "nan" not in w
    assert w["d0"] == 0.3 and w["d19"] == 0.3 and w["d50"] == 1.0 and w["d95"] == 0.05
    assert alg.doc_weights({}) == {}
    with pytest.raises(MixtureError):
        alg.doc_weights(losses, low_quantile=0.9, high_quantile=0.1)


def test_online_update_dispatch():
    s = alg.init_state("odm", D, {"a": 0.6, "b": 0.2, "c": 0.2})
    assert s["weights"]["a"] == pytest.approx(0.6)
    s = alg.online_update("static", alg.init_state("static", D, {}), {"a": 1.0}, {})
    assert s["t"] == 1 and s["weights"] == pytest.approx({d: 1 / 3 for d in D})


def _proxy_csvs(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(3), n)
    # loss is lowest near (0.6, 0.3, 0.1)
    y = ((X - np.array([0.6, 0.3, 0.1])) ** 2).sum(1) + 2.0 + rng.normal(0, 0.002, n)
    m, l = tmp_path / "mix.csv", tmp_path / "loss.csv"
    m.write_text("index,a,b,c\n" + "".join(f"{i},{x[0]:.5f},{x[1]:.5f},{x[2]:.5f}\n" for i, x in enumerate(X)))
    l.write_text("index,val_loss,other\n" + "".join(f"{i},{v:.6f},1\n" for i, v in enumerate(y)))
    return m, l


def test_regmix_finds_the_optimum(tmp_path):
    m, l = _proxy_csvs(tmp_path)
    runs = read_proxy_runs(m, l, "val_loss")
    res = regmix(runs, n_samples=20000, top_k=50)
    assert res.regressor in ("lightgbm", "sklearn-gbr")
    assert res.cv_spearman > 0.7 and res.state["min_spearman"] == 0.5
    assert res.weights["a"] > res.weights["b"] > res.weights["c"]
    assert abs(res.weights["a"] - 0.6) < 0.15


def test_regmix_csv_errors(tmp_path):
    m, l = _proxy_csvs(tmp_path, n=6)
    with pytest.raises(MixtureError, match="no target column 'nope'"):
        read_proxy_runs(m, l, "nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(MixtureError, match="needs an `index` column"):
        read_proxy_runs(bad, l, "val_loss")
    bad.write_text("index,a,b,c\n0,1,x,0\n")
    with pytest.raises(MixtureError, match="is not a number"):
        read_proxy_runs(bad, l, "val_loss")
    short = tmp_path / "short.csv"
    short.write_text("index,val_loss\n0,1.0\n")
    with pytest.raises(MixtureError, match="RegMix needs >= 4"):
        read_proxy_runs(m, short, "val_loss")


def test_spearman():
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1)
    assert math.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))
