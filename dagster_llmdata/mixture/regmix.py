"""RegMix (Liu et al. 2024): fit a regressor on small proxy runs (mixture weights per domain ->
validation loss), then search the simplex with Dirichlet samples around the token prior and
average the top-k predicted mixtures.

Input is the paper's CSV layout: a mixtures CSV (`index` + one column per domain) and a losses CSV
(`index` + one column per validation metric), joined on `index`. The regressor is LightGBM, as in
the paper (the `mixture` extra installs it); without it, scikit-learn's gradient boosting (the
`distill` extra) is used, and the chosen one is reported."""

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


def make_regressor(seed: int = 0):
    """LightGBM as in the paper when installed; else scikit-learn's gradient boosting."""
    try:
        import lightgbm as lgb

        return "lightgbm", lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05, num_leaves=15, min_child_samples=2,
                                             subsample=0.9, subsample_freq=1, random_state=seed, verbose=-1)
    except ImportError:
        try:
            from sklearn.ensemble import GradientBoostingRegressor
        except ImportError:
            raise MixtureError("RegMix needs lightgbm (pip install 'dagster-llmdata[mixture]') or scikit-learn") from None
        return "sklearn-gbr", GradientBoostingRegressor(n_estimators=300, learning_rate=0.05, max_depth=3, subsample=0.9, random_state=seed)


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


def cv_spearman(runs: ProxyRuns, folds: int = 5, seed: int = 0) -> float | None:
    """Spearman between held-out predictions and true losses over k folds (None below 2 per fold)."""
    n = len(runs.y)
    folds = min(folds, n // 2)
    if folds < 2:
        return None
    perm = np.random.default_rng(seed).permutation(n)
    pred = np.empty(n)
    for f in range(folds):
        test = perm[f::folds]
        train = np.setdiff1d(perm, test)
        _, model = make_regressor(seed)
        model.fit(runs.X[train], runs.y[train])
        pred[test] = model.predict(runs.X[test])
    value = spearman(pred, runs.y)
    return None if math.isnan(value) else value


def fit(runs: ProxyRuns, seed: int = 0):
    name, model = make_regressor(seed)
    model.fit(runs.X, runs.y)
    return name, model


def search(model, domains: list[str], prior: dict[str, float], n_samples: int = 100_000, top_k: int = 100,
           concentration: float = 1.0, seed: int = 0) -> tuple[dict[str, float], float]:
    """Dirichlet samples around `prior` (alpha = prior * K * concentration, plus pure uniform
    ones so a small prior domain can still be chosen), predicted by the model; the mean of the
    top-k lowest predicted losses is the mixture."""
    rng = np.random.default_rng(seed)
    p = np.array([max(prior.get(d, 0.0), 1e-3) for d in domains])
    p /= p.sum()
    alpha = p * len(domains) * concentration
    samples = np.vstack([rng.dirichlet(alpha, n_samples // 2), rng.dirichlet(np.ones(len(domains)), n_samples - n_samples // 2)])
    pred = model.predict(samples)
    top = np.argsort(pred)[:top_k]
    w = samples[top].mean(axis=0)
    return dict(zip(domains, (w / w.sum()).tolist())), float(pred[top].mean())


def regmix(runs: ProxyRuns, prior: dict[str, float] | None = None, n_samples: int = 100_000, top_k: int = 100,
           seed: int = 0) -> RegMixResult:
    prior = normalise(prior, runs.domains) if prior else {d: 1 / len(runs.domains) for d in runs.domains}
    score = cv_spearman(runs, seed=seed)
    name, model = fit(runs, seed)
    weights, predicted = search(model, runs.domains, prior, n_samples=n_samples, top_k=top_k, seed=seed)
    state = {"algorithm": "regmix", "target": runs.target, "n_runs": len(runs.y), "regressor": name,
             "cv_spearman": score, "predicted_loss": predicted, "top_k": top_k, "n_samples": n_samples, "prior": prior}
    return RegMixResult(weights, score, name, len(runs.y), predicted, state)


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
