"""Real server processes for the slow tests: a free loopback port, waiting on a condition, the
Dagster GraphQL API, and a process started in its own group and stopped as a group (`dagster dev`
children can ignore SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dagster_llmdata.demo.dagster_dev import stop_group

REPO = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 2):
    """Poll `predicate` until it returns something truthy (returned); OSError counts as not yet."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError as exc:  # server not up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = {"query": query, **({"variables": variables} if variables else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def dagster_home(folder: Path, extra: str = "") -> Path:
    """A DAGSTER_HOME with telemetry off, plus `extra` dagster.yaml text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + extra)
    return folder


@contextlib.contextmanager
def process_group(args: list[str], log: Path, **popen) -> Iterator[subprocess.Popen]:
    """Start `args` in a new session, output to `log`; on exit stop its whole process group."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        try:
            yield proc
        finally:
            stop_group(proc)


def dagster_dev(project: Path, home: Path, port: int, log: Path):
    """`dagster dev` (webserver + daemon + code server) on the project, on loopback."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDATA_PROJECT": str(project)}
    return process_group([str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                         log, cwd=project, env=env)
