"""Mixture benchmark: does adapting the mixture beat uniform on a testbed where uniform is wrong?

Testbed (numpy, seconds per run): five domains of token sequences over a 64-token vocabulary, each
drawn from its own bigram (Markov) chain, and a bigram language model (a 64 x 64 logit table)
trained by SGD on batches drawn from a mixture:
  web    plenty of data, part of the target
  code   plenty of data, part of the target
  books  a small domain (forces repetition: the model overfits what it repeats), half the target
  noise  uniformly random tokens: pure noise, its loss cannot drop below ln 64
  dup    a handful of short sequences duplicated many times: learned at once, worth little
The target distribution (web 0.3, code 0.2, books 0.5) differs from the training data's token
shares. The target loss is exact (expected cross-entropy under the target's chains).

Methods, each with the same token budget (steps x batch): uniform, token-proportional, DoReMi
(proxy run against a uniform reference, its averaged weights used for the final run), ODM (EXP3
online during the run), RegMix (LightGBM on proxy runs at a quarter of the budget, Dirichlet search
around the token prior, top-k average), the sample re-weighter (per-document losses after a
warm-up, learned and noisy documents down-weighted; uniform domain weights), and the best static
mixture from a grid over the simplex. Reported: target loss at the budget, and steps to reach
uniform's final target loss, as mean and spread over seeds.

    .venv/bin/python bench/mixture.py              # 3 seeds
    .venv/bin/python bench/mixture.py --seeds 1 --grid 4   # a smoke run
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import bench_args, save  # noqa: E402
from dagster_llmdata.mixture import algorithms as alg  # noqa: E402
from dagster_llmdata.mixture.regmix import ProxyRuns, cv_spearman, fit, search  # noqa: E402

V = 64
DOMAINS = ["web", "code", "books", "noise", "dup"]
TARGET = {"web": 0.3, "code": 0.2, "books": 0.5}
DOC_LEN = 32
EVAL_EVERY = 10


class Testbed:
    def __init__(self, seed: int, sizes: dict[str, int]):
        rng = np.random.default_rng(seed)
        base = rng.dirichlet(np.full(V, 0.2), V)
        self.chains = {
            "web": 0.5 * base + 0.5 * rng.dirichlet(np.full(V, 0.2), V),
            "code": rng.dirichlet(np.full(V, 0.1), V),
            "books": 0.5 * base + 0.5 * rng.dirichlet(np.full(V, 0.2), V),
            "noise": np.full((V, V), 1.0 / V),
        }
        self.docs: dict[str, np.ndarray] = {}
        for d in ("web", "code", "books", "noise"):
            self.docs[d] = self._sample_docs(self.chains[d], sizes[d] // DOC_LEN, rng)
        few = self._sample_docs(self.chains["web"], 4, rng)  # dup: 4 documents, copied
        self.docs["dup"] = np.repeat(few, max(1, sizes["dup"] // DOC_LEN // 4), axis=0)
        self.tokens = {d: int(self.docs[d].size) for d in DOMAINS}
        # exact target: stationary next-token distributions of the target chains
        self.eval_pairs = {d: self._pair_weights(self.chains[d]) for d in self.chains}

    @staticmethod
    def _sample_docs(chain: np.ndarray, n: int, rng) -> np.ndarray:
        docs = np.empty((n, DOC_LEN), dtype=np.int64)
        docs[:, 0] = rng.integers(V, size=n)
        cum = np.cumsum(chain, axis=1)
        for t in range(1, DOC_LEN):
            u = rng.random(n)
            docs[:, t] = np.minimum((cum[docs[:, t - 1]] < u[:, None]).sum(1), V - 1)
        return docs

    @staticmethod
    def _pair_weights(chain: np.ndarray) -> np.ndarray:
        pi = np.full(V, 1.0 / V)
        for _ in range(200):
            pi = pi @ chain
        return pi[:, None] * chain  # P(a, b)

    def domain_loss(self, W: np.ndarray, d: str) -> float:
        logp = W - np.logaddexp.reduce(W, axis=1, keepdims=True)
        if d == "dup":  # the duplicated documents themselves
            a, b = self.docs["dup"][:4, :-1].ravel(), self.docs["dup"][:4, 1:].ravel()
            return float(-logp[a, b].mean())
        return float(-(self.eval_pairs[d] * logp).sum())

    def target_loss(self, W: np.ndarray) -> float:
        return sum(w * self.domain_loss(W, d) for d, w in TARGET.items())


def train(bed: Testbed, steps: int, batch: int, seed: int, weights=None, online=None, doc_sampler=None,
          lr: float = 2.0) -> tuple[np.ndarray, list[float]]:
    """SGD on the bigram model; `weights` static, or `online(step, W, weights) -> weights`;
    `doc_sampler(step, W)` -> per-domain document probabilities (or None). Returns W and
    the target-loss curve (every EVAL_EVERY steps)."""
    rng = np.random.default_rng(seed + 1000)
    W = np.zeros((V, V))
    w = np.array([weights[d] for d in DOMAINS]) if weights else np.full(len(DOMAINS), 1 / len(DOMAINS))
    doc_p = None
    curve = []
    for step in range(1, steps + 1):
        if online is not None and step > 1 and (step - 1) % EVAL_EVERY == 0:
            new = online(step - 1, W)
            if new is not None:
                w = np.array([new[d] for d in DOMAINS])
        if doc_sampler is not None and (step - 1) % EVAL_EVERY == 0:
            doc_p = doc_sampler(step - 1, W)
        # token weights -> how many pairs each domain contributes to the batch
        counts = rng.multinomial(batch, w / w.sum())
        a_all, b_all = [], []
        for k, d in enumerate(DOMAINS):
            if counts[k] == 0:
                continue
            docs = bed.docs[d]
            rows = rng.choice(len(docs), size=counts[k], p=None if doc_p is None else doc_p[d])
            cols = rng.integers(DOC_LEN - 1, size=counts[k])
            a_all.append(docs[rows, cols])
            b_all.append(docs[rows, cols + 1])
        a, b = np.concatenate(a_all), np.concatenate(b_all)
        logits = W[a]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(b)), b] -= 1
        grad = np.zeros_like(W)
        np.add.at(grad, a, p)
        W -= lr * grad / len(a) * V / 4
        if step % EVAL_EVERY == 0:
            curve.append(bed.target_loss(W))
    return W, curve


def steps_to_reach(curve: list[float], level: float) -> int | None:
    for i, v in enumerate(curve):
        if v <= level + 1e-12:
            return (i + 1) * EVAL_EVERY
    return None


def run_seed(seed: int, steps: int, batch: int, grid: int, proxy_runs: int) -> dict:
    bed = Testbed(seed, sizes={"web": 60_000, "code": 60_000, "books": 3_000, "noise": 60_000, "dup": 30_000})
    uniform = {d: 1 / len(DOMAINS) for d in DOMAINS}
    out: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def record(name, W, curve, weights=None, extra_steps=0):
        out[name] = {"target_loss": curve[-1], "curve": curve, "weights": weights, "proxy_steps": extra_steps}

    t = time.perf_counter()
    W, curve = train(bed, steps, batch, seed, uniform)
    record("uniform", W, curve, uniform)
    timings["uniform"] = time.perf_counter() - t

    tokens = alg.temperature_weights(bed.tokens, 1.0)
    record("token_proportional", *train(bed, steps, batch, seed, tokens), tokens)

    # DoReMi: reference = the uniform run's model; proxy run updates every EVAL_EVERY steps
    ref_W = W
    ref = {d: bed.domain_loss(ref_W, d) for d in DOMAINS}
    state = {"s": alg.doremi_init(DOMAINS)}

    def doremi_online(step, Wc):
        losses = {d: bed.domain_loss(Wc, d) for d in DOMAINS}
        state["s"] = alg.doremi_update(state["s"], losses, ref, eta=2.0, smoothing=1e-2)
        return state["s"]["weights"]

    train(bed, steps, batch, seed + 7, uniform, online=doremi_online)
    dw = state["s"]["average_weights"]
    record("doremi", *train(bed, steps, batch, seed, dw), dw, extra_steps=2 * steps)

    # ODM: online, reward = per-domain training loss
    ostate = {"s": alg.odm_init(DOMAINS)}

    def odm_online(step, Wc):
        losses = {d: bed.domain_loss(Wc, d) for d in DOMAINS}
        ostate["s"] = alg.odm_update(ostate["s"], losses, step=step)
        return ostate["s"]["weights"]

    W_odm, c_odm = train(bed, steps, batch, seed, uniform, online=odm_online)
    record("odm", W_odm, c_odm, ostate["s"]["weights"])

    # RegMix: proxy runs at a quarter of the budget with random mixtures
    rng = np.random.default_rng(seed + 99)
    X = rng.dirichlet(np.ones(len(DOMAINS)), proxy_runs)
    y = np.array([train(bed, steps // 4, batch, seed + 200 + i, dict(zip(DOMAINS, x)))[1][-1] for i, x in enumerate(X)])
    runs = ProxyRuns(DOMAINS, [str(i) for i in range(len(y))], X, y, "target")
    spearman = cv_spearman(runs, seed=seed)
    _, model = fit(runs, seed)
    rw, _ = search(model, DOMAINS, tokens, n_samples=50_000, top_k=50, seed=seed)
    record("regmix", *train(bed, steps, batch, seed, rw), rw, extra_steps=proxy_runs * (steps // 4))
    out["regmix"]["cv_spearman"] = spearman

    # sample re-weighter: per-document losses under the current model every EVAL_EVERY steps
    # after a warm-up; learned and noisy documents down-weighted, domains weighted by their mean
    def doc_sampler(step, Wc):
        if step < steps // 10:
            return None
        logp = Wc - np.logaddexp.reduce(Wc, axis=1, keepdims=True)
        losses = {}
        for d in DOMAINS:
            docs = bed.docs[d]
            nll = -logp[docs[:, :-1], docs[:, 1:]].mean(1)
            losses.update({(d, i): v for i, v in enumerate(nll)})
        weights = alg.doc_weights(losses, low_quantile=0.1, high_quantile=0.8, learned_weight=0.05, noisy_weight=0.05)
        probs = {}
        for d in DOMAINS:
            w = np.array([weights[(d, i)] for i in range(len(bed.docs[d]))])
            probs[d] = w / w.sum()
        return probs

    # the doc weights also move the domain weights (mean doc weight, as the manifest planner does)
    dstate: dict = {}

    def reweight_online(step, Wc):
        probs = doc_sampler(step, Wc)
        dstate["p"] = probs
        if probs is None:
            return None
        logp = Wc - np.logaddexp.reduce(Wc, axis=1, keepdims=True)
        means = {}
        for d in DOMAINS:
            docs = bed.docs[d]
            nll = -logp[docs[:, :-1], docs[:, 1:]].mean(1)
            means[d] = nll
        allv = np.concatenate(list(means.values()))
        lo, hi = np.quantile(allv, 0.1), np.quantile(allv, 0.8)
        mean_w = {d: float(np.where(v <= lo, 0.05, np.where(v > hi, 0.05, 1.0)).mean()) for d, v in means.items()}
        return alg.normalise({d: uniform[d] * mean_w[d] for d in DOMAINS})

    W_rw, c_rw = train(bed, steps, batch, seed, uniform, online=reweight_online, doc_sampler=lambda s, Wc: dstate.get("p"))
    record("reweighter", W_rw, c_rw, None)

    # grid-searched static mixture over the simplex (step 1/grid)
    t = time.perf_counter()
    best = None
    for combo in itertools.product(range(grid + 1), repeat=len(DOMAINS)):
        if sum(combo) != grid:
            continue
        wg = {d: c / grid for d, c in zip(DOMAINS, combo)}
        _, c = train(bed, steps, batch, seed, wg)
        if best is None or c[-1] < best[1][-1]:
            best = (wg, c)
    record("grid_static", None, best[1], best[0])
    timings["grid"] = time.perf_counter() - t

    uni_final = out["uniform"]["target_loss"]
    for r in out.values():
        r["steps_to_uniform_final"] = steps_to_reach(r["curve"], uni_final)
    return {"seed": seed, "methods": out, "timings_s": timings, "tokens": bed.tokens}


def main() -> None:
    args = bench_args(seeds=3, steps=400, batch=256, grid=5, proxy_runs=24).parse_args()
    t0 = time.perf_counter()
    per_seed = [run_seed(s, args.steps, args.batch, args.grid, args.proxy_runs) for s in range(args.seeds)]
    methods = list(per_seed[0]["methods"])
    summary = {}
    for m in methods:
        losses = [r["methods"][m]["target_loss"] for r in per_seed]
        reach = [r["methods"][m]["steps_to_uniform_final"] for r in per_seed]
        reach_ratio = [x / args.steps if x is not None else None for x in reach]
        grid = [r["methods"]["grid_static"]["target_loss"] for r in per_seed]
        gap = [lv / g - 1 for lv, g in zip(losses, grid)]
        summary[m] = {
            "target_loss_mean": round(statistics.mean(losses), 5), "target_loss_std": round(statistics.pstdev(losses), 5),
            "steps_to_uniform_final": reach, "steps_ratio_mean": (round(statistics.mean([x for x in reach_ratio if x is not None]), 3)
                                                                  if all(x is not None for x in reach_ratio) else None),
            "gap_to_grid_mean_pct": round(100 * statistics.mean(gap), 3), "gap_to_grid_max_pct": round(100 * max(gap), 3),
        }
    adaptive = ["doremi", "odm", "regmix", "reweighter"]
    best = min(adaptive, key=lambda m: summary[m]["target_loss_mean"])
    result = {
        "config": vars(args), "summary": summary, "best_adaptive": best,
        "targets": {"steps_ratio_max": 0.6, "gap_to_grid_pct_max": 1.0},
        "best_adaptive_meets": {
            "steps_ratio": summary[best]["steps_ratio_mean"] is not None and summary[best]["steps_ratio_mean"] <= 0.6,
            "gap_to_grid": summary[best]["gap_to_grid_mean_pct"] <= 1.0,
        },
        "weights": {m: [r["methods"][m]["weights"] for r in per_seed] for m in methods},
        "regmix_cv_spearman": [r["methods"]["regmix"].get("cv_spearman") for r in per_seed],
        "proxy_steps": {m: per_seed[0]["methods"][m]["proxy_steps"] for m in methods},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    save("mixture", result)
    print("\nmethod              target loss (mean ± sd)   steps to uniform's final (per seed)   gap to grid")
    for m in methods:
        s = summary[m]
        print(f"{m:<20}{s['target_loss_mean']:.4f} ± {s['target_loss_std']:.4f}        {str(s['steps_to_uniform_final']):<36}"
              f"{s['gap_to_grid_mean_pct']:+.2f}%")


if __name__ == "__main__":
    main()
