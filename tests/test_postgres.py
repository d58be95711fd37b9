"""The production instance (deploy/dagster.yaml) on a real PostgreSQL server: runs and events
stored there, the run queue and pool limits in force, and a server that is down is one clear
error naming the connection within seconds.

The server is $LLMDATA_TEST_POSTGRES_URL when set (.ci/run starts Debian's cluster on loopback),
else a private one this module starts from Debian's binaries in a temp folder (killed after)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from tests.conftest import materialise_partition, one_source_project
from tests.processes import free_port

REPO = Path(__file__).parents[1]
LLMDATA = str(Path(sys.executable).parent / "llmdata")
URL_ENV = "LLMDATA_TEST_POSTGRES_URL"
pytestmark = pytest.mark.slow  # a PostgreSQL server and several CLI processes: ~2 min on 2 shared cores


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_env():
    """DAGSTER_PG_* variables pointing at a live server with an empty database."""
    url = os.environ.get(URL_ENV)
    proc, cleanup = None, []
    if not url:
        bin_dir = _pg_bin()
        if bin_dir is None:
            pytest.skip(f"no PostgreSQL here: install Debian's postgresql package or set ${URL_ENV}")
        # outside pytest's root-only temp tree: the postgres user must reach it
        data = Path(tempfile.mkdtemp(prefix="llmdata-pg-"))
        cleanup.append(data)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
        subprocess.run(_as_postgres_user([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "llmdata", "--auth=trust"]),
                       check=True, capture_output=True)
        port = free_port()
        proc = subprocess.Popen(
            _as_postgres_user([str(bin_dir / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1", "-p", str(port), "-k", str(data)]),
            stdout=open(data / "pg.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"postgresql://llmdata:unused@127.0.0.1:{port}/postgres"
    parsed = urlparse(url)
    import psycopg2

    deadline = time.time() + 60
    while True:
        try:
            conn = psycopg2.connect(url, connect_timeout=2)
            break
        except psycopg2.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    conn.autocommit = True
    db = f"llmdata_test_{os.getpid()}"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        cur.execute(f"CREATE DATABASE {db}")
    env = {"DAGSTER_PG_HOST": parsed.hostname, "DAGSTER_PG_PORT": str(parsed.port or 5432), "DAGSTER_PG_USER": parsed.username,
           "DAGSTER_PG_PASSWORD": parsed.password or "", "DAGSTER_PG_DB": db}
    try:
        yield env
    finally:
        with conn.cursor() as cur:
            cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()")
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        conn.close()
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for folder in cleanup:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def pg_home(tmp_path, pg_env, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy/dagster.yaml", home / "dagster.yaml")
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_production_instance_stores_runs_in_postgres_with_queue_and_pool_limits(pg_home, tmp_path, prose):
    from dagster_llmdata.cli.instance import instance_summary, open_instance

    root = one_source_project(tmp_path / "proj", "pg", [
        {"name": "normalized", "op": "normalize"},
        {"name": "deduplicated", "op": "exact_dedup", "pool": "llmdata_dedup"},
    ], [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:5])] + [{"id": "dup", "text": prose[0]}])

    out = subprocess.run([LLMDATA, "instance", "--set-pool", "llmdata_dedup=1", "--project", str(root)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    shown = json.loads(out.stdout)
    assert shown["storage"] == "PostgresRunStorage" and shown["max_concurrent_runs"] == 4
    assert shown["pools"] == {"llmdata_dedup": 1} and shown["pool_default_limit"] == 1

    instance = open_instance(pg_home)
    try:
        from dagster_llmdata import load_project

        defs = load_project(root)
        assert defs.get_assets_def(dg.AssetKey(["pg", "deduplicated"])).op.pool == "llmdata_dedup"
        result, meta = materialise_partition(root, instance)
        assert result.success and meta["deduplicated"]["dropped/exact_duplicate"].value == 1
        summary = instance_summary(instance, ["llmdata_dedup"])
        assert summary["pools"] == {"llmdata_dedup": 1}
        assert {"key": "dagster/backfill", "limit": 2} in [dict(t) for t in summary["tag_concurrency_limits"]]
    finally:
        instance.dispose()

    # a fresh connection sees the run and its materialisations: they live in PostgreSQL
    import psycopg2

    env = {k: os.environ[k] for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")}
    with psycopg2.connect(host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"], user=env["DAGSTER_PG_USER"],
                          password=env["DAGSTER_PG_PASSWORD"], dbname=env["DAGSTER_PG_DB"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        keys = {row[0] for row in cur.fetchall()}
        assert {dg.AssetKey(["pg", s]).to_string() for s in ("raw", "normalized", "deduplicated")} <= keys

    status = subprocess.run([LLMDATA, "status", "--json", "--project", str(root)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["pipelines"][0]["last_materialised"] is not None


def test_postgres_down_is_one_clear_error_naming_the_connection(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy/dagster.yaml", home / "dagster.yaml")
    port = free_port()  # nothing listens there
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port),
           "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "secret", "DAGSTER_PG_DB": "runs"}
    project = one_source_project(tmp_path / "proj", "pg", [], [{"id": "a", "text": "some text"}])
    for args in (["instance"], ["materialize", "pg"], ["status"]):
        start = time.monotonic()
        out = subprocess.run([LLMDATA, *args, "--project", str(project)], capture_output=True, text=True, env=env, timeout=120)
        assert time.monotonic() - start < 60
        assert out.returncode == 2, (args, out.stdout, out.stderr[-2000:])
        errors = [line for line in out.stderr.splitlines() if "UserWarning" not in line and "warnings.warn" not in line]
        assert len(errors) == 1, out.stderr
        assert f"cannot connect to PostgreSQL at postgresql://dagster@127.0.0.1:{port}/runs" in errors[0]
        assert "dagster.yaml storage.postgres" in errors[0] and "secret" not in errors[0]

    del env["DAGSTER_PG_HOST"]
    out = subprocess.run([LLMDATA, "instance", "--project", str(project)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "reads $DAGSTER_PG_HOST, which is not set" in out.stderr
