"""RegMix (Liu et al. 2024): generate proxy-run mixtures, fit a regressor on the proxy runs
(mixture weights per domain -> validation loss), gate on its cross-validated Spearman, then search
the simplex with Dirichlet samples around the token prior and average the top-k predicted mixtures.

Input is the paper's CSV layout: a mixtures CSV (`index` + one column per domain) and a losses CSV
(`index` + one column per validation metric), joined on `index`. The regressor is LightGBM with
the authors' settings (the `mixture` extra installs it); without it, scikit-learn's gradient
boosting (the `distill` extra) is used, and the chosen one is reported. Each function names the
file of the authors' code (github.com/sail-sg/regmix) it follows; none of it is copied."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dagster_llmdata.errors import MixtureError
from dagster_llmdata.mixture.algorithms import normalise

MIN_RUNS = 4


@dataclass
class ProxyRuns:
    domains: list[str]
    index: list[str]
    X: np.ndarray  # runs x domains, rows sum to 1
    y: np.ndarray  # runs
    target: str


@dataclass
class RegMixResult:
    weights: dict[str, float]
    cv_spearman: float | None
    regressor: str
    n_runs: int
    predicted_loss: float
    state: dict[str, Any] = field(default_factory=dict)


def read_csv_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except OSError as exc:
        raise MixtureError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MixtureError(f"{path} is not a readable CSV: {exc}") from None


def _float(value: str, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MixtureError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(out):
        raise MixtureError(f"{where}: {value!r} is not finite")
    return out


def read_mixtures(path: str | Path, domains: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(domains, index, X) from a mixtures CSV; every row is normalised to sum to 1."""
    header, rows = read_csv_rows(path)
    if "index" not in header:
        raise MixtureError(f"{path}: a mixtures CSV needs an `index` column (has {header})")
    cols = [c for c in header if c != "index"]
    if domains is not None:
        missing = [d for d in domains if d not in cols]
        if missing:
            raise MixtureError(f"{path}: no column for domains {missing}")
        cols = domains
    if not cols or not rows:
        raise MixtureError(f"{path}: no domain columns or no rows")
    index, X = [], []
    for n, row in enumerate(rows, 2):
        vals = [_float(row[c], f"{path}:{n}: {c}") for c in cols]
        if any(v < 0 for v in vals) or sum(vals) <= 0:
            raise MixtureError(f"{path}:{n}: mixture weights must be >= 0 and not all 0")
        index.append(row["index"])
        X.append([v / sum(vals) for v in vals])
    if len(set(index)) != len(index):
        raise MixtureError(f"{path}: `index` values repeat")
    return cols, index, np.array(X)


def read_proxy_runs(mixtures: str | Path, losses: str | Path, target: str) -> ProxyRuns:
    domains, index, X = read_mixtures(mixtures)
    header, rows = read_csv_rows(losses)
    if "index" not in header:
        raise MixtureError(f"{losses}: a losses CSV needs an `index` column (has {header})")
    if target not in header:
        raise MixtureError(f"{losses}: no target column {target!r}; metrics: {[c for c in header if c != 'index']}")
    by_index = {r["index"]: r for r in rows}
    keep = [i for i, key in enumerate(index) if key in by_index and by_index[key].get(target) not in (None, "")]
    if len(keep) < MIN_RUNS:
        raise MixtureError(f"only {len(keep)} proxy runs have both a mixture and a {target!r} loss; RegMix needs >= {MIN_RUNS}")
    y = np.array([_float(by_index[index[i]][target], f"{losses}: index {index[i]}: {target}") for i in keep])
    return ProxyRuns(domains, [index[i] for i in keep], X[keep], y, target)


# LightGBM as published in the authors' regression notebook (regression_fitting/regression.ipynb):
# gbdt regression, 1000 iterations at learning rate 1e-2, seed 42, early stopping after 3 rounds
# without improvement in l2 on held-out runs (the notebook holds out its first 128 of 1000).
LGBM_PARAMS = {"boosting_type": "gbdt", "objective": "regression", "n_estimators": 1000, "learning_rate": 1e-2,
               "random_state": 42, "verbosity": -1}
