"""Read per-domain scalars from TensorBoard event files, without TensorFlow or tensorboard.

An event file is TFRecord framing (u64 length, masked CRC32C of it, the bytes, masked CRC32C of
them) around `Event` protobufs; a scalar is `Event.summary.value[i]` with a `tag` and a
`simple_value` (or a one-element float tensor, as newer writers store it). The small protobuf
decoder below reads only those fields. Reading is incremental: `TensorBoardFeedback.poll` remembers
how far it got in each file (in the feedback store), stops before a record still being written,
and reports tags matching a pattern such as `loss/<domain>` to the store."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dagster_llmdata.errors import EventFileError
from dagster_llmdata.mixture.feedback import FeedbackStore, ReportResult

DEFAULT_TAG_PATTERN = r"^(?:train/|eval/)?loss/(?P<domain>[^/]+)$"
TARGET_TAG_PATTERN = r"^(?:eval/)?target_loss(?:/(?P<metric>[^/]+))?$"


# ---- CRC32C (Castagnoli), as TFRecord masks it -------------------------------------------------

def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---- protobuf wire format (only what Event/Summary need) -----------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: varints as int, fixed as bytes, len-delimited as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, v


@dataclass(frozen=True)
class Scalar:
    step: int
    tag: str
    value: float
    wall_time: float


def _tensor_value(buf: bytes) -> float | None:
    """A scalar TensorProto: float_val (5), double_val (6) or 4/8 bytes of tensor_content (4)."""
    dtype = None
    for num, wt, v in _fields(buf):
        if num == 1 and wt == 0:
            dtype = v
        elif num == 5:
            return struct.unpack("<f", v)[0] if wt == 5 else struct.unpack("<f", v[:4])[0]
        elif num == 6:
            return struct.unpack("<d", v)[0] if wt == 1 else struct.unpack("<d", v[:8])[0]
        elif num == 4 and isinstance(v, bytes):
            if dtype == 2 and len(v) == 8:  # DT_DOUBLE
                return struct.unpack("<d", v)[0]
            if len(v) == 4:
                return struct.unpack("<f", v)[0]
    return None


def parse_event(record: bytes) -> list[Scalar]:
    wall, step, out = 0.0, 0, []
    summary = None
    for num, wt, v in _fields(record):
        if num == 1 and wt == 1:
            wall = struct.unpack("<d", v)[0]
        elif num == 2 and wt == 0:
            step = v - (1 << 64) if v >= 1 << 63 else v
        elif num == 5 and wt == 2:
            summary = v
    if summary is None:
        return out
    for num, wt, value in _fields(summary):
        if num != 1 or wt != 2:
            continue
        tag, scalar = None, None
        for n2, w2, v2 in _fields(value):
            if n2 == 1 and w2 == 2:
                tag = v2.decode("utf-8", "replace")
            elif n2 == 2 and w2 == 5:
                scalar = struct.unpack("<f", v2)[0]
            elif n2 == 8 and w2 == 2 and scalar is None:
                scalar = _tensor_value(v2)
        if tag is not None and scalar is not None:
            out.append(Scalar(step, tag, scalar, wall))
    return out


def read_records(path: str | Path, offset: int = 0, check_crc: bool = True) -> Iterator[tuple[int, bytes]]:
    """(offset after the record, record bytes) for each complete record from `offset`; a record
    cut short (the writer is still at it) ends the iteration, a CRC mismatch raises."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        while True:
            head = fh.read(12)
            if len(head) < 12:
                return
            (length,) = struct.unpack("<Q", head[:8])
            if check_crc and struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                raise EventFileError(f"{path}: corrupt record length at offset {offset}")
            body = fh.read(length + 4)
            if len(body) < length + 4:
                return
            data = body[:length]
            if check_crc and struct.unpack("<I", body[length:])[0] != masked_crc(data):
                raise EventFileError(f"{path}: corrupt record at offset {offset}")
            offset += 12 + length + 4
            yield offset, data


def read_scalars(path: str | Path, offset: int = 0) -> Iterator[tuple[int, Scalar]]:
    for end, record in read_records(path, offset):
        for scalar in parse_event(record):
            yield end, scalar


def event_files(logdir: str | Path) -> list[Path]:
    root = Path(logdir)
    return sorted(p for p in root.rglob("*tfevents*") if p.is_file()) if root.exists() else []


class TensorBoardFeedback:
    """Polls a TensorBoard log dir into a feedback store. The run id of an event file is its
    folder relative to `logdir` (the usual one-folder-per-run layout), or `run_id` when given."""

    def __init__(self, logdir: str | Path, store: FeedbackStore, mixture: str | None = None, run_id: str | None = None,
                 tag_pattern: str = DEFAULT_TAG_PATTERN, target_pattern: str = TARGET_TAG_PATTERN):
        self.logdir, self.store, self.mixture, self.run_id = Path(logdir), store, mixture, run_id
        self.tag_re, self.target_re = re.compile(tag_pattern), re.compile(target_pattern)
        if "domain" not in self.tag_re.groupindex:
            raise ValueError(f"tag_pattern {tag_pattern!r} needs a named group `domain`")

    def _run_of(self, path: Path) -> str:
        if self.run_id:
            return self.run_id
        rel = path.parent.relative_to(self.logdir)
        return str(rel) if str(rel) != "." else path.parent.name

    def poll(self) -> tuple[ReportResult, list[str]]:
        """Report every complete new scalar; returns the summed result and problems (corrupt files)."""
        total, problems = ReportResult(), []
        for path in event_files(self.logdir):
            source = f"tensorboard:{path.resolve()}"
            offset = self.store.offset(source) or 0
            steps: dict[int, tuple[dict, dict]] = {}
            end = offset
            try:
                for end_at, s in read_scalars(path, offset):
                    end = end_at
                    m = self.tag_re.match(s.tag)
                    if m:
                        steps.setdefault(s.step, ({}, {}))[0][m.group("domain")] = s.value
                    elif (t := self.target_re.match(s.tag)):
                        steps.setdefault(s.step, ({}, {}))[1][t.groupdict().get("metric") or "target"] = s.value
            except EventFileError as exc:
                problems.append(str(exc))
            run = self._run_of(path)
            for step in sorted(steps):
                losses, targets = steps[step]
                res = self.store.report(run, step, losses, target_losses=targets, mixture=self.mixture, source="tensorboard")
                total.accepted += res.accepted
                total.duplicates += res.duplicates
                total.rejected += res.rejected
            if end != offset:
                self.store.set_offset(source, end)  # after the reports: a crash re-reads, duplicates are ignored
        return total, problems
