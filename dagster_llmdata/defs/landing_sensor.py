"""Sensors built from sensors/*.yaml. `landing`: every new (or changed) file or folder in a
source's landing folder becomes a dynamic partition, and only that partition is materialised."""

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from dagster_llmdata.errors import PartitionLocked
from dagster_llmdata.defs.translator import partitions_def_for
from dagster_llmdata.engine.materialise import partition_is_current, pipeline_context
from dagster_llmdata.io.layout import INVALID_KEY_PARTS
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.defs.removal import remove_partition
from dagster_llmdata.spec.triggers import LandingSensorSpec

IN_PROGRESS_SUFFIXES = (".tmp", ".part")  # what uploaders name a file until it is complete




@dataclass
class LandingScan:
    """What a pipeline's landing folders hold now."""

    entries: dict[str, str] = field(default_factory=dict)  # partition key -> change stamp "<bytes>-<newest mtime ns>"
    changed_at_ns: dict[str, int] = field(default_factory=dict)  # partition key -> last change to the entry
    unusable: dict[str, str] = field(default_factory=dict)  # path -> why it cannot become a partition
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it is ignored on purpose


def scan_landing(spec: PipelineSpec, root: Path) -> LandingScan:
    scan = LandingScan()
    for source in spec.sources:
        folder = root / source.landing
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            skip = _skip_reason(entry.name)
            if skip:
                scan.skipped[str(entry)] = skip
                continue
            key = f"{source.name}/{entry.name}"
            problem = _unusable_reason(entry, key)
            if problem:
                scan.unusable[str(entry)] = problem
                continue
            files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
            try:
                stats = [p.stat() for p in files]
                own_mtime = entry.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # removed while we looked; the next evaluation sees the folder as it is then
            newest = max((s.st_mtime_ns for s in stats), default=0)
            scan.entries[key] = f"{sum(s.st_size for s in stats)}-{newest}"
            # a folder's own mtime moves when files are added, before they hold any bytes
            scan.changed_at_ns[key] = max(newest, own_mtime)
    return scan


def _skip_reason(name: str) -> str | None:
    if name.startswith("."):
        return "hidden name (starts with '.')"
    if name.startswith("_"):
        return "marker name (starts with '_', like _SUCCESS or _temporary)"
    if name.endswith(IN_PROGRESS_SUFFIXES):
        return f"still being written (ends with {' or '.join(IN_PROGRESS_SUFFIXES)})"
    return None


def _unusable_reason(entry: Path, key: str) -> str | None:
    if any(bad in key for bad in INVALID_KEY_PARTS):
        return "its name cannot be a Dagster partition key ('...' or a control character); rename it to process it"
    try:
        entry.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if entry.is_symlink():
            return f"dangling symlink (to {os.readlink(entry)})"
        return f"cannot be read: {exc.strerror}"
    if not (entry.is_file() or entry.is_dir()):
        return "neither a file nor a folder"
    return None


def landing_entries(spec: PipelineSpec, root: Path, unusable: list[str] | None = None) -> dict[str, str]:
    """{partition key: change stamp} for everything in the pipeline's landing folders. Entries that
    cannot become a partition (a name Dagster refuses, a broken symlink) are listed in `unusable`."""
    scan = scan_landing(spec, root)
    if unusable is not None:
        unusable.extend(scan.unusable)
    return scan.entries


def landing_cursor(spec: PipelineSpec, root: Path) -> str:
    """The cursor a running landing sensor would hold once it has requested every entry now in the
    landing folders: store it (e.g. after materialising them yourself) and the sensor requests
    only what lands or changes afterwards."""
    return _encode_cursor(scan_landing(spec, root).entries)


def _encode_cursor(stamps: dict[str, str]) -> str:
    # the change stamp last requested per partition key, so an unchanged entry is never requested
    # twice and a rewritten one is requested again
    return json.dumps(stamps, sort_keys=True)


def _decode_cursor(cursor: str | None) -> dict[str, str]:
    return json.loads(cursor) if cursor else {}


