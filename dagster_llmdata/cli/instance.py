"""The Dagster instance a project runs on: its PostgreSQL storage checked before Dagster opens it
(dagster-postgres retries a dead server for ~20 s and then says only "too many retries"), its run
queue and its concurrency pools. `llmdata instance` shows and sets them."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dagster_llmdata.errors import InstanceUnavailable
from dagster_llmdata.cli.common import DEFAULT_HOME

PG_CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class PostgresTarget:
    host: str
    port: int
    user: str
    password: str
    db: str
    source: str  # where the settings came from, for the error message

    def __str__(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.db}"


def _resolve(value: Any, where: str) -> Any:
    """A dagster.yaml value: literal or {env: NAME}."""
    if isinstance(value, dict) and set(value) == {"env"}:
        name = value["env"]
        if name not in os.environ:
            raise InstanceUnavailable(f"{where} reads ${name}, which is not set")
        return os.environ[name]
    return value


def postgres_target(home: Path) -> PostgresTarget | None:
    """The PostgreSQL server the instance at `home` stores runs and events in, or None when it
    uses another storage (the default SQLite)."""
    config_file = home / "dagster.yaml"
    if not config_file.exists():
        return None
    config = yaml.safe_load(config_file.read_text()) or {}
    pg = (config.get("storage") or {}).get("postgres") or (config.get("run_storage") or {}).get("config")
    if not isinstance(pg, dict):
        return None
    where = f"{config_file} storage.postgres"
    if "postgres_url" in pg:
        from urllib.parse import urlparse

        url = urlparse(str(_resolve(pg["postgres_url"], where)))
        return PostgresTarget(url.hostname or "localhost", url.port or 5432, url.username or "", url.password or "",
                              url.path.lstrip("/"), where)
    db = pg.get("postgres_db") or {}
    return PostgresTarget(
        host=str(_resolve(db.get("hostname", "localhost"), where)), port=int(_resolve(db.get("port", 5432), where)),
        user=str(_resolve(db.get("username", ""), where)), password=str(_resolve(db.get("password", ""), where)),
        db=str(_resolve(db.get("db_name", ""), where)), source=where,
    )


def check_postgres(target: PostgresTarget, timeout_s: int = PG_CONNECT_TIMEOUT_S) -> None:
    try:
        import psycopg2
    except ImportError:
        raise InstanceUnavailable(f"{target.source} needs dagster-postgres: pip install 'dagster-llmdata[postgres]'") from None
    try:
        psycopg2.connect(host=target.host, port=target.port, user=target.user, password=target.password,
                         dbname=target.db, connect_timeout=timeout_s).close()
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InstanceUnavailable(f"cannot connect to PostgreSQL at {target} (from {target.source}): {reason}") from None


def open_instance(home: Path):
    """DagsterInstance for DAGSTER_HOME=`home`; a PostgreSQL instance is checked first, so a
    server that is down is one clear error within seconds."""
    import dagster as dg

    target = postgres_target(home)
    if target is not None:
        check_postgres(target)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def instance_summary(instance, pools: list[str]) -> dict[str, Any]:
    """What limits the instance enforces: storage, run queue, pools."""
    config = instance.get_concurrency_config()
    queue = config.run_queue_config
    storage = type(instance.run_storage).__name__
    return {
        "storage": storage,
        "max_concurrent_runs": queue.max_concurrent_runs if queue else None,
        "tag_concurrency_limits": list(queue.tag_concurrency_limits) if queue else [],
        "pool_default_limit": config.pool_config.default_pool_limit,
        "pool_granularity": str(config.pool_config.pool_granularity.value) if config.pool_config.pool_granularity else None,
        "pools": {p: _pool_limit(instance, p) for p in pools},
    }


def _pool_limit(instance, pool: str) -> int | None:
    info = instance.event_log_storage.get_concurrency_info(pool)
    return info.slot_count if info.slot_count is not None else None


def add_commands(sub) -> None:
    p = sub.add_parser("instance", help="check the project's Dagster instance (PostgreSQL, run queue, pools) and set pool limits",
                       description="Connects to the instance at $DAGSTER_HOME (default <project>/.dagster_home), checking a "
                                   "PostgreSQL server first, and prints the run queue and pool limits in force.")
    p.add_argument("--set-pool", action="append", default=[], metavar="POOL=N",
                   help="set the concurrency limit of a pool (as `dagster instance concurrency set`), repeatable")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_instance)


def cmd_instance(args) -> int:
    import json

    home = Path(os.environ.get("DAGSTER_HOME") or Path(args.project).resolve() / DEFAULT_HOME)
    try:
        instance = open_instance(home)
        settings = []
        for pair in args.set_pool:
            pool, sep, limit = pair.partition("=")
            if not sep or not limit.isdigit():
                raise InstanceUnavailable(f"--set-pool expects POOL=N, got {pair!r}")
            settings.append((pool, int(limit)))
    except InstanceUnavailable as exc:
        print(f"llmdata instance: {exc}", file=sys.stderr)
        return 2
    for pool, limit in settings:
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    pools = sorted(set(instance.event_log_storage.get_concurrency_keys()) | {p for p, _ in settings})
    print(json.dumps({"dagster_home": str(home), **instance_summary(instance, pools)}, indent=1, default=str))
    return 0
