"""What every `llmdata` subcommand shares: finding the project, reading its specs (reporting the
broken ones), and the project's own Dagster instance folder."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_llmdata.errors import SpecError
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
