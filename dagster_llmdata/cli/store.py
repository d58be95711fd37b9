"""`llmdata search`, `llmdata lance versions|cleanup|index`, `llmdata reproduce`."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

from dagster_llmdata.errors import CommandError, ManifestError, ReproduceError, SpecError, StoreError



def resolve_table(table: str, uri: str | None, project: str = ".") -> tuple[str, str]:
    """(uri, table). Without `--uri`, `--table` names a lance_table stage of the project, as
    pipeline/stage or by its name alone when one pipeline has it: its table is the stage's name in
    <storage>/<pipeline>/lance (or the stage's own `uri` param)."""
    if uri:
        return uri, table
    root = Path(project).resolve()
    if not (root / "assets").is_dir():
        raise StoreError(f"--table {table!r}: give --uri (the LanceDB folder or URI), or run inside a project "
                         "(or pass --project) to name a lance_table stage as pipeline/stage")
    from dagster_llmdata.cli.common import resolve_stage
    from dagster_llmdata.spec.project import read_project

    try:
        spec, stage = resolve_stage(read_project(root), table, op="lance_table")
    except CommandError as exc:
        raise StoreError(f"--table {table!r}: {exc}") from None
    params = spec.stage(stage).params or {}
    return str(params.get("uri") or (root / spec.storage / spec.pipeline / "lance").resolve()), params.get("table") or stage


def cmd_search(args) -> int:
    from dagster_llmdata.store.search import search_samples

    mode = "fts" if args.fts else "hybrid" if args.hybrid else "vector"
    try:
        uri, table = resolve_table(args.table, args.uri, args.project)
        hits = search_samples(args.query, uri, table, mode=mode, where=args.where, k=args.n, version=args.version)
    except StoreError as exc:
        print(f"llmdata search: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=1, ensure_ascii=False))
        return 0
    if not hits:
        print("no matches", file=sys.stderr)
        return 1
    for rank, h in enumerate(hits, 1):
        text = " ".join(h.text.split())
        text = text if len(text) <= args.width else text[: args.width - 1] + "…"
        scores = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in h.scores.items())
        print(f"{rank:>2}. {h.score:.4f}  {h.id}  [{h.domain or '-'} / {h.lang or '-'} / {h.source or '-'}]" + (f"  {scores}" if scores else ""))
        print(f"    lineage: {' -> '.join(h.lineage) or h.stage}  partition {h.partition}  run {h.run_id}")
        print(f"    {text}")
    return 0


def cmd_lance(args) -> int:
    from dagster_llmdata.store.lance_store import SampleStore

    try:
        uri, table = resolve_table(args.table, args.uri, args.project)
        store = SampleStore(uri, table)
        if args.lance_cmd == "versions":
            for v in store.versions():
                print(f"{v['version']:>5}  {v['timestamp']}  rows {v['rows']:>9}  {' '.join(v['tags'])}")
        elif args.lance_cmd == "cleanup":
            from dagster_llmdata.mixture.store_input import pinned_versions

            protect = pinned_versions(args.manifest, uri, table) if args.manifest else set()
            print(json.dumps(store.cleanup(timedelta(days=args.older_than_days), protect), indent=1, default=str))
        elif args.lance_cmd == "index":
            print(json.dumps(store.ensure_indexes(0 if args.vector else 1 << 62), indent=1))
    except StoreError as exc:
        print(f"llmdata lance {args.lance_cmd}: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_reproduce(args) -> int:
    from dagster_llmdata.mixture.reproduce import reproduce, reproduce_run

    try:
        project = None
        if args.project is not None:
            from dagster_llmdata.cli.common import project_root

            project = project_root(args.project)
        if (args.manifest is None) == (args.run is None):
            print("llmdata reproduce: give a manifest or --run RUN_ID (one of them)", file=sys.stderr)
            return 2
        if args.run is not None:
            result = reproduce_run(_run_record(args.run, project), project=project)
        else:
            result = reproduce(args.manifest, out=args.out, limit=args.limit, project=project)
    except (ReproduceError, ManifestError, StoreError, SpecError) as exc:
        for line in str(exc).splitlines():  # one line per mismatched input
            print(f"llmdata reproduce: {line}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    if not result["matches"]:
        print("llmdata reproduce: the rebuilt stream differs from the manifest's digest", file=sys.stderr)
    return 0 if result["matches"] else 1


def _run_record(run: str, project) -> Path:
    """A run's switch record: a path as given, else the run id under any mixture of the project."""
    from dagster_llmdata.mixture.reader import run_record
    from dagster_llmdata.spec.project import read_project

    if Path(run).is_file():
        return Path(run)
    root = Path(project or ".").resolve()
    specs = read_project(root).mixtures
    found = [p for spec in specs.values() if (p := run_record(root / spec.storage, spec.mixture, run)).is_file()]
    if len(found) != 1:
        raise ReproduceError(f"training run {run!r}: " + ("no switch record under any mixture of " + str(root) if not found
                             else "recorded under several mixtures: " + ", ".join(map(str, found)) + " (give the record's path)"))
    return found[0]


def _table_args(p) -> None:
    p.add_argument("--table", required=True, help="table name, or pipeline/stage (a lance_table stage's table in this project)")
    p.add_argument("--uri", help="LanceDB folder or object-store URI (default: the project's <storage>/<pipeline>/lance)")
    p.add_argument("--project", default=".")


def add_commands(sub) -> None:
    p = sub.add_parser("search", help="search a LanceDB sample table by meaning, words or both")
    p.add_argument("query")
    _table_args(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--vector", action="store_true", help="by meaning: cosine similarity of embeddings (default)")
    mode.add_argument("--fts", action="store_true", help="by words: BM25 full-text search")
    mode.add_argument("--hybrid", action="store_true", help="both, fused by reciprocal rank")
    p.add_argument("--where", help="SQL filter, e.g. \"domain = 'code' AND quality_score > 0.5\"")
    p.add_argument("-n", type=int, default=10, help="how many matches")
    p.add_argument("--version", type=lambda v: int(v) if v.isdigit() else v, help="a Lance version number or tag (default: latest)")
    p.add_argument("--json", action="store_true", help="print the matches as JSON")
    p.add_argument("--width", type=int, default=200, help="characters of text shown per match")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("lance", help="versions, cleanup and indexes of a LanceDB sample table")
    lsub = p.add_subparsers(dest="lance_cmd", required=True)
    q = lsub.add_parser("versions", help="every version with its row count and tags (run ids, manifests)")
    _table_args(q)
    q = lsub.add_parser("cleanup", help="delete old untagged versions; versions a manifest pins are kept")
    _table_args(q)
    q.add_argument("--older-than-days", type=float, default=7.0)
    q.add_argument("--manifest", action="append", default=[], help="a mixture manifest whose pinned versions must survive (repeatable)")
    q = lsub.add_parser("index", help="build the full-text index (and with --vector the ANN index) now")
    _table_args(q)
    q.add_argument("--vector", action="store_true")
    p.set_defaults(func=cmd_lance)

    p = sub.add_parser("reproduce", help="rebuild a mixture manifest's sample stream from its pinned inputs and check its digests")
    p.add_argument("manifest", nargs="?", help="a manifest file (or a mixture's manifests folder: its latest)")
    p.add_argument("--run", help="a training run id (or its switches.jsonl): rebuild the run's whole switched stream and "
                                 "check every digest its record holds")
    p.add_argument("--out", help="also write the stream (sample, domain, id, text) to this JSONL file")
    p.add_argument("--limit", type=int, help="samples written to --out (default: the manifest's n_samples)")
    p.add_argument("--project", help="the project the manifest's relative paths resolve against (a moved or copied one); "
                                     "default: the project the manifest lies in, else the working directory")
    p.set_defaults(func=cmd_reproduce)