def build_landing_sensor(sensor_spec: LandingSensorSpec, spec: PipelineSpec, root: Path, job) -> dg.SensorDefinition:
    if spec.source is not None:
        raise ValueError(f"pipeline {spec.pipeline!r} reads {spec.source.dataset} and has no landing folders to watch; "
                         f"its partitions are {spec.partitions_pipeline!r}'s: `automation: {{condition: eager}}` in its spec "
                         "follows them, or a schedule")
    partitions = partitions_def_for(spec)
    settle_ns = int(sensor_spec.settle_seconds * 1e9)

    @dg.sensor(
        name=sensor_spec.name or f"{spec.pipeline}_landing",
        job=job,
        minimum_interval_seconds=sensor_spec.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if sensor_spec.default_status == "running" else dg.DefaultSensorStatus.STOPPED,
        description=f"New or changed files in the landing folders of {spec.pipeline!r} -> one partition run each.",
    )
    def _landing(context: dg.SensorEvaluationContext):
        scan = scan_landing(spec, root)
        for path, why in scan.unusable.items():
            context.log.warning(f"landing entry {path!r} is not processed: {why}")
        if scan.skipped:
            context.log.info("skipped landing entries: " + "; ".join(f"{path!r} ({why})" for path, why in scan.skipped.items()))
        seen = _decode_cursor(context.cursor)
        seen = _handle_removed(context, sensor_spec, spec, root, scan, seen)
        changed = sorted(k for k, stamp in scan.entries.items() if seen.get(k) != stamp)
        now_ns = time.time_ns()
        settling = [k for k in changed if now_ns - scan.changed_at_ns[k] < settle_ns]
        ready = [k for k in changed if k not in settling]
        waiting = (f"waiting for {', '.join(settling)} to stay unchanged for {sensor_spec.settle_seconds:g}s"
                   if settling else "")
        if not ready:
            if context.cursor != _encode_cursor(seen):  # removals were recorded
                return dg.SensorResult(skip_reason=waiting or "no new or changed files", cursor=_encode_cursor(seen))
            return dg.SkipReason(waiting or f"no new or changed files in {len(scan.entries)} landing entries")
        if waiting:
            context.log.info(waiting)
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [k for k in ready if k not in known]
        # an entry this sensor has never seen may already be materialised from exactly these files
        # (by `make demo`, the CLI, a backfill): it needs no run, only a place in the cursor
        ctx = pipeline_context(spec, root)
        current = [k for k in ready if k not in seen and partition_is_current(ctx, k)]
        if current:
            context.log.info(f"already materialised from the current files, not requested: {', '.join(current)}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{k}@{scan.entries[k]}", partition_key=k) for k in ready if k not in current],
            dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=_encode_cursor({**seen, **{k: scan.entries[k] for k in ready}}),
        )

    return _landing


GONE = "gone"  # the cursor's stamp for an entry seen to disappear (so it is handled once)
REMOVE_LOCK_WAIT_S = 10.0  # a sensor evaluation must stay short: a partition a run holds is removed on a later one


def _handle_removed(context: dg.SensorEvaluationContext, sensor_spec: LandingSensorSpec, spec: PipelineSpec, root: Path,
                    scan: LandingScan, seen: dict[str, str]) -> dict[str, str]:
    """Entries requested before and gone now (from a landing folder that still exists): removed
    or logged per `on_removed`. Returns the cursor's stamps with them settled."""
    present = {s.name for s in spec.sources if (root / s.landing).is_dir()}
    gone = sorted(k for k, stamp in seen.items() if stamp != GONE and k not in scan.entries and k.split("/", 1)[0] in present)
    if not gone:
        return seen
    seen = dict(seen)
    if sensor_spec.on_removed == "remove":

        for key in gone:
            try:
                removal = remove_partition(spec, root, key, context.instance, why="removed from its landing folder",
                                           lock_timeout=REMOVE_LOCK_WAIT_S)
            except PartitionLocked as exc:  # a run holds it: the next evaluation tries again
                context.log.info(f"landing entry {key} disappeared; not removed yet: {exc}")
                continue
            # what else went (stale partitions, table rows, cached answers) and what consumed it
            context.log.info(f"landing entry {key} disappeared: partition removed" + "".join(f"; {line}" for line in removal.lines()))
            del seen[key]
    else:
        for key in gone:
            context.log.info(f"landing entry {key} disappeared; its partition is kept (on_removed: keep). "
                             f"`llmdata remove {spec.pipeline} {key}` removes it")
            seen[key] = GONE
    return seen