EARLY_STOPPING_ROUNDS = 3
# The notebook leaves min_child_samples at LightGBM's default 20: a leaf holds >= 20 of its 872
# training runs (2.3%). Far fewer runs with that default allow at most one split and the regressor
# predicts nearly a constant (CV Spearman around 0 on a clean linear signal at 48 runs), so a leaf
# keeps the published share of the runs, at least 2 (the default again from ~870 runs on).
PUBLISHED_TRAIN_RUNS = 872
LGBM_DEFAULT_MIN_CHILD = 20
HOLDOUT_FRACTION = 128 / 1000
# The search as published: 100k Dirichlet samples with alpha = the token prior, mean of the top 128.
SEARCH_SAMPLES = 100_000
SEARCH_TOP_K = 128
MIN_SPEARMAN = 0.5  # below it the regressor does not rank mixtures well enough to trust its argmin


def min_child_samples(n_runs: int) -> int:
    """The least runs a LightGBM leaf holds when fitting on `n_runs`: the published share, >= 2."""
    return max(2, min(LGBM_DEFAULT_MIN_CHILD, round(n_runs * LGBM_DEFAULT_MIN_CHILD / PUBLISHED_TRAIN_RUNS)))


def make_regressor(seed: int | None = None, params: dict[str, Any] | None = None, n_runs: int | None = None):
    """LightGBM with the published settings (overridable by `params`; `n_runs`, the runs it is fit
    on, sets the leaf size, see PUBLISHED_TRAIN_RUNS) when installed; else scikit-learn's gradient
    boosting, and the name says which."""
    try:
        import lightgbm as lgb

        kw = {**LGBM_PARAMS, **({"random_state": seed} if seed is not None else {}), **(params or {})}
        if n_runs is not None and "min_child_samples" not in kw:
            kw["min_child_samples"] = min_child_samples(n_runs)
        return "lightgbm", lgb.LGBMRegressor(**kw)
    except ImportError:
        try:
            from sklearn.ensemble import GradientBoostingRegressor
        except ImportError:
            raise MixtureError("RegMix needs lightgbm (pip install 'dagster-llmdata[mixture]') or scikit-learn") from None
        return "sklearn-gbr", GradientBoostingRegressor(n_estimators=300, learning_rate=0.05, max_depth=3, subsample=0.9,
                                                        random_state=seed or 0)


