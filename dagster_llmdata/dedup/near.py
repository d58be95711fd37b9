"""Near-duplicate search for one partition: LSH candidates within it and against the earlier
partitions' index entries, each candidate pair checked by its exact Jaccard similarity, then
clusters whose survivor is the earliest member (earlier partitions first, then row order)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from dagster_llmdata.dedup.index import IndexEntry
from dagster_llmdata.dedup.minhash import MinhashScheme
from dagster_llmdata.dedup.shingles import jaccard

# estimated Jaccard (share of equal signature values) below verify_threshold minus this margin is
# not worth an exact check: at 60 hashes the estimate's standard error is at most ~0.065
PREFILTER_MARGIN = 0.25


@dataclass
class NearDuplicates:
    """The verdict for each doc of a partition (by row ordinal)."""

    kept: np.ndarray  # bool per doc
    kept_id: list[str | None]  # per doc: the survivor's id for dropped docs
    kept_partition: list[str | None]  # per doc: the survivor's partition for dropped docs
    stats: dict[str, int] = field(default_factory=dict)


def signatures_of(scheme: MinhashScheme, batches: Iterable[list[str]]) -> np.ndarray:
    parts = [scheme.signatures(texts) for texts in batches]
    return np.concatenate(parts) if parts else np.empty((0, scheme.num_hashes), np.uint32)


def entry_arrays(scheme: MinhashScheme, sig: np.ndarray) -> dict[str, np.ndarray]:
    """What an index entry holds for a partition's kept docs: per band the sorted keys and the
    row ordinal of each, and the signatures (for the cheap pre-check before exact Jaccard)."""
    keys = scheme.band_keys(sig)
    order = np.argsort(keys, axis=0, kind="stable")
    return {"keys": np.take_along_axis(keys, order, axis=0).T.copy(), "rows": order.T.astype(np.int64).copy(), "sig": sig}


def _pairs_within(keys: np.ndarray) -> np.ndarray:
    """Candidate pairs (i < j) of docs sharing a band key: each member with its group's first and
    with its predecessor (linear in the group size, enough to connect a cluster)."""
    out = []
    n = len(keys)
    for b in range(keys.shape[1]):
        col = keys[:, b]
        order = np.argsort(col, kind="stable")
        sorted_keys = col[order]
        same = (sorted_keys[1:] == sorted_keys[:-1]) & (sorted_keys[1:] != 0)
        if not same.any():
            continue
        idx = np.flatnonzero(same) + 1  # positions whose key equals the previous one
        group_start = np.flatnonzero(np.concatenate(([True], ~same)))
        first = group_start[np.searchsorted(group_start, idx, side="right") - 1]
        out.append(np.stack([order[idx - 1], order[idx]], axis=1))
        out.append(np.stack([order[first], order[idx]], axis=1))
    if not out:
        return np.empty((0, 2), np.int64)
    pairs = np.sort(np.concatenate(out), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def _pairs_with(keys: np.ndarray, entry: IndexEntry) -> np.ndarray:
    """Candidate pairs (own doc, entry row) sharing a band key with the entry's kept docs."""
    ekeys, erows = entry.array("keys"), entry.array("rows")
    out = []
    for b in range(keys.shape[1]):
        sorted_keys = ekeys[b]
        if len(sorted_keys) == 0:
            continue
        col = keys[:, b]
        pos = np.minimum(np.searchsorted(sorted_keys, col), len(sorted_keys) - 1)
        hit = (sorted_keys[pos] == col) & (col != 0)
        if hit.any():
            out.append(np.stack([np.flatnonzero(hit), np.asarray(erows[b][pos[hit]])], axis=1))
    if not out:
        return np.empty((0, 2), np.int64)
    return np.unique(np.concatenate(out), axis=0)


def _agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b).mean(axis=1)


class _Clusters:
    """Union-find over node ids; a root is always the cluster's earliest node (smallest id)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self.parent[hi] = lo


def find_near_duplicates(
    scheme: MinhashScheme,
    verify_threshold: float,
    sig: np.ndarray,
    ids: list[str],
    texts_of: Callable[[np.ndarray], list[str]],
    earlier: list[IndexEntry],
) -> NearDuplicates:
    """`sig` and `ids` cover the partition's docs in row order; `texts_of(ordinals)` reads texts
    back for the exact check (only docs in candidate pairs are read). `earlier`: the index entries
    of partitions that landed before, oldest first."""
    n = len(ids)
    keys = scheme.band_keys(sig)
    shingle_sets: dict[tuple[int, int], np.ndarray] = {}  # (entry number or -1, ordinal) -> set
    stats = {"candidate_pairs": 0, "verified_pairs": 0}

    def verify(pairs: np.ndarray, other_sig: np.ndarray, other: int, other_texts: Callable[[np.ndarray], list[str]]) -> np.ndarray:
        stats["candidate_pairs"] += len(pairs)
        if verify_threshold <= 0 or len(pairs) == 0:
            return pairs
        est = _agreement(sig[pairs[:, 0]], np.asarray(other_sig[pairs[:, 1]]))
        pairs = pairs[est >= verify_threshold - PREFILTER_MARGIN]
        for side, key, reader in ((pairs[:, 0], -1, texts_of), (pairs[:, 1], other, other_texts)):
            need = np.unique([o for o in side if (key, int(o)) not in shingle_sets])
            if len(need):
                for o, s in zip(need, scheme.shingler.sets(reader(need))):
                    shingle_sets[(key, int(o))] = s
        ok = np.array([jaccard(shingle_sets[(-1, int(a))], shingle_sets[(other, int(b))]) >= verify_threshold for a, b in pairs], dtype=bool)
        return pairs[ok] if len(pairs) else pairs

    edges: list[tuple[int, int]] = []  # node ids: earlier partitions' docs first, in landing order, then own rows
    offsets: list[int] = []
    base = 0
    for number, entry in enumerate(earlier):
        offsets.append(base)
        pairs = verify(_pairs_with(keys, entry), entry.array("sig"), number, lambda o, e=entry: e.take(o, ["text"])["text"])
        edges += [(base + int(row), -1 - int(own)) for own, row in pairs]
        base += len(entry.array("sig"))
    own_base = base
    pairs = verify(_pairs_within(keys), sig, -1, texts_of)
    edges += [(-1 - int(a), -1 - int(b)) for a, b in pairs]

    clusters = _Clusters()
    for a, b in edges:
        clusters.union(a if a >= 0 else own_base - 1 - a, b if b >= 0 else own_base - 1 - b)
    stats["verified_pairs"] = len(edges)
    kept = np.ones(n, dtype=bool)
    kept_id: list[str | None] = [None] * n
    kept_partition: list[str | None] = [None] * n
    from_peer: dict[int, list[tuple[int, int]]] = {}  # entry number -> [(own ordinal, entry row)]
    for i in sorted({-1 - x for e in edges for x in e if x < 0}):
        root = clusters.find(own_base + i)
        if root == own_base + i:
            continue
        kept[i] = False
        if root >= own_base:
            kept_id[i] = ids[root - own_base]
        else:
            number = int(np.searchsorted(offsets, root, side="right")) - 1
            from_peer.setdefault(number, []).append((i, root - offsets[number]))
    for number, members in from_peer.items():
        entry = earlier[number]
        peer_ids = entry.take(np.array([row for _, row in members]), ["id"])["id"]
        for (i, _), pid in zip(members, peer_ids):
            kept_id[i], kept_partition[i] = pid, entry.partition
    stats["clusters"] = len({clusters.find(own_base + i) for i in range(n) if not kept[i]})
    return NearDuplicates(kept, kept_id, kept_partition, stats)
