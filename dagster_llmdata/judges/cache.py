"""The score cache: a judge's answer for (exact text sent, model, rubric, rubric fingerprint), on
disk, so a rerun, a resumed run or another pipeline scoring the same text pays nothing.
SQLite in WAL mode: readers never block, and writers from several processes queue on the busy
timeout instead of failing. Only usable answers go in; a failure is retried next run."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_MS = 60_000
# SQLite caps the `?` in one statement (999 in old builds); stay well under it
_CHUNK = 500


def default_cache_dir() -> Path:
    """$LLMDATA_CACHE_DIR, else .llmdata_cache/ under the working directory."""
    return Path(os.environ.get("LLMDATA_CACHE_DIR") or Path.cwd() / ".llmdata_cache")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    text_hash: str
    model: str
    rubric: str
    fingerprint: str

    @classmethod
    def of(cls, text: str, model: str, rubric: str, fingerprint: str) -> CacheKey:
        """The key of `text` exactly as sent to the judge (after any truncation)."""
        return cls(text_hash(text), model, rubric, fingerprint)


@dataclass(frozen=True)
class CachedScore:
    answer: str  # the judge's JSON answer, as it passed validation
    tokens_in: int = 0
    tokens_out: int = 0


class ScoreCache:
    """One connection per instance (open it in each process); safe to share between threads."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "scores.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are the explicit BEGIN IMMEDIATE of put_many
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across crashes of the process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS scores ("
            " text_hash TEXT NOT NULL, model TEXT NOT NULL, rubric TEXT NOT NULL, fingerprint TEXT NOT NULL,"
            " answer TEXT NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,"
            " PRIMARY KEY (text_hash, model, rubric, fingerprint)) WITHOUT ROWID"
        )
        # a document cut before judging is cached under its cut text: this maps the whole text's
        # hash to it, so a takedown (`forget`) finds the entry from the document it has
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cut_from (doc_hash TEXT NOT NULL, text_hash TEXT NOT NULL,"
            " PRIMARY KEY (doc_hash, text_hash)) WITHOUT ROWID"
        )

    def get_many(self, keys: Iterable[CacheKey]) -> dict[CacheKey, CachedScore]:
        """The cached scores of those keys that have one."""
        groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for key in keys:
            groups[(key.model, key.rubric, key.fingerprint)].append(key.text_hash)
        found: dict[CacheKey, CachedScore] = {}
        with self._lock:
            for (model, rubric, fingerprint), hashes in groups.items():
                for start in range(0, len(hashes), _CHUNK):
                    chunk = hashes[start : start + _CHUNK]
                    rows = self._db.execute(
                        "SELECT text_hash, answer, tokens_in, tokens_out FROM scores"
                        f" WHERE model = ? AND rubric = ? AND fingerprint = ? AND text_hash IN ({','.join('?' * len(chunk))})",
                        (model, rubric, fingerprint, *chunk),
                    )
                    for h, answer, tokens_in, tokens_out in rows:
                        found[CacheKey(h, model, rubric, fingerprint)] = CachedScore(answer, tokens_in, tokens_out)
        return found

    def put_many(self, items: Iterable[tuple[CacheKey, CachedScore]]) -> None:
        rows = []
        for key, score in items:
            if not isinstance(json.loads(score.answer), dict):
                raise ValueError(f"only judge answers (JSON objects) are cached, not {score.answer[:80]!r}")
            rows.append((key.text_hash, key.model, key.rubric, key.fingerprint, score.answer, score.tokens_in, score.tokens_out))
        if not rows:
            return
        with self._lock:
            # IMMEDIATE takes the write lock up front, so a busy database waits instead of failing
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def note_cuts(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record (hash of a whole document, hash of the cut text sent for it) pairs."""
        rows = [(doc, sent) for doc, sent in pairs if doc != sent]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO cut_from VALUES (?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def forget(self, doc_hashes: Iterable[str]) -> int:
        """Drop every cached answer (any model, rubric or version) for these documents' texts, whole
        or as cut for the judge; returns how many entries went. Used by a takedown."""
        removed = 0
        hashes = list(dict.fromkeys(doc_hashes))
        with self._lock:
            for start in range(0, len(hashes), _CHUNK):
                chunk = hashes[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    cut = [h for (h,) in self._db.execute(f"SELECT text_hash FROM cut_from WHERE doc_hash IN ({marks})", chunk)]
                    for part in range(0, len(cut), _CHUNK):
                        some = cut[part : part + _CHUNK]
                        removed += self._db.execute(f"DELETE FROM scores WHERE text_hash IN ({','.join('?' * len(some))})", some).rowcount
                    removed += self._db.execute(f"DELETE FROM scores WHERE text_hash IN ({marks})", chunk).rowcount
                    self._db.execute(f"DELETE FROM cut_from WHERE doc_hash IN ({marks})", chunk)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        return removed

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
