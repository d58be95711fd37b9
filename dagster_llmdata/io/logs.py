"""Keeping datatrove's chatter out of the way of a person reading the terminal."""

from __future__ import annotations

import contextlib
import io
import os
import sys
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


@contextlib.contextmanager
def progress_on_terminal() -> Iterator[None]:
    """While active, `progress_bar` draws on the current stderr when it is a terminal."""
    if not os.isatty(2):
        yield
        return
    fd = os.dup(2)
    os.environ[PROGRESS_FD_ENV] = str(fd)
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_FD_ENV, None)
        os.close(fd)


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
