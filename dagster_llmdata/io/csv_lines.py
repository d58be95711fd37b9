"""The physical lines a `csv.reader` pulls, with a way to take a record back.

A stray `"` opens a quoted field that swallows every following line until a quote happens to
close it or the file ends. The reader (strict mode) raises at that point; `RecordLines` has kept
the lines the record consumed, so the CSV reader can set aside only the first one and push the
rest back, and parsing resumes at the next physical line. A class iterator, unlike a generator,
may be read again after it has raised StopIteration, which is what lets the end of the file be
undone too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple


class Line(NamedTuple):
    """One physical line: its number in the file, its text as fed to the parser, and the
    oversized line it stands in for (None for an ordinary line)."""

    number: int
    text: str
    over: Any = None


class Taken(NamedTuple):
    """What one record consumed: its lines (only the first when not `complete`) and the first
    oversized line among them."""

    lines: list[Line]
    complete: bool
    over: Any


class RecordLines:
    """Feeds `csv.reader` from `lines` and remembers what the current record consumed, up to
    `cap` characters (past that the record cannot be taken back, so memory stays bounded)."""

    def __init__(self, lines: Iterator[Line], cap: int):
        self.source, self.cap = lines, cap
        self.pending: deque[Line] = deque()
        self.taken: list[Line] = []
        self.taken_chars = 0
        self.complete = True  # every line of the current record is in `taken`
        self.over: Any = None

    def __iter__(self) -> RecordLines:
        return self

    def __next__(self) -> str:
        line = self.pending.popleft() if self.pending else next(self.source)
        if self.over is None:
            self.over = line.over
        self.taken_chars += len(line.text) + (len(line.over.head) if line.over is not None else 0)
        if self.taken_chars <= self.cap:
            self.taken.append(line)
        elif self.complete:  # keep the first line, which is what a quarantined record shows
            del self.taken[1:]
            self.complete = False
        return line.text

    def take(self) -> Taken:
        """What the record just parsed consumed; the next record starts empty."""
        taken = Taken(self.taken, self.complete, self.over)
        self.taken, self.taken_chars, self.complete, self.over = [], 0, True, None
        return taken

    def push_back(self, lines: list[Line]) -> None:
        """Lines to feed again, before anything not yet read."""
        self.pending.extendleft(reversed(lines))
