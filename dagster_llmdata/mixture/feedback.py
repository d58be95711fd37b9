"""The training-feedback store: per-domain (and per-document, and target) losses a trainer reports,
in SQLite (WAL, one transaction per report), read by the training-feedback sensor.

Bad feedback is never silently dropped and never corrupts state: NaN/inf losses, unknown domains,
steps going backwards and conflicting duplicates are recorded in `rejected` with a reason and
returned to the caller; exact duplicates (a trainer re-sending after a retry) are counted and
ignored; a store locked by another writer past the timeout raises `FeedbackStoreLocked` with
nothing written. A trainer that dies loses at most the report it was in the middle of."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import FeedbackError, FeedbackStoreLocked

DEFAULT_STORE = "data/feedback/feedback.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step INTEGER NOT NULL,
  kind TEXT NOT NULL,            -- domain | target | doc
  key TEXT NOT NULL,             -- domain name, target metric or document id
  loss REAL NOT NULL, mixture TEXT, mixture_version TEXT, source TEXT, wall_time REAL NOT NULL,
  UNIQUE (run_id, step, kind, key));
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, kind, step);
CREATE TABLE IF NOT EXISTS rejected (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, step INTEGER, kind TEXT, key TEXT, value TEXT,
  reason TEXT NOT NULL, wall_time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, mixture TEXT, status TEXT NOT NULL, last_step INTEGER NOT NULL,
  started REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS consumed (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, mixture TEXT, mixture_version TEXT NOT NULL,
  PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS domains (mixture TEXT PRIMARY KEY, domains TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (source TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class ReportResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (what, reason)

    @property
    def ok(self) -> bool:
        return not self.rejected


@dataclass(frozen=True)
class Event:
    seq: int
    run_id: str
    step: int
    kind: str
    key: str
    loss: float
    mixture: str | None
    mixture_version: str | None


class FeedbackStore:
    """A SQLite feedback store at `path` (created on first use)."""

    def __init__(self, path: str | Path, timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            yield con
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise FeedbackStoreLocked(f"feedback store {self.path} is locked by another writer for more than "
                                          f"{self.timeout:g}s; nothing was written (retry the report)") from None
            raise
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # take the write lock up front: all of a report or none
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # ---- writing ---------------------------------------------------------------------------------

    def register_domains(self, mixture: str, domains: list[str]) -> None:
        """The domains a mixture has (written by the mixture asset): feedback naming others is rejected."""
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO domains VALUES (?, ?)", (mixture, json.dumps(sorted(domains))))

    def known_domains(self, mixture: str | None) -> list[str] | None:
        if mixture is None:
            return None
        with self._connect() as con:
            row = con.execute("SELECT domains FROM domains WHERE mixture = ?", (mixture,)).fetchone()
        return json.loads(row[0]) if row else None

    def report(self, run_id: str, step: int, losses: Mapping[str, float] | None = None, *, mixture: str | None = None,
               mixture_version: str | None = None, target_losses: Mapping[str, float] | None = None,
               doc_losses: Mapping[str, float] | None = None, source: str = "api", restart: bool = False) -> ReportResult:
        """Record one step's losses in one transaction. `restart=True` accepts a step lower than
        the run's last one (a trainer resumed from an earlier checkpoint)."""
        if not isinstance(run_id, str) or not run_id.strip():
            raise FeedbackError(f"run_id must be a non-empty string, got {run_id!r}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise FeedbackError(f"step must be an integer >= 0, got {step!r}")
        result = ReportResult()
        now = time.time()
        known = self.known_domains(mixture)
        items = [("domain", k, v) for k, v in (losses or {}).items()] + [("target", k, v) for k, v in (target_losses or {}).items()] \
            + [("doc", k, v) for k, v in (doc_losses or {}).items()]
        with self._transaction() as con:
            run = con.execute("SELECT last_step FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            backwards = run is not None and step < run[0] and not restart
            good = []
            for kind, key, value in items:
                reason = _problem(kind, key, value, known)
                if reason is None and backwards:
                    flag = "--restart" if source == "cli" else "restart=True"
                    reason = f"step_backwards (run {run_id!r} is at step {run[0]}; pass {flag} after resuming from a checkpoint)"
                if reason is not None:
                    con.execute("INSERT INTO rejected (run_id, step, kind, key, value, reason, wall_time) VALUES (?,?,?,?,?,?,?)",
                                (run_id, step, kind, str(key), repr(value), reason, now))
                    result.rejected.append((f"{kind}:{key}", reason))
                else:
                    good.append((kind, str(key), float(value)))
            for kind, key, value in good:
                prior = con.execute("SELECT loss FROM events WHERE run_id=? AND step=? AND kind=? AND key=?",
                                    (run_id, step, kind, key)).fetchone()
                if prior is not None:
                    if prior[0] == value:
                        result.duplicates += 1
                    else:
                        reason = f"conflicting_duplicate (step {step} already has loss {prior[0]!r})"
                        con.execute("INSERT INTO rejected (run_id, step, kind, key, value, reason, wall_time) VALUES (?,?,?,?,?,?,?)",
                                    (run_id, step, kind, key, repr(value), reason, now))
                        result.rejected.append((f"{kind}:{key}", reason))
                    continue
                con.execute("INSERT INTO events (run_id, step, kind, key, loss, mixture, mixture_version, source, wall_time) "
                            "VALUES (?,?,?,?,?,?,?,?,?)", (run_id, step, kind, key, value, mixture, mixture_version, source, now))
                result.accepted += 1
            if not backwards:
                con.execute("INSERT INTO runs VALUES (?, ?, 'running', ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                            "last_step = CASE WHEN ? THEN excluded.last_step ELSE max(last_step, excluded.last_step) END, "
                            "updated = excluded.updated, mixture = coalesce(excluded.mixture, mixture), status = 'running'",
                            (run_id, mixture, step, now, now, restart))
            if mixture_version and not backwards:
                con.execute("INSERT OR REPLACE INTO consumed VALUES (?, ?, ?, ?)", (run_id, step, mixture, mixture_version))
        return result

    def record_consumed(self, run_id: str, step: int, mixture: str | None, mixture_version: str) -> None:
        """Which mixture version a run trains on from `step` on."""
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO consumed VALUES (?, ?, ?, ?)", (run_id, step, mixture, mixture_version))

    def end_run(self, run_id: str, status: str = "finished") -> None:
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = ?, updated = ? WHERE run_id = ?", (status, time.time(), run_id))

    def set_offset(self, source: str, value: Any) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO offsets VALUES (?, ?)", (source, json.dumps(value)))

    def offset(self, source: str) -> Any:
        with self._connect() as con:
            row = con.execute("SELECT value FROM offsets WHERE source = ?", (source,)).fetchone()
        return json.loads(row[0]) if row else None

    # ---- reading ---------------------------------------------------------------------------------

    def events_after(self, seq: int, kinds: tuple[str, ...] = ("domain", "target"), mixture: str | None = None,
                     limit: int = 100_000) -> list[Event]:
        q = f"SELECT seq, run_id, step, kind, key, loss, mixture, mixture_version FROM events WHERE seq > ? AND kind IN ({','.join('?' * len(kinds))})"
        args: list[Any] = [seq, *kinds]
        if mixture is not None:
            q += " AND (mixture = ? OR mixture IS NULL)"
            args.append(mixture)
        with self._connect() as con:
            rows = con.execute(q + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [Event(*r) for r in rows]

    def losses_at(self, run_id: str, step: int | None = None, kind: str = "domain") -> dict[str, float]:
        """The latest loss per key of a run, at or before `step`."""
        q = "SELECT key, loss FROM events WHERE run_id = ? AND kind = ?" + (" AND step <= ?" if step is not None else "") + " ORDER BY step, seq"
        with self._connect() as con:
            rows = con.execute(q, (run_id, kind, step) if step is not None else (run_id, kind)).fetchall()
        return dict(rows)

    def doc_losses(self, run_id: str, step: int | None = None) -> dict[str, float]:
        return self.losses_at(run_id, step, kind="doc")

    def rejected(self, run_id: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM rejected" + (" WHERE run_id = ?" if run_id else "") + " ORDER BY id",
                               (run_id,) if run_id else ()).fetchall()
        return [dict(r) for r in rows]

    def runs(self) -> list[dict[str, Any]]:
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY started")]

    def consumed(self, run_id: str) -> list[tuple[int, str]]:
        with self._connect() as con:
            return con.execute("SELECT step, mixture_version FROM consumed WHERE run_id = ? ORDER BY step", (run_id,)).fetchall()

    def runs_consuming(self, versions: list[str]) -> list[dict[str, Any]]:
        """Runs recorded as training on any of these mixture versions: run id, mixture, version and
        the first step it was consumed from."""
        versions = sorted(set(versions))
        if not versions:
            return []
        with self._connect() as con:
            rows = con.execute("SELECT run_id, mixture, mixture_version, min(step) FROM consumed WHERE mixture_version IN "
                               f"({','.join('?' * len(versions))}) GROUP BY run_id, mixture, mixture_version ORDER BY run_id, 4",
                               versions).fetchall()
        return [{"run_id": r, "mixture": m, "mixture_version": v, "from_step": step} for r, m, v, step in rows]

    def count(self, kind: str | None = None) -> int:
        with self._connect() as con:
            return con.execute("SELECT count(*) FROM events" + (" WHERE kind = ?" if kind else ""), (kind,) if kind else ()).fetchone()[0]


def _problem(kind: str, key: Any, value: Any, known: list[str] | None) -> str | None:
    if not isinstance(key, str) or not key:
        return "bad_key (a domain, metric or document id is a non-empty string)"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "not_a_number"
    if not math.isfinite(v):
        return "non_finite_loss"
    if kind == "domain" and known is not None and key not in known:
        return f"unknown_domain (mixture domains: {', '.join(known)})"
    return None


_STORES: dict[tuple[str, float], FeedbackStore] = {}


def open_store(path: str | Path = DEFAULT_STORE, timeout: float = 10.0) -> FeedbackStore:
    key = (str(Path(path).resolve()), timeout)
    if key not in _STORES:
        _STORES[key] = FeedbackStore(path, timeout)
    return _STORES[key]


def report(run_id: str, step: int, losses: Mapping[str, float] | None = None, *, store: str | Path | FeedbackStore = DEFAULT_STORE,
           **kwargs: Any) -> ReportResult:
    """Report one training step's per-domain losses (and optionally `target_losses`,
    `doc_losses`, `mixture`, `mixture_version`) to the feedback store."""
    fs = store if isinstance(store, FeedbackStore) else open_store(store)
    return fs.report(run_id, step, losses, **kwargs)