def _fit_one(X: np.ndarray, y: np.ndarray, seed: int | None, params: dict[str, Any] | None):
    """Fit on (X, y); LightGBM stops early on a held-out share of the runs as in the notebook."""
    n_hold = max(1, round(len(y) * HOLDOUT_FRACTION))
    name, model = make_regressor(seed, params, n_runs=len(y) - n_hold)
    if name != "lightgbm":
        model.fit(X, y)
        return name, model
    import lightgbm as lgb

    if len(y) - n_hold < 2:
        model.fit(X, y)
        return name, model
    perm = np.random.default_rng(0 if seed is None else seed).permutation(len(y))
    hold, train = perm[:n_hold], perm[n_hold:]
    import inspect

    # lightgbm >= 4.6 names the held-out set eval_X/eval_y and deprecates eval_set
    held = ({"eval_X": (X[hold],), "eval_y": (y[hold],)} if "eval_X" in inspect.signature(model.fit).parameters
            else {"eval_set": [(X[hold], y[hold])]})
    model.fit(X[train], y[train], eval_metric="l2", callbacks=[lgb.early_stopping(stopping_rounds=EARLY_STOPPING_ROUNDS, verbose=False)],
              **held)
    return name, model


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    def ranks(x):
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties share their mean rank
            m = x == v
            r[m] = r[m].mean()
        return r
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def cv_spearman(runs: ProxyRuns, folds: int = 5, seed: int | None = None, params: dict[str, Any] | None = None) -> float | None:
    """Spearman between held-out predictions and true losses over k folds (None below 2 per fold).
    Early stopping inside a fold uses only that fold's training runs."""
    n = len(runs.y)
    folds = min(folds, n // 2)
    if folds < 2:
        return None
    perm = np.random.default_rng(0 if seed is None else seed).permutation(n)
    pred = np.empty(n)
    for f in range(folds):
        test = perm[f::folds]
        train = np.setdiff1d(perm, test)
        _, model = _fit_one(runs.X[train], runs.y[train], seed, params)
        pred[test] = model.predict(runs.X[test])
    value = spearman(pred, runs.y)
    return None if math.isnan(value) else value


def fit(runs: ProxyRuns, seed: int | None = None, params: dict[str, Any] | None = None):
    return _fit_one(runs.X, runs.y, seed, params)


def repetition_caps(tokens: dict[str, float], budget_tokens: float, max_epochs: float = 4.0) -> dict[str, float]:
    """The largest weight each domain can take without its tokens being repeated more than
    `max_epochs` times in a run of `budget_tokens`: min(1, tokens_d * max_epochs / budget). The
    authors' generator bounds prior_d * MAXIMUM_USAGE, the same when the budget is the corpus."""
    if budget_tokens <= 0 or max_epochs <= 0:
        raise MixtureError(f"need budget_tokens > 0 and max_epochs > 0, got {budget_tokens}, {max_epochs}")
    caps = {d: min(1.0, float(n) * max_epochs / budget_tokens) for d, n in tokens.items()}
    if sum(caps.values()) < 1.0:
        raise MixtureError(f"{budget_tokens:g} tokens cannot be drawn from {sum(tokens.values()):g} without repeating some "
                           f"domain more than {max_epochs:g} epochs (the caps sum to {sum(caps.values()):.3f} < 1)")
    return caps


def _dedupe(rows: np.ndarray, threshold: float = 1e-5) -> np.ndarray:
    """Drop mixtures within `threshold` (L1) of the previous one in lexicographic order."""
    rows = rows[np.lexsort(rows.T)]
    keep = [0]
    for i in range(1, len(rows)):
        if np.abs(rows[i] - rows[keep[-1]]).sum() > threshold:
            keep.append(i)
    return rows[keep]


def proxy_mixtures(prior: dict[str, float], n: int, caps: dict[str, float] | None = None, max_epochs: float | None = 4.0,
                   temperature: float = 0.5, min_strength: float = 0.1, max_strength: float = 5.0, n_strengths: int = 15,
                   sample_multiplier: int = 100, minimum: float = 2e-4, seed: int = 42) -> tuple[list[str], np.ndarray]:
    """The paper's proxy-run mixtures (the authors' `generate_weights_dirichlet`): draw
    n * sample_multiplier Dirichlet samples with alpha = prior ** temperature * strength, the
    strength one of `n_strengths` log-spaced values in [min_strength, max_strength]; reject a
    sample where a domain exceeds its cap (`caps`, e.g. from `repetition_caps`; default
    prior_d * max_epochs, the authors' bound on the untempered prior); zero weights below `minimum`,
    renormalise and round to multiples of `minimum`; drop near-duplicates and pick n at random."""
    domains = list(prior)
    p = np.array([float(prior[d]) for d in domains])
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise MixtureError(f"the prior must be finite, >= 0 and not all 0: {prior}")
    p = p / p.sum()
    if caps is not None:
        bound = np.array([float(caps.get(d, 1.0)) for d in domains])
    elif max_epochs is not None:
        bound = np.minimum(p * max_epochs, 1.0)
    else:
        bound = np.ones(len(domains))
    if bound.sum() < 1.0:
        raise MixtureError(f"the caps sum to {bound.sum():.3f} < 1: no mixture respects them")
    if temperature < 1.0:
        p = p ** temperature
        p = p / p.sum()
    alpha = np.maximum(p, 1e-12)
    rng = np.random.default_rng(seed)
    strengths = np.logspace(np.log10(min_strength), np.log10(max_strength), n_strengths)
    pick = rng.integers(0, n_strengths, n * sample_multiplier)
    kept = []
    for s in pick:
        x = rng.dirichlet(alpha * strengths[s])
        if np.any(x > bound):
            continue
        x = np.where(x < minimum, 0.0, x)
        if x.sum() <= 0:
            continue
        x = np.round(x / x.sum() / minimum) * minimum
        kept.append(x)
    unique = _dedupe(np.array(kept)) if kept else np.empty((0, len(domains)))
    if len(unique) < n:
        raise MixtureError(f"only {len(unique)} distinct proxy mixtures within the caps; asked for {n} "
                           "(raise max_epochs or sample_multiplier)")
    chosen = unique[rng.choice(len(unique), n, replace=False)]
    return domains, chosen


def search(model, domains: list[str], prior: dict[str, float], n_samples: int = SEARCH_SAMPLES, top_k: int = SEARCH_TOP_K,
           concentration: float = 1.0, seed: int = 42, caps: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
    """The paper's search: `n_samples` Dirichlet samples with alpha = prior * concentration (the
    notebook: the token prior, concentration 1), predicted by the model; the mean of the `top_k`
    lowest predicted losses is the mixture. Samples above a domain's cap are rejected first."""
    rng = np.random.default_rng(seed)
    p = np.array([max(float(prior.get(d, 0.0)), 0.0) for d in domains])
    if p.sum() <= 0:
        raise MixtureError(f"the search prior is all zero over {domains}")
    p /= p.sum()
    samples = rng.dirichlet(np.maximum(p * concentration, 1e-12), n_samples)
    if caps is not None:
        bound = np.array([float(caps.get(d, 1.0)) for d in domains])
        samples = samples[np.all(samples <= bound + 1e-12, axis=1)]
        if len(samples) < top_k:
            raise MixtureError(f"only {len(samples)} of {n_samples} searched mixtures respect the repetition caps; need {top_k}")
    pred = model.predict(samples)
    top = np.argsort(pred, kind="stable")[:top_k]
    w = samples[top].mean(axis=0)
    return dict(zip(domains, (w / w.sum()).tolist())), float(pred[top].mean())


def regmix(runs: ProxyRuns, prior: dict[str, float] | None = None, n_samples: int = SEARCH_SAMPLES, top_k: int = SEARCH_TOP_K,
           seed: int | None = None, min_spearman: float = MIN_SPEARMAN, caps: dict[str, float] | None = None,
           params: dict[str, Any] | None = None) -> RegMixResult:
    """Fit, check, search. The cross-validated Spearman gates the answer: below `min_spearman`
    (or with too few runs to measure it) this raises rather than return a mixture the regressor
    cannot back."""
    prior = normalise(prior, runs.domains) if prior else {d: 1 / len(runs.domains) for d in runs.domains}
    score = cv_spearman(runs, seed=seed, params=params)
    if score is None or score < min_spearman:
        shown = "not measurable (too few runs or constant predictions)" if score is None else f"{score:.4f}"
        raise MixtureError(f"RegMix refused: cross-validated Spearman over {len(runs.y)} proxy runs is {shown}, "
                           f"below the gate {min_spearman} (more proxy runs, or min_spearman to lower the gate)")
    name, model = fit(runs, seed, params)
    search_seed = 42 if seed is None else seed
    weights, predicted = search(model, runs.domains, prior, n_samples=n_samples, top_k=top_k, seed=search_seed, caps=caps)
    state = {"algorithm": "regmix", "target": runs.target, "n_runs": len(runs.y), "regressor": name,
             "cv_spearman": score, "min_spearman": min_spearman, "predicted_loss": predicted, "top_k": top_k,
             "n_samples": n_samples, "prior": prior, "caps": caps, "weights": weights}
    return RegMixResult(weights, score, name, len(runs.y), predicted, state)


def write_mixtures_csv(domains: list[str], X: np.ndarray, out: str | Path, prefix: str = "proxy") -> int:
    """A mixtures CSV (`index` + one column per domain) in the layout `read_mixtures` reads."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", *domains])
        for i, row in enumerate(X, 1):
            w.writerow([f"{prefix}{i}", *(f"{float(v):.6g}" for v in row)])
    return len(X)


def predict_csv(model, domains: list[str], mixtures: str | Path, out: str | Path) -> int:
    _, index, X = read_mixtures(mixtures, domains)
    pred = model.predict(X)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "predicted"])
        for key, value in zip(index, pred):
            w.writerow([key, f"{float(value):.6g}"])
    return len(index)
