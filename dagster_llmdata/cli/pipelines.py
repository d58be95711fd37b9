"""Daily-work commands: `llmdata status` (every pipeline at a glance), `llmdata materialize`
(register what landed, run it through Dagster with a progress bar) and `llmdata report` (one
pipeline's per-stage table). Errors are one line on stderr and a non-zero exit code."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import CommandError, InstanceUnavailable, PartitionLocked, SpecError, StoreError
from dagster_llmdata.io.layout import PipelineLayout
from dagster_llmdata.io.ledger import LEDGER_FILE, load_record
from dagster_llmdata.operators import did_you_mean
from dagster_llmdata.engine.report import stage_rows, stage_table
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.cli.common import DEFAULT_HOME, ensure_dagster_home, project_root, read_project_reporting



def add_commands(sub) -> None:
    p = sub.add_parser("materialize", help="register new landing files and materialise a pipeline (or a mixture) through Dagster",
                       description="Registers every new landing entry as a partition (as the landing sensor does), then "
                                   "materialises the partitions that are not up to date (or the ones named) in the "
                                   "project's Dagster instance, with a progress bar. Given a mixture spec's name, "
                                   "materialises the mixture from its input stages' current data.")
    p.add_argument("pipeline", help="a pipeline's name, or a mixture's")
    p.add_argument("--partition", action="append", default=[], help="only this partition (repeatable), e.g. web/b.jsonl")
    p.add_argument("--stage", default=None, help="only this stage and the stages upstream of it (up-to-date ones skip)")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("report", help="one pipeline's per-stage table (docs in / kept / dropped by reason / quarantined)")
    p.add_argument("pipeline")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("remove", help="remove a partition everywhere it lives (a takedown); report the manifests and runs that used it",
                       description="Removes a partition (a withdrawn file): its folders in every stage, dedup index entries, "
                                   "LanceDB rows (a new version tagged removed-<partition>), cached judge answers, its Dagster partition. "
                                   "Later partitions deduplicated against it show stale; manifests and runs that used it are listed.")
    p.add_argument("pipeline")
    p.add_argument("partition", help="the partition key, e.g. web/b.jsonl")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("check", help="fail (exit 1) when any spec or sensor entry of the project does not load: for CI",
                       description="Loads the project's code location strictly (as with LLMDATA_STRICT=1): every broken "
                                   "spec or sensor entry is printed as file:line: why, and the exit code is 1. A project "
                                   "that loads is also checked the way `dagster definitions validate` checks it.")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_check)


def _guarded(fn):
    """Run a command; an error it expects (bad input, a store, a lock) is one line on stderr, exit 2."""
    def run(args) -> int:
        try:
            return fn(args)
        except (CommandError, SpecError, StoreError, PartitionLocked) as exc:
            print(f"llmdata {args.command}: {exc}", file=sys.stderr)
            return 2
    return run


def _project(arg: str):
    root = project_root(arg)
    return root, read_project_reporting(root)


def _pipeline(project, name: str) -> PipelineSpec:
    if name in project.pipelines:
        return project.pipelines[name]
    if name in project.mixtures:
        raise CommandError(f"{name!r} is a mixture, not a pipeline (`llmdata materialize {name}` builds it)")
    broken = [str(p) for p in project.problems if f"pipeline: {name}" in _read(p.path)]
    if broken:
        raise CommandError(f"pipeline {name!r} does not load: {broken[0].splitlines()[0]}")
    known = sorted(project.pipelines)
    raise CommandError(f"no pipeline {name!r}{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@_guarded
def cmd_check(args) -> int:
    import dagster as dg

    from dagster_llmdata.definitions import build_definitions
    from dagster_llmdata.spec.project import read_project

    root = project_root(args.project)
    project = read_project(root)
    try:
        defs = build_definitions(project, strict=True)
        dg.Definitions.validate_loadable(defs)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except dg.DagsterInvalidDefinitionError as exc:
        print(f"{root}: the code location does not validate: {exc}", file=sys.stderr)
        return 1
    n_assets = len(list(defs.resolve_asset_graph().get_all_asset_keys()))
    print(f"{root}: {len(project.pipelines)} pipeline(s), {len(project.mixtures)} mixture(s), {len(project.sensors)} "
          f"sensor entr{'y' if len(project.sensors) == 1 else 'ies'}, {n_assets} assets: every spec loads")
    return 0


# ---- status / report ---------------------------------------------------------------------------

def open_instance(root: Path, create: bool):
    """The project's Dagster instance ($DAGSTER_HOME, else <project>/.dagster_home), or None when
    there is none yet and `create` is false."""
    from dagster_llmdata.cli.instance import open_instance as open_checked

    home = Path(os.environ.get("DAGSTER_HOME") or root / DEFAULT_HOME)
    if not create and not (home / "dagster.yaml").exists():
        return None
    try:
        return open_checked(ensure_dagster_home(home))
    except InstanceUnavailable as exc:
        raise CommandError(str(exc)) from None


def _disk_times(spec: PipelineSpec, root: Path, stage: str) -> float | None:
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    times = [(layout.stage_root(stage) / "data" / p / LEDGER_FILE).stat().st_mtime for p in layout.partitions_on_disk(stage)]
    return max(times, default=None)


def _instance_time(instance, spec: PipelineSpec, stage: str) -> float | None:
    if instance is None:
        return None
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey([spec.pipeline, stage]))
    return event.timestamp if event is not None else None


def _balanced(spec: PipelineSpec, root: Path, stage: str) -> bool:
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    for part in layout.partitions_on_disk(stage):
        led = (load_record(layout.stage_root(stage) / "data" / part) or {}).get("ledger")
        if not led or led["n_in"] != led["n_out"] + sum(led["rejected"].values()) + sum(led["quarantined"].values()):
            return False
    return True


def pipeline_status(spec: PipelineSpec, project, instance, now: float) -> dict[str, Any]:
    from dagster_llmdata.defs.schedules import overdue
    from dagster_llmdata.spec.triggers import FreshnessSpec

    root = project.root
    stages = []
    for row in stage_rows(spec, root):
        times = [t for t in (_disk_times(spec, root, row["stage"]), _instance_time(instance, spec, row["stage"])) if t]
        stages.append({**row, "ledger_balanced": _balanced(spec, root, row["stage"]),
                       "last_materialised": _iso(max(times)) if times else None, "_ts": max(times, default=None)})
    last = max((s["_ts"] for s in stages if s["_ts"]), default=None)
    freshness = [e for _, e in project.sensors if isinstance(e, FreshnessSpec) and e.pipeline == spec.pipeline]
    fresh: dict[str, Any] = {"configured": bool(freshness)}
    if freshness:
        entry = freshness[0]
        checked = [s for s in stages if s["stage"] in (entry.stages or [st.name for st in spec.stages])]
        late = [s["stage"] for s in checked if overdue(s["_ts"], entry.max_age, now)]
        fresh.update(max_age_hours=entry.max_age_hours, overdue_stages=late, fresh=not late)
    for s in stages:
        del s["_ts"]
    return {"pipeline": spec.pipeline, "file": str(project.files[spec.pipeline].relative_to(root)),
            "last_materialised": _iso(last) if last else None, "ledgers_balanced": all(s["ledger_balanced"] for s in stages),
            "freshness": fresh, "stages": stages}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _ago(iso: str | None, now: float) -> str:
    if iso is None:
        return "never"
    s = now - dt.datetime.fromisoformat(iso).timestamp()
    return f"{iso} ({s / 3600:.1f} h ago)" if s >= 3600 else f"{iso} ({s / 60:.0f} min ago)"


def status_text(status: dict[str, Any], table: str, now: float) -> str:
    fresh = status["freshness"]
    if not fresh["configured"]:
        freshness = "not configured (a `freshness` entry in sensors/ sets it)"
    elif fresh["fresh"]:
        freshness = f"fresh (max age {fresh['max_age_hours']:g} h)"
    else:
        freshness = f"OVERDUE: {', '.join(fresh['overdue_stages'])} not materialised in {fresh['max_age_hours']:g} h"
    unbalanced = [s["stage"] for s in status["stages"] if not s["ledger_balanced"]]
    return "\n".join([
        table,
        f"  file: {status['file']}",
        f"  last materialised: {_ago(status['last_materialised'], now)}",
        "  ledgers: " + ("balanced" if not unbalanced else f"UNBALANCED in {', '.join(unbalanced)}"),
        f"  freshness: {freshness}",
    ])


@_guarded
def cmd_status(args) -> int:
    root, project = _project(args.project)
    instance = open_instance(root, create=False)
    now = time.time()
    statuses = [pipeline_status(spec, project, instance, now) for spec in project.pipelines.values()]
    if args.json:
        print(json.dumps({"pipelines": statuses, "problems": [str(p) for p in project.problems]}, indent=1))
    else:
        print("\n\n".join(status_text(s, stage_table(spec, root), now) for s, spec in zip(statuses, project.pipelines.values()))
              or f"no pipelines in {root / 'assets'}")
    return 1 if project.problems else 0


@_guarded
def cmd_report(args) -> int:
    root, project = _project(args.project)
    spec = _pipeline(project, args.pipeline)
    if args.json:
        rows = [{**r, "ledger_balanced": _balanced(spec, root, r["stage"])} for r in stage_rows(spec, root)]
        print(json.dumps({"pipeline": spec.pipeline, "stages": rows}, indent=1))
    else:
        print(stage_table(spec, root))
    return 0


# ---- materialize -------------------------------------------------------------------------------

def _stage_chain(spec: PipelineSpec, stage: str) -> list[str]:
    """The stage and everything upstream of it, in pipeline order."""
    names = [s.name for s in spec.stages]
    if stage not in names:
        raise CommandError(f"pipeline {spec.pipeline!r} has no stage {stage!r}{did_you_mean(stage, names)}; its stages: {', '.join(names)}")
    chain, current = [], stage
    while current:
        chain.append(current)
        current = spec.stage(current).input
    return [n for n in names if n in chain]


@_guarded
def cmd_materialize(args) -> int:
    from dagster_llmdata.io.logs import stderr_to
    from dagster_llmdata.defs.schedules import partitions_to_run, register_landed
    from dagster_llmdata.defs.landing_sensor import scan_landing

    root, project = _project(args.project)
    if args.pipeline in project.mixtures:
        return _materialize_mixture(args, root, project)
    spec = _pipeline(project, args.pipeline)
    instance = open_instance(root, create=True)
    if spec.source is not None:
        return _materialize_from_pipeline(args, spec, root, instance, stderr_to)
    new = register_landed(spec, root, instance)
    landed = set(scan_landing(spec, root).entries)
    known = set(instance.get_dynamic_partitions(f"{spec.pipeline}_files"))
    for p in args.partition:
        if p not in landed:
            raise CommandError(f"no partition {p!r} in the landing folders of {spec.pipeline!r}"
                               f"{did_you_mean(p, sorted(landed))}; there: {', '.join(sorted(landed)) or 'nothing'}")
    stages = _stage_chain(spec, args.stage) if args.stage else [s.name for s in spec.stages]
    partitions = args.partition or partitions_to_run(spec, root, "all" if args.stage else "stale")
    print(f"{spec.pipeline}: {len(new)} new landing entries registered, {len(known)} partitions known; "
          f"materialising {len(partitions)} partitions x {len(stages)} stages", file=sys.stderr)
    if not partitions:
        print(stage_table(spec, root))
        return 0
    failures = _run_partitions(spec, root, instance, partitions, stages, stderr_to)
    print(stage_table(spec, root))
    for partition, message in failures:
        print(f"llmdata materialize: {spec.pipeline}[{partition}] failed: {message}", file=sys.stderr)
    return 1 if failures else 0


def _materialize_from_pipeline(args, spec: PipelineSpec, root: Path, instance, stderr_to) -> int:
    """A pipeline reading another's stage: its partitions are the upstream's, and only those the
    upstream has materialised can run (naming one it has not is an error that says what to run)."""
    from dagster_llmdata.defs.schedules import partitions_to_run, source_partitions

    up = spec.source
    ready, waiting = source_partitions(spec, root, instance)
    for p in args.partition:
        if p not in ready:  # a key nobody registered yet may still be landing upstream: the same advice holds
            hint = "" if p in waiting else did_you_mean(p, ready + waiting)
            raise CommandError(f"{spec.pipeline}[{p}]: upstream {up.dataset} has not materialised partition {p!r} yet{hint}; "
                               f"run `llmdata materialize {up.pipeline} --partition {p}` first")
    if not ready:
        raise CommandError(f"pipeline {spec.pipeline!r} reads {up.dataset}, which has no materialised partition yet: "
                           f"run `llmdata materialize {up.pipeline}` first")
    stages = _stage_chain(spec, args.stage) if args.stage else [s.name for s in spec.stages]
    partitions = args.partition or partitions_to_run(spec, root, "all" if args.stage else "stale", instance)
    print(f"{spec.pipeline}: reads {up.dataset}, materialised for {len(ready)} of {len(ready) + len(waiting)} partitions"
          + (f" (not yet: {', '.join(waiting)})" if waiting else "")
          + f"; materialising {len(partitions)} partitions x {len(stages)} stages", file=sys.stderr)
    if not partitions:
        print(stage_table(spec, root))
        return 0
    failures = _run_partitions(spec, root, instance, partitions, stages, stderr_to)
    print(stage_table(spec, root))
    for partition, message in failures:
        print(f"llmdata materialize: {spec.pipeline}[{partition}] failed: {message}", file=sys.stderr)
    return 1 if failures else 0


def _materialize_mixture(args, root: Path, project) -> int:
    """A mixture spec: its one asset, over its input stages as they are now (materialise those first)."""
    from dagster_llmdata.definitions import load_project
    from dagster_llmdata.mixture.materialise import materialise_mixtures

    if args.partition or args.stage:
        raise CommandError(f"{args.pipeline!r} is a mixture (one unpartitioned asset): --partition and --stage are for pipelines")
    instance = open_instance(root, create=True)
    log = Path(tempfile.mkstemp(prefix=f"llmdata-materialize-{args.pipeline}-", suffix=".log")[1])
    print(f"{args.pipeline}: materialising the mixture from its inputs' current data", file=sys.stderr)
    lines, failed = materialise_mixtures(load_project(root), [args.pipeline], instance, log)
    print("\n".join(lines))
    if not failed:
        log.unlink(missing_ok=True)
    return 1 if failed else 0


def _run_partitions(spec: PipelineSpec, root: Path, instance, partitions: list[str], stages: list[str], stderr_to) -> list[tuple[str, str]]:
    """One Dagster run per partition (the job the landing sensor requests), stages counted on a
    progress bar as their materialisations arrive; Dagster's and datatrove's logs go to a file."""
    import dagster as dg
    from tqdm import tqdm

    from dagster_llmdata.definitions import load_project

    defs = load_project(root)
    job = defs.resolve_job_def(f"{spec.pipeline}_job")
    selection = [dg.AssetKey([spec.pipeline, s]) for s in stages]
    log = Path(tempfile.mkstemp(prefix=f"llmdata-materialize-{spec.pipeline}-", suffix=".log")[1])
    terminal = os.fdopen(os.dup(2), "w")
    bar = tqdm(total=len(partitions) * len(stages), unit=" stage", file=terminal, dynamic_ncols=True, desc=spec.pipeline)
    failures: list[tuple[str, str]] = []
    try:
        with stderr_to(log):
            for partition in partitions:
                run_id = str(uuid.uuid4())
                bar.set_postfix_str(partition)

                def on_event(entry, _bar=bar) -> None:
                    if entry.dagster_event is not None and entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION":
                        _bar.update(1)

                instance.add_event_listener(run_id, on_event)
                result = job.execute_in_process(instance=instance, partition_key=partition, asset_selection=selection,
                                                run_id=run_id, raise_on_error=False, resources=defs.resources,
                                                tags={"llmdata/launched_by": "llmdata materialize"})
                if not result.success:
                    failures.append((partition, _failure_message(result) + f" (log: {log})"))
    finally:
        bar.close()
        terminal.close()
    if not failures:
        log.unlink(missing_ok=True)
    return failures


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            return (error.message if error else "step failed").strip().splitlines()[0]
    return "the run failed"


@_guarded
def cmd_remove(args) -> int:
    from dagster_llmdata.defs.translator import partitions_def_for
    from dagster_llmdata.defs.removal import remove_partition

    root, project = _project(args.project)
    spec = _pipeline(project, args.pipeline)
    instance = open_instance(root, create=True)
    known = instance.get_dynamic_partitions(partitions_def_for(spec).name)
    layout = PipelineLayout((root / spec.storage).resolve(), spec.pipeline)
    on_disk = any(d.exists() for s in spec.stages for d in layout.partition_dirs(s.name, args.partition))
    if args.partition not in known and not on_disk:
        raise CommandError(f"pipeline {spec.pipeline!r} has no partition {args.partition!r}{did_you_mean(args.partition, list(known))}")
    removal = remove_partition(spec, root, args.partition, instance)
    print(f"removed {args.partition} from {len(removal.stages_cleared)} stage(s) of {spec.pipeline}")
    for line in removal.lines():
        print(f"  {line}")
    return 0
