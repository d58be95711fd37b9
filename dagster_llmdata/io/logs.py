"""Keeping datatrove's chatter out of the way of a person reading the terminal."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (datatrove's per-task loggers write there) to a log file for a while."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# A duplicate of the terminal's stderr, kept open while `stderr_to` sends fd 2 to a log; readers
# (in this process or in forked workers, which inherit it) draw their progress bars on it.
PROGRESS_FD_ENV = "LLMDATA_PROGRESS_FD"
PROGRESS_DELAY_ENV = "LLMDATA_PROGRESS_DELAY_S"  # a bar shows only once a run takes this long


# Status lines (a judge waiting for its server, docs judged so far) go to this duplicate of the
# user's stderr, kept whether or not it is a terminal: a log or a CI job must show them too.
STATUS_FD_ENV = "LLMDATA_STATUS_FD"
PROGRESS_INTERVAL_ENV = "LLMDATA_PROGRESS_INTERVAL_S"  # seconds between two progress lines


@contextlib.contextmanager
def progress_on_terminal() -> Iterator[None]:
    """While active, `progress_bar` draws on the current stderr when it is a terminal, and
    `status_line` writes there in any case (also while `stderr_to` sends fd 2 to a log)."""
    status = os.dup(2)
    os.environ[STATUS_FD_ENV] = str(status)
    fd = os.dup(2) if os.isatty(2) else None
    if fd is not None:
        os.environ[PROGRESS_FD_ENV] = str(fd)
    try:
        yield
    finally:
        os.environ.pop(STATUS_FD_ENV, None)
        os.close(status)
        if fd is not None:
            os.environ.pop(PROGRESS_FD_ENV, None)
            os.close(fd)


_status_lock = threading.Lock()


def status_line(text: str) -> None:
    """One line for the person running this, on the stderr kept by `progress_on_terminal`, else on
    stderr (a Dagster step's compute log). Never raises: a status line is not worth a run."""
    line = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
    fd = os.environ.get(STATUS_FD_ENV)
    with _status_lock:
        try:
            if fd is not None:
                os.write(int(fd), line)
            else:
                sys.stderr.write(line.decode())
                sys.stderr.flush()
        except (OSError, ValueError):
            pass


def status_interval() -> float:
    """Seconds between two progress lines: 2 on a terminal, 10 into a file or pipe."""
    if value := os.environ.get(PROGRESS_INTERVAL_ENV):
        return float(value)
    fd = int(os.environ.get(STATUS_FD_ENV, "2"))
    try:
        return 2.0 if os.isatty(fd) else 10.0
    except OSError:
        return 10.0


class ProgressLines:
    """`label: done/total docs ...` lines at most every `status_interval()` seconds (the first one
    after that long too, so a quick run prints only its last line). Thread-safe: a backend's event
    loop calls `advance` from its own thread."""

    def __init__(self, label: str, total: int | None = None, interval: float | None = None, what: str = "docs"):
        self.label, self.total, self.what = label, total, what
        self.interval = status_interval() if interval is None else interval
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, n: int = 1, failed: int = 0) -> None:
        with self._lock:
            self.done += n
            self.failed += failed
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
        status_line(self.line())

    def line(self, note: str = "") -> str:
        of = f"/{self.total}" if self.total is not None else ""
        failed = f", {self.failed} not judged" if self.failed else ""
        return f"{self.label}: {self.done}{of} {self.what}{failed}, {time.monotonic() - self.start:.0f} s{'; ' + note if note else ''}"


def progress_bar(desc: str, total: int | None = None, position: int = 0):
    """A tqdm bar on the terminal kept by `progress_on_terminal`, or None outside it."""
    fd = os.environ.get(PROGRESS_FD_ENV)
    if fd is None:
        return None
    from tqdm import tqdm

    try:
        # unbuffered: a worker may end with os._exit, which flushes nothing
        stream = io.TextIOWrapper(os.fdopen(int(fd), "wb", buffering=0, closefd=False), write_through=True)
    except OSError:  # the fd is gone (a worker started outside the run that set it)
        return None
    return tqdm(total=total, desc=desc, position=position, unit=" docs", file=stream, leave=True, dynamic_ncols=True,
                delay=float(os.environ.get(PROGRESS_DELAY_ENV, "2")), mininterval=0.5)
