"""`llmdata`: run the demo, use one operator on a file, list operators, show stage status."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from dagster_llmdata.io.logs import progress_on_terminal, stderr_to
from dagster_llmdata.errors import CommandError, SpecError, StageFailed
from dagster_llmdata.cli.common import DEFAULT_HOME, ensure_dagster_home, project_root, read_project_reporting, resolve_stage
from dagster_llmdata.cli.pipelines import cmd_status

# features add their subcommands here: each module has `add_commands(sub)` (argparse subparsers)
COMMAND_MODULES: list[str] = [
    "dagster_llmdata.cli.pipelines",
    "dagster_llmdata.cli.instance",
    "dagster_llmdata.cli.mixture",
    "dagster_llmdata.cli.store",
    "dagster_llmdata.cli.agent",
]


def _parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        params[key] = yaml.safe_load(value)  # so 0.5, true, [en, fr] come out typed
    return params


def cmd_op(args) -> int:
    from pydantic import ValidationError

    from dagster_llmdata.operators import describe_params_error, get_operator
    from dagster_llmdata.engine.standalone import apply_operator

    log = Path(tempfile.mkstemp(prefix="llmdata-op-", suffix=".log")[1])
    try:
        with progress_on_terminal(), contextlib.nullcontext() if args.verbose else stderr_to(log):
            params, runtime = _split_runtime(args.name, _parse_params(args.param))
            outcome = apply_operator(args.name, args.inp, args.out, params, ingest_params=_parse_params(args.ingest_param), runtime=runtime)
    except ValidationError as exc:
        print(f"llmdata op {args.name}: {describe_params_error(get_operator(args.name), exc)}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, StageFailed) as exc:
        print(f"llmdata op {args.name}: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except Exception:
        print(f"llmdata op {args.name} failed; the run's log: {log}", file=sys.stderr)
        raise
    led = outcome.ledger
    log.unlink(missing_ok=True)
    print(json.dumps({"n_in": led.n_in, "kept": led.n_out, "rejected": led.rejected, "quarantined": led.quarantined,
                      "balanced": led.balanced, "seconds": round(outcome.seconds, 2), **{k: v for k, v in outcome.metadata.items()
                      if isinstance(v, (int, float, str))}}, indent=1))
    return 0 if led.balanced else 1


def _split_runtime(name: str, pairs: dict) -> tuple[dict, dict | None]:
    """`--param` takes an operator's params and its runtime settings (a judge's base_url) alike."""
    from dagster_llmdata.operators import get_operator

    cls = get_operator(name)
    if cls.Runtime is None:
        return pairs, None
    runtime_fields = set(cls.Runtime.model_fields) - set(cls.Params.model_fields)
    return {k: v for k, v in pairs.items() if k not in runtime_fields}, {k: v for k, v in pairs.items() if k in runtime_fields}


def cmd_ops(args) -> int:
    from dagster_llmdata.operators import REGISTRY, did_you_mean

    unknown = [n for n in args.name if n not in REGISTRY]
    if unknown:
        for name in unknown:
            print(f"llmdata ops: no operator {name!r}{did_you_mean(name, REGISTRY)}; `llmdata ops` lists them", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([cls.describe() for name, cls in sorted(REGISTRY.items()) if not args.name or name in args.name], indent=1))
        return 0
    for name, cls in sorted(REGISTRY.items()):
        if args.name and name not in args.name:
            continue
        print(f"{name}  (v{cls.version})\n  {cls.description}")
        _print_fields(cls.Params)
        if cls.Runtime is not None:
            print(f"  runtime settings (not data: `--param` here, the `{cls.runtime_key}` resource in Dagster):")
            _print_fields(cls.Runtime)
        print()
    return 0


def _print_fields(model) -> None:
    for pname, prop in model.model_json_schema().get("properties", {}).items():
        default = json.dumps(prop.get("default")) if "default" in prop else "required"
        bounds = " ".join(f"{k}={prop[k]}" for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in prop)
        print(f"    {pname} ({_schema_type(prop)}, default {default}{', ' + bounds if bounds else ''}): {prop.get('description', '')}")


def _schema_type(prop: dict) -> str:
    if "enum" in prop:
        return "one of " + "|".join(map(str, prop["enum"]))
    if "anyOf" in prop:
        return " or ".join(_schema_type(p) for p in prop["anyOf"])
    if prop.get("type") == "array" and isinstance(prop.get("items"), dict):
        return f"list of {_schema_type(prop['items'])}"
    return str(prop.get("type", "any"))






def cmd_rejected(args) -> int:
    from dagster_llmdata.engine.report import rejected_examples

    root = project_root(args.project)
    try:
        spec, stage = resolve_stage(read_project_reporting(root), args.stage, args.pipeline)
    except CommandError as exc:
        print(f"llmdata rejected: {exc}", file=sys.stderr)
        return 2
    print(rejected_examples(spec, root, stage, args.n, args.quarantine))
    return 0


def cmd_demo(args) -> int:
    from dagster_llmdata.demo.run import run_demo

    return run_demo(Path(args.project).resolve(), n_docs=args.docs)


def cmd_sample(args) -> int:
    from dagster_llmdata.demo.sample_corpus import build_sample_corpus, write_bad_input

    counts = build_sample_corpus(args.dest, args.docs, seed=args.seed)
    write_bad_input(args.dest)
    print(json.dumps(counts, indent=1))
    return 0






def cmd_home(args) -> int:
    print(ensure_dagster_home(Path(os.environ["DAGSTER_HOME"])))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmdata", description="LLM training data as Dagster assets")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "op", help="run one operator on a file or folder, outside Dagster",
        description="Run one operator on raw files (JSONL/.gz/.zst, Parquet, CSV, WARC, HTML/text, or a folder of them). "
                    "Raw input goes through `ingest` first, as in a pipeline; every input record is counted.",
        epilog="`llmdata ops` lists the operators and their params; `llmdata ops NAME` shows one.",
    )
    p.add_argument("name", help="operator name (see `llmdata ops`)")
    p.add_argument("--in", dest="inp", required=True, help="input file or folder")
    p.add_argument("--out", required=True, help="OUT.parquet, OUT.jsonl or OUT.jsonl.gz; dropped rows go to "
                   "OUT.rejected.<ext>, quarantined ones to OUT.quarantine.<ext>")
    p.add_argument("--param", action="append", default=[], help="operator param key=value (YAML value), repeatable")
    p.add_argument("--ingest-param", action="append", default=[],
                   help="param of the ingest step that reads raw input (e.g. text_field=content), repeatable")
    p.add_argument("-v", "--verbose", action="store_true", help="show datatrove's logs and per-step stats")
    p.set_defaults(func=cmd_op)

    p = sub.add_parser("ops", help="list the registered operators with their params")
    p.add_argument("name", nargs="*", help="only these operators")
    p.add_argument("--json", action="store_true", help="one JSON document: every operator with its param schema")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("status", help="every pipeline: stages, docs in / kept / dropped / quarantined, last "
                       "materialisation, ledgers, freshness; broken specs on stderr")
    p.add_argument("--json", action="store_true", help="the same as one JSON document")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rejected", help="dropped documents of a stage, a few per reason")
    p.add_argument("stage", help="a stage, as pipeline/stage or (when one pipeline has it) its name alone")
    p.add_argument("--pipeline", default=None, help="the pipeline of a stage given by name")
    p.add_argument("--project", default=".")
    p.add_argument("-n", type=int, default=3, help="examples per reason")
    p.add_argument("--quarantine", action="store_true", help="show quarantined instead of rejected docs")
    p.set_defaults(func=cmd_rejected)

    p = sub.add_parser("demo", help="build the sample corpus and materialise the default pipeline")
    p.add_argument("--project", default=".")
    p.add_argument("--docs", type=int, default=None, help="sample corpus size (default 20000)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sample-corpus", help="write the built-in sample corpus's landing files")
    p.add_argument("dest")
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("home", help="create the project's DAGSTER_HOME (telemetry off) and print it")
    p.set_defaults(func=cmd_home)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)

    args = parser.parse_args(argv)
    if args.func in (cmd_demo, cmd_home):  # only what talks to a Dagster instance gets one
        os.environ.setdefault("DAGSTER_HOME", str(Path(getattr(args, "project", ".")).resolve() / DEFAULT_HOME))
        ensure_dagster_home(Path(os.environ["DAGSTER_HOME"]))
    try:
        return args.func(args)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `llmdata ops | head`: the reader has gone; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

