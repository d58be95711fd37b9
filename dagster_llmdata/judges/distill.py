"""The cheap half of the FineWeb-Edu pattern: an LLM judge labels a stratified sample, a linear
classifier on hashed n-grams learns those labels, scores every document fast on CPU, and its
agreement with the judge on held-out documents says how far to trust it.

Needs scikit-learn and scipy (`pip install 'dagster-llmdata[distill]'`); imported lazily so the
rest of the package works without them."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

INSTALL_HINT = "distilling a judge needs scikit-learn and scipy: pip install 'dagster-llmdata[distill]'"

ModelKind = Literal["logistic", "ridge"]
MIN_FOR_HOLDOUT = 5  # fewer judged documents are all used for training; no agreement is measured


def _sklearn():
    try:
        import scipy.stats  # noqa: F401
        import sklearn
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return sklearn


# --- the sample the judge labels -----------------------------------------------------------------


def stratified_sample(
    rows_meta: Sequence[Mapping[str, Any]],
    size: int,
    seed: int,
    strata: Sequence[str] = ("domain", "length"),
    length_bins: int = 4,
) -> list[int]:
    """Positions (sorted) of `size` rows drawn so that every stratum is represented: a stratum is a
    combination of the named keys, where `length` means the row's text-length quantile bin
    (`length_bins` bins over all rows; each row's `length` key is its text length). Every stratum
    gets one row first (the biggest strata first when `size` is smaller than their number), the
    rest is shared out in proportion to the strata's sizes. The same rows and seed give the same
    sample, whatever the Python hash seed."""
    n = len(rows_meta)
    if size >= n:
        return list(range(n))
    keys = _strata_keys(rows_meta, strata, length_bins)
    members: dict[tuple, list[int]] = defaultdict(list)
    for pos, key in enumerate(keys):
        members[key].append(pos)
    ordered = sorted(members, key=lambda k: (-len(members[k]), repr(k)))
    quota = _allocate(size, [len(members[k]) for k in ordered])
    picked: list[int] = []
    for key, take in zip(ordered, quota):
        rng = random.Random(f"{seed}:{key!r}")  # a str seed is hashed with SHA-512: stable across runs
        picked += rng.sample(members[key], take)
    return sorted(picked)


def _strata_keys(rows: Sequence[Mapping[str, Any]], strata: Sequence[str], length_bins: int) -> list[tuple]:
    columns = []
    for name in strata:
        if name == "length":
            lengths = np.array([float(r.get("length") or 0) for r in rows])
            edges = np.quantile(lengths, np.linspace(0, 1, length_bins + 1)[1:-1])
            columns.append(np.searchsorted(edges, lengths, side="right").tolist())
        else:
            columns.append([str(r.get(name)) for r in rows])
    return list(zip(*columns))


def _allocate(size: int, sizes: list[int]) -> list[int]:
    """One per stratum (in the given order, while `size` lasts), then the rest in proportion to
    what each stratum has left, by largest remainder (never more than a stratum holds)."""
    quota = [1 if i < size else 0 for i in range(len(sizes))]
    left = size - sum(quota)
    room = [s - q for s, q in zip(sizes, quota)]
    total = sum(room)
    if left <= 0 or total == 0:
        return quota
    shares = [left * r / total for r in room]
    floors = [int(s) for s in shares]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in by_remainder[: left - sum(floors)]:
        floors[i] += 1
    return [q + f for q, f in zip(quota, floors)]


# --- the classifier ------------------------------------------------------------------------------


@dataclass
class DistilledClassifier:
    """Hashed word 1-2-gram features and a linear model fitted to a judge's scores. `score` gives a
    float on the judge's scale: the expected label under the predicted class probabilities
    (logistic), the regression output clipped to the scale (ridge), or the judge's only score
    (constant: when the judge gave every sampled document the same one)."""

    kind: ModelKind | Literal["constant"]
    labels: list[float]
    model: Any
    max_chars: int
    n_features: int
    seed: int
    holdout: dict[str, Any] = field(default_factory=dict)

    def features(self, texts: Sequence[str]):
        return _vectorizer(self.n_features).transform([t[: self.max_chars] for t in texts])

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if self.kind == "constant":
            return np.full(len(texts), self.labels[0], dtype=float)
        x = self.features(texts)
        if self.kind == "logistic":
            return self.model.predict_proba(x) @ np.asarray(self.model.classes_, dtype=float)
        return np.clip(self.model.predict(x), min(self.labels), max(self.labels))

    def save(self, path: str | Path) -> Path:
        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path)
        return path


def load_classifier(path: str | Path) -> DistilledClassifier:
    _sklearn()
    import joblib

    model = joblib.load(path)
    if not isinstance(model, DistilledClassifier):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a DistilledClassifier")
    return model


def _vectorizer(n_features: int):
    from sklearn.feature_extraction.text import HashingVectorizer

    # stateless: nothing to fit, nothing to store but its settings. Word n-grams only: adding
    # char 3-4-grams cut scoring to ~2,000 docs/s per core, under the 5,000 a full corpus needs
    return HashingVectorizer(
        ngram_range=(1, 2), n_features=n_features, alternate_sign=False, norm="l2", dtype=np.float32,
    )


def train_classifier(
    texts: Sequence[str],
    labels: Sequence[float],
    seed: int,
    holdout: float = 0.2,
    kind: ModelKind = "logistic",
    max_chars: int = 4000,
    n_features: int = 2**20,
    threshold: float | None = None,
) -> DistilledClassifier:
    """Fits on a (label-stratified where possible) `1 - holdout` share of the judged documents and
    records its agreement with the judge on the rest in `.holdout` (at `threshold`, by default the
    middle of the scores seen).
    Only the first `max_chars` characters of a document are read, for speed."""
    _sklearn()
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels, dtype=float)
    if not len(y):
        raise ValueError("no judged documents to learn from")
    scale = sorted(set(y.tolist()))
    if len(scale) < 2:  # the judge gave every document one score: that score is all there is to learn
        return DistilledClassifier("constant", scale, None, max_chars, n_features, seed)
    clf = DistilledClassifier(kind, scale, None, max_chars, n_features, seed)
    x = clf.features(texts)
    counts = np.unique(y, return_counts=True)[1]
    train, test = np.arange(len(y)), np.arange(0)
    if len(y) >= MIN_FOR_HOLDOUT:
        n_test = math.ceil(holdout * len(y))
        # a stratified split needs two of every label and room for each label on both sides
        stratify = counts.min() >= 2 and len(scale) <= min(n_test, len(y) - n_test)
        train, test = train_test_split(train, test_size=n_test, random_state=seed, stratify=y if stratify else None)
    if len(set(y[train].tolist())) < 2:  # too few documents to hold any back and still see two labels
        train, test = np.arange(len(y)), np.arange(0)
    if kind == "logistic":
        # saga: seconds where lbfgs takes minutes on 2**20 hashed features, with the same agreement
        clf.model = LogisticRegression(C=4.0, solver="saga", tol=1e-3, max_iter=1000, random_state=seed)
    else:
        clf.model = Ridge(alpha=1.0, random_state=seed)
    clf.model.fit(x[train], y[train])
    if len(test):
        cut = threshold if threshold is not None else (scale[0] + scale[-1]) / 2
        clf.holdout = agreement(y[test], clf.score([texts[i] for i in test]), threshold=cut)
    return clf


# --- agreement with the judge --------------------------------------------------------------------


def agreement(judge_scores: Sequence[float], classifier_scores: Sequence[float], threshold: float) -> dict[str, Any]:
    """How well the classifier agrees with the judge: Spearman rank correlation of the scores;
    precision, recall, F1 and accuracy of the binary decision `score >= threshold`; and the
    confusion matrix of the scores rounded to whole labels (rows: judge, columns: classifier)."""
    _sklearn()
    from scipy.stats import spearmanr

    judge = np.asarray(judge_scores, dtype=float)
    ours = np.asarray(classifier_scores, dtype=float)
    if judge.shape != ours.shape:
        raise ValueError(f"{judge.size} judge scores but {ours.size} classifier scores")
    n = int(judge.size)
    rho = spearmanr(judge, ours).statistic if n > 1 else float("nan")
    truth, guess = judge >= threshold, ours >= threshold
    tp, fp, fn = int(np.sum(truth & guess)), int(np.sum(~truth & guess)), int(np.sum(truth & ~guess))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    judge_labels, our_labels = np.rint(judge).astype(int), np.rint(ours).astype(int)
    labels = sorted(set(judge_labels.tolist()) | set(our_labels.tolist()))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for j, c in zip(judge_labels.tolist(), our_labels.tolist()):
        matrix[index[j]][index[c]] += 1
    return {
        "n": n,
        "threshold": float(threshold),
        "spearman": None if np.isnan(rho) else float(rho),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": float(np.mean(truth == guess)) if n else 0.0,
        "confusion": {"labels": labels, "matrix": matrix},
    }
