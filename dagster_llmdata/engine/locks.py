"""File locks around materialisation: per (stage, partition) for a chain, and stage-wide for a
serial stage. flock-based, so a lock held by a dead process is released by the OS."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dagster_llmdata.errors import PartitionLocked
from dagster_llmdata.io.layout import PipelineLayout

LOCK_TIMEOUT_ENV = "LLMDATA_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 3600.0
LOCK_POLL_S = 0.2

log = logging.getLogger(__name__)




@contextlib.contextmanager
def partition_lock(layout: PipelineLayout, stages: list[str], partition: str, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock per (stage, partition) for every stage of a chain, taken in pipeline
    order (so two chains never wait on each other in a circle). Waits up to `timeout` (default
    $LLMDATA_LOCK_TIMEOUT_S); a lock held by a dead process is released by the OS."""
    timeout = _lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        for stage in stages:
            fd = _acquire(layout.lock_file(stage, partition), deadline, f"{stage}[{partition}]", timeout)
            held.callback(os.close, fd)  # closing the descriptor releases the lock
        yield


@contextlib.contextmanager
def stage_lock(layout: PipelineLayout, stages: list[str], timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock per stage, over all its partitions (taken before any partition lock)."""
    timeout = _lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        for stage in stages:
            fd = _acquire(layout.stage_root(stage) / "work" / ".locks" / "_stage.lock", deadline, f"{stage}[all partitions]", timeout)
            held.callback(os.close, fd)
        yield


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(raw) if raw.strip() else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        raise ValueError(f"${LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def _acquire(path: Path, deadline: float, what: str, timeout: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if time.monotonic() >= deadline:
                os.close(fd)
                raise PartitionLocked(
                    f"{what} is being materialised by another process (pid {holder}); gave up after {timeout:g}s "
                    f"(lock file {path}; ${LOCK_TIMEOUT_ENV} sets the wait)"
                ) from None
            if not waiting:
                log.info("%s is being materialised by pid %s; waiting up to %gs", what, holder, timeout)
                waiting = True
            time.sleep(LOCK_POLL_S)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)  # who holds it, for the waiters' messages
    return fd
