"""The global sample order of a training run, as a function of its manifest history and seed only.

A run's history is a list of segments, each a manifest that applies from a global sample offset
on (the first from 0; `MixtureDataset.update` adds one at a step boundary). Sample i's domain is
drawn with the probabilities of the segment holding i, from a uniform number fixed by (seed,
i // BLOCK): the same i gets the same number whatever came before, and a switch changes only the
probabilities it is compared with.

Each domain is read through its own permutations, one per epoch, seeded by the seed and the
domain's *name* (never its position among the domains), and a per-domain count of the documents
already drawn: a switch, a weight set to 0 or a domain added leaves every other domain's order
and place as they were, and no document repeats before its domain is exhausted. A domain stops
being drawn once it has been read `epoch_cap` times (the rest of the stream goes to the others,
in proportion); a domain whose pinned documents differ in a later manifest starts its count again.

Nothing here reads data: the stream yields (sample, domain, segment, (input, file, row))."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dagster_llmdata.errors import ManifestError
from dagster_llmdata.mixture.manifest import DEFAULT_EPOCH_CAP, Manifest

BLOCK = 4096
STREAM_ORDER = 2  # recorded with a stream digest: the order this module defines


def name_seed(name: str) -> int:
    """A domain's permutation seed from its name (stable across processes and versions)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Segment:
    start: int  # the first global sample it applies to
    manifest: Manifest


class DomainSource:
    """One domain's documents as one manifest pins them: the k-th document by (input, file, row),
    and the document order of each epoch."""

    def __init__(self, manifest: Manifest, domain: str, seed: int, doc_p: np.ndarray | None):
        self.name = domain
        self.ranges = np.array(manifest.draw[domain], dtype=np.int64)
        self.cum = np.cumsum(self.ranges[:, 3] - self.ranges[:, 2])
        self.size = int(self.cum[-1])
        self.doc_p = doc_p  # cumulative per-document draw probabilities (weighted draws), or None
        # what the documents are: the pinned files (or table version) and row ranges it reads
        inputs = [{k: v for k, v in inp.items() if k not in ("dataset",)} for inp in manifest.inputs]
        used = sorted({int(r[0]) for r in self.ranges})
        self.identity = hashlib.sha256(json.dumps([[inputs[i] for i in used], self.ranges.tolist(), doc_p is not None],
                                                  sort_keys=True, default=str).encode()).hexdigest()[:16]
        self._seed = [seed, name_seed(domain)]
        self._perm: tuple[int, np.ndarray] | None = None

    def document(self, k: int, pick: float) -> int:
        """The document of the domain's k-th draw."""
        if self.doc_p is not None:  # weighted: with replacement, by the document's weight
            return min(int(np.searchsorted(self.doc_p, pick, side="right")), self.size - 1)
        epoch, pos = divmod(k, self.size)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([*self._seed, epoch]).permutation(self.size))
        return int(self._perm[1][pos])

    def locate(self, doc: int) -> tuple[int, int, int]:
        j = int(np.searchsorted(self.cum, doc, side="right"))
        before = int(self.cum[j - 1]) if j else 0
        r = self.ranges[j]
        return int(r[0]), int(r[1]), int(r[2] + doc - before)


