"""Shingles of a batch of texts, hashed with NumPy over the whole batch at once (no Python loop
per word or per shingle): the texts are joined into one byte buffer, every word gets a
position-independent polynomial hash from prefix sums, and n-grams combine consecutive word (or
byte) hashes. Stable across processes and machines, so signatures can live in a persistent index."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

_U64 = np.uint64
_BASE = _U64(0x100000001B3)  # odd, so it has an inverse mod 2**64
_BASE_INV = _U64(pow(0x100000001B3, -1, 2**64))
# byte classes: ASCII letters, digits and '_' are word bytes; so is every byte of a non-ASCII
# character (a word in any script is a run of them); everything else separates words
_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD_BYTE[_c] = True
_WORD_BYTE[0x80:] = True
_SPACE = re.compile(r"\s+")

ShingleKind = Literal["word", "char"]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the 64 output bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


_POWER_TABLES: dict[int, np.ndarray] = {}


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64, from a table kept per process and grown by doubling."""
    table = _POWER_TABLES.get(int(base))
    if table is None or len(table) < n:
        size = max(n, 2 * len(table) if table is not None else 1 << 20)
        with np.errstate(over="ignore"):
            table = np.full(size, base, dtype=_U64)
            table[0] = 1
            table = np.cumprod(table, dtype=_U64)  # wraps mod 2**64, which is the ring we hash in
        _POWER_TABLES[int(base)] = table
    return table[:n]


@dataclass(frozen=True)
class Shingler:
    """How a text becomes a set of shingles: `kind` word n-grams (words lowercased, punctuation
    dropped) or character n-grams (of the lowercased, whitespace-collapsed UTF-8 bytes)."""

    kind: ShingleKind = "word"
    n: int = 3

    def normalise(self, text: str) -> str:
        text = text.lower()
        return _SPACE.sub(" ", text).strip() if self.kind == "char" else text

    def batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(shingle hashes, doc index of each), for every text of the batch in order. A text
        shorter than one n-gram is one shingle of all it has; an empty one has none."""
        parts = [self.normalise(t).encode("utf-8", "surrogatepass") for t in texts]
        lengths = np.fromiter((len(p) + 1 for p in parts), dtype=np.int64, count=len(parts))
        buf = np.frombuffer(b"\n".join(parts) + b"\n", dtype=np.uint8)
        doc_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        if self.kind == "char":
            # every byte is a unit; the joining newline is excluded from the units of a doc
            unit_hash = mix64(buf.astype(_U64) + _U64(1))
            unit_doc = np.repeat(np.arange(len(parts)), lengths)
            keep = buf != 10
            keep[doc_start[lengths == 1]] = False  # (empty doc: only its newline)
            unit_hash, unit_doc = unit_hash[keep], unit_doc[keep]
        else:
            unit_hash, unit_doc = self._word_hashes(buf, doc_start)
        return self._ngrams(unit_hash, unit_doc)

    @staticmethod
    def _word_hashes(buf: np.ndarray, doc_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        is_word = _WORD_BYTE[buf]
        edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if len(starts) == 0:
            return np.empty(0, _U64), np.empty(0, np.int64)
        pw = _powers(_BASE, len(buf) + 1)
        with np.errstate(over="ignore"):
            prefix = np.concatenate((np.zeros(1, _U64), np.cumsum((buf.astype(_U64) + _U64(1)) * pw[:-1], dtype=_U64)))
            raw = (prefix[ends] - prefix[starts]) * _powers(_BASE_INV, int(starts.max()) + 1)[starts]
        return mix64(raw), np.searchsorted(doc_start, starts, side="right") - 1

    def _ngrams(self, unit_hash: np.ndarray, unit_doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, m = self.n, len(unit_hash)
        if m == 0:
            return unit_hash, unit_doc
        acc = np.zeros(m, dtype=_U64)
        with np.errstate(over="ignore"):
            for k in range(n):
                shifted = np.zeros(m, dtype=_U64)
                same = np.zeros(m, dtype=bool)
                shifted[: m - k] = unit_hash[k:]
                same[: m - k] = unit_doc[k:] == unit_doc[: m - k]
                acc = acc * _BASE + np.where(same, shifted, _U64(0))  # order matters: a b != b a
            full = np.zeros(m, dtype=bool)
            if m >= n:
                full[: m - n + 1] = unit_doc[n - 1 :] == unit_doc[: m - n + 1]
        # a doc with fewer than n units: its first unit starts its only (short) shingle
        first = np.concatenate(([True], unit_doc[1:] != unit_doc[:-1]))
        doc_units = np.bincount(unit_doc, minlength=int(unit_doc[-1]) + 1)
        short = first & (doc_units[unit_doc] < n)
        keep = full | short
        return mix64(acc[keep] + _U64(n)), unit_doc[keep]

    def sets(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's shingle set, as sorted unique hashes (for exact Jaccard)."""
        hashes, docs = self.batch(texts)
        bounds = np.searchsorted(docs, np.arange(len(texts) + 1))
        return [np.unique(hashes[bounds[i] : bounds[i + 1]]) for i in range(len(texts))]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
