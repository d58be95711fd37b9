"""What every `llmdata` subcommand shares: finding the project, reading its specs (reporting the
broken ones), and the project's own Dagster instance folder."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_llmdata.errors import CommandError, SpecError
from dagster_llmdata.operators import did_you_mean
from dagster_llmdata.spec.pipeline import PipelineSpec
from dagster_llmdata.spec.project import Project, read_project

DEFAULT_HOME = ".dagster_home"


def project_root(arg: str) -> Path:
    root = Path(arg).resolve()
    if not (root / "assets").is_dir():
        raise SpecError(f"{root} is not an llmdata project: it has no assets/ folder of pipeline specs "
                        "(run from a project, or pass --project DIR)")
    return root


def read_project_reporting(root: Path) -> Project:
    """The project's specs; every broken one is printed to stderr (file:line: why)."""
    project = read_project(root)
    for problem in project.problems:
        print(f"broken spec: {problem}", file=sys.stderr)
    return project


def resolve_stage(project: Project, name: str, pipeline: str | None = None, op: str | None = None) -> tuple[PipelineSpec, str]:
    """The (pipeline, stage) a command's stage argument means: `pipeline/stage`, or a bare stage
    name with `pipeline`, or a bare name that exactly one pipeline has (only `op` stages when
    given). A name two pipelines share is an error listing both, never a silent pick."""
    if "/" in name and pipeline is None:
        pipeline, _, name = name.partition("/")
    specs = project.pipelines
    if pipeline is not None:
        if pipeline not in specs:
            raise CommandError(f"no pipeline {pipeline!r}{did_you_mean(pipeline, specs)}; known: {', '.join(sorted(specs)) or 'none'}")
        candidates = [specs[pipeline]]
    else:
        candidates = list(specs.values())
    having = [s for s in candidates if any(st.name == name and (op is None or st.op == op) for st in s.stages)]
    if len(having) == 1:
        return having[0], name
    what = f"{op} stage" if op else "stage"
    if having:
        names = ", ".join(f"{s.pipeline}/{name}" for s in having)
        raise CommandError(f"{what} {name!r} is in {len(having)} pipelines; name one as pipeline/stage: {names}")
    stages = [f"{s.pipeline}/{st.name}" for s in candidates for st in s.stages if op is None or st.op == op]
    where = f"pipeline {pipeline!r}" if pipeline else "any pipeline"
    bare = sorted({st.partition("/")[2] for st in stages})
    raise CommandError(f"no {what} {name!r} in {where}{did_you_mean(name, bare)}; there: {', '.join(stages) or 'none'}")


RUN_QUEUE_CONFIG = """\
concurrency:
  runs:
    # a burst of landed files queues instead of starting every run at once (2 cores by default)
    max_concurrent_runs: 2
"""


INSTANCE_CONFIG = """\
# The project's Dagster instance (written by `llmdata home`; edit freely).
telemetry:
  enabled: false  # no network here
""" + RUN_QUEUE_CONFIG


def ensure_dagster_home(path: Path) -> Path:
    """The project's own Dagster instance folder: telemetry off and a run queue with a limit."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)
    elif "concurrency:" not in (current := config.read_text()):
        config.write_text(current.rstrip("\n") + "\n" + RUN_QUEUE_CONFIG)  # an instance from an older version
    return path