class Stream:
    """The sample order of `segments` (sorted by start, the first at 0) for `seed`."""

    def __init__(self, segments: list[Segment], seed: int, epoch_cap: int | None = DEFAULT_EPOCH_CAP,
                 doc_probabilities=None):
        if not segments or segments[0].start != 0:
            raise ManifestError("a stream's first manifest applies from sample 0")
        if any(b.start < a.start for a, b in zip(segments, segments[1:])):
            raise ManifestError("a stream's manifests must apply in order of their start samples")
        if epoch_cap is not None and epoch_cap < 1:
            raise ValueError(f"epoch_cap must be >= 1 or None, got {epoch_cap}")
        self.segments, self.seed, self.epoch_cap = segments, int(seed), epoch_cap
        # per segment: {domain: DomainSource} of the domains it draws, and their probabilities
        self._sources: list[dict[str, DomainSource]] = []
        self._probs: list[dict[str, float]] = []
        for s in segments:
            m = s.manifest
            names = sorted(d for d in m.domains if m.domains[d]["probability"] > 0 and m.draw.get(d))
            if not names:
                raise ManifestError(f"manifest {m.version or '(unwritten)'} has no domain to draw from")
            doc_p = doc_probabilities(m, names) if (m.doc_weights and doc_probabilities) else {}
            self._sources.append({d: DomainSource(m, d, self.seed, doc_p.get(d)) for d in names})
            self._probs.append({d: float(m.domains[d]["probability"]) for d in names})
        self.names = sorted({d for src in self._sources for d in src})

    # the stream is replayed from sample 0 (cheap: uniform numbers and counts, no data) so that
    # exhaustion and counts are exact at any start
    def iter_blocks(self, stop: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per block from sample 0: (first sample, domain index into `self.names`, per-sample count
        before it in its domain, segment index, weighted-draw numbers). Ends early once every
        domain is exhausted (the arrays are then shorter than BLOCK)."""
        index = {d: n for n, d in enumerate(self.names)}
        counts: dict[tuple[str, str], int] = {}  # (domain, identity) -> draws so far
        block = 0
        while stop is None or block * BLOCK < stop:
            i0 = block * BLOCK
            rng = np.random.default_rng([self.seed, block])
            u, picks = rng.random(BLOCK), rng.random(BLOCK)
            dom = np.full(BLOCK, -1, dtype=np.int64)
            before = np.zeros(BLOCK, dtype=np.int64)
            seg = np.zeros(BLOCK, dtype=np.int64)
            p = 0
            while p < BLOCK:
                s = self._segment_at(i0 + p)
                end = BLOCK if s + 1 == len(self.segments) else min(BLOCK, self.segments[s + 1].start - i0)
                sources = self._sources[s]
                active = [d for d in sources if not self._exhausted(sources[d], counts)]
                if not active:
                    break
                pr = np.array([self._probs[s][d] for d in active])
                cdf = np.cumsum(pr / pr.sum())
                run = np.minimum(np.searchsorted(cdf, u[p:end], side="right"), len(active) - 1)
                cut = len(run)  # the run ends just after the draw that exhausts a domain
                if self.epoch_cap is not None:
                    for a, d in enumerate(active):
                        src = sources[d]
                        if src.doc_p is not None:
                            continue  # weighted draws are with replacement: never exhausted
                        left = self.epoch_cap * src.size - counts.get((d, src.identity), 0)
                        hits = np.flatnonzero(run == a)
                        if len(hits) >= left:
                            cut = min(cut, int(hits[left - 1]) + 1)
                run = run[:cut]
                for a, d in enumerate(active):
                    hits = np.flatnonzero(run == a)
                    if len(hits):
                        key = (d, sources[d].identity)
                        start = counts.get(key, 0)
                        before[p + hits] = start + np.arange(len(hits))
                        counts[key] = start + len(hits)
                        dom[p + hits] = index[d]
                seg[p:p + cut] = s
                p += cut
            n = p
            yield i0, dom[:n], before[:n], seg[:n], picks[:n]
            if n < BLOCK:
                return
            block += 1

    def iter_locators(self, start: int = 0, stop: int | None = None, want=None
                      ) -> Iterator[tuple[int, str, int, tuple[int, int, int]]]:
        """(sample, domain, segment, (input, file, row)) for samples start..stop-1 (or to the end of
        the data); `want(samples) -> bool mask` keeps only some (a rank's or worker's share) and
        locates only those."""
        for i0, dom, before, seg, picks in self.iter_blocks(stop):
            samples = np.arange(i0, i0 + len(dom))
            mask = (samples >= start) & ((samples < stop) if stop is not None else True)
            if want is not None:
                mask &= want(samples)
            for n in np.flatnonzero(mask):
                d, s = self.names[int(dom[n])], int(seg[n])
                src = self._sources[s][d]
                yield int(samples[n]), d, s, src.locate(src.document(int(before[n]), float(picks[n])))

    def _segment_at(self, i: int) -> int:
        s = 0
        while s + 1 < len(self.segments) and self.segments[s + 1].start <= i:
            s += 1
        return s

    def _exhausted(self, src: DomainSource, counts: dict[tuple[str, str], int]) -> bool:
        if self.epoch_cap is None or src.doc_p is not None:
            return False
        return counts.get((src.name, src.identity), 0) >= self.epoch_cap * src.size


def switched_digest(items) -> str:
    """Digest of a switched stream: (segment manifest version, input, file, row) per sample."""
    h = hashlib.sha256()
    for version, (inp, f, row) in items:
        h.update(f"{version}:{inp}:{f}:{row};".encode())
    return h.hexdigest()


def segment_dicts(segments: list[Segment]) -> list[dict[str, Any]]:
    return [{"start": s.start, "version": s.manifest.version, "manifest": str(s.manifest.path) if s.manifest.path else None}
            for s in segments]
