"""MinHash signatures and LSH band keys for a batch of texts, computed with NumPy over all
shingles of the batch. One hash family for every doc ever indexed: (a*x + b) mod 2**64, top 32
bits (multiply-shift), with (a, b) drawn from the seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dagster_llmdata.dedup.shingles import Shingler, mix64

_U64 = np.uint64
EMPTY = np.uint32(0xFFFFFFFF)  # the signature of a doc with no shingles (never a candidate)
SCRATCH_VALUES = 1 << 23  # shingles x hashes computed at once: ~64 MB of uint64 scratch


@dataclass(frozen=True)
class MinhashScheme:
    shingler: Shingler
    bands: int
    rows: int
    seed: int = 1
    _coeffs: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        k = self.bands * self.rows
        a = rng.integers(1, 2**63, size=k, dtype=np.int64).astype(_U64) * _U64(2) + _U64(1)  # odd multipliers
        b = rng.integers(0, 2**63, size=k, dtype=np.int64).astype(_U64)
        object.__setattr__(self, "_coeffs", (a, b))

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """The Jaccard similarity at which a pair becomes a candidate with probability ~1/2."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), bands*rows) uint32 MinHash signatures; a doc without shingles gets EMPTY."""
        shingles, docs = self.shingler.batch(texts)
        sig = np.full((len(texts), self.num_hashes), EMPTY, dtype=np.uint32)
        if len(shingles) == 0:
            return sig
        present = np.unique(docs)
        starts = np.searchsorted(docs, present)
        a, b = self._coeffs
        step = max(1, SCRATCH_VALUES // self.num_hashes)
        # chunks of whole docs, so a reduceat segment never spans two chunks
        bounds = np.searchsorted(starts, np.arange(0, len(shingles), step))
        chunk_docs = np.unique(np.concatenate((bounds, [len(present)])))
        for c0, c1 in zip(chunk_docs[:-1], chunk_docs[1:]):
            s0 = starts[c0]
            s1 = starts[c1] if c1 < len(present) else len(shingles)
            with np.errstate(over="ignore"):
                h = np.multiply(shingles[s0:s1, None], a)  # in place from here: one scratch matrix
                h += b
                h >>= _U64(32)
            sig[present[c0:c1]] = np.minimum.reduceat(h, starts[c0:c1] - s0, axis=0)
        return sig

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(n, bands) uint64: one key per band, equal keys = all `rows` values equal. A doc with no
        shingles gets key 0 in every band (callers skip it)."""
        n = len(sig)
        keys = np.zeros((n, self.bands), dtype=_U64)
        blocks = sig.reshape(n, self.bands, self.rows).astype(_U64)
        with np.errstate(over="ignore"):
            for r in range(self.rows):
                keys = mix64(keys + blocks[:, :, r] + _U64(r + 1))
            keys = keys | _U64(1)  # never 0
        keys[(sig == EMPTY).all(axis=1)] = 0
        return keys
