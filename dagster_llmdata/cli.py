"""`llmdata`: run the demo, use one operator on a file, list operators, show stage status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from .spec import SpecError

DEFAULT_HOME = ".dagster_home"


def _parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        params[key] = yaml.safe_load(value)  # so 0.5, true, [en, fr] come out typed
    return params


def cmd_op(args) -> int:
    from .execute import apply_operator

    try:
        outcome = apply_operator(args.name, args.inp, args.out, _parse_params(args.param))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"llmdata op {args.name}: {exc}", file=sys.stderr)
        return 2
    led = outcome.ledger
    print(json.dumps({"n_in": led.n_in, "kept": led.n_out, "rejected": led.rejected, "quarantined": led.quarantined,
                      "balanced": led.balanced, "seconds": round(outcome.seconds, 2), **{k: v for k, v in outcome.metadata.items()
                      if isinstance(v, (int, float, str))}}, indent=1))
    return 0 if led.balanced else 1


def cmd_ops(args) -> int:
    from .operators import REGISTRY

    for name, cls in sorted(REGISTRY.items()):
        print(json.dumps(cls.describe()) if args.json else f"{name:20s} {cls.description}")
    return 0


def cmd_status(args) -> int:
    from .loader import load_pipeline_specs
    from .report import stage_table

    root = Path(args.project).resolve()
    for spec in load_pipeline_specs(root):
        print(stage_table(spec, root))
    return 0


def cmd_rejected(args) -> int:
    from .loader import load_pipeline_specs
    from .report import rejected_examples

    root = Path(args.project).resolve()
    specs = {s.pipeline: s for s in load_pipeline_specs(root)}
    pipeline = args.pipeline or next(iter(specs), None)
    if pipeline not in specs:
        print(f"no pipeline {pipeline!r} in {root / 'assets'} (known: {sorted(specs)})", file=sys.stderr)
        return 2
    try:
        print(rejected_examples(specs[pipeline], root, args.stage, args.n, args.quarantine))
    except StopIteration:
        print(f"pipeline {pipeline!r} has no stage {args.stage!r}", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.project).resolve(), n_docs=args.docs)


def cmd_sample(args) -> int:
    from .sample_corpus import build_sample_corpus, write_bad_input

    counts = build_sample_corpus(args.dest, args.docs, seed=args.seed)
    write_bad_input(args.dest)
    print(json.dumps(counts, indent=1))
    return 0


def ensure_dagster_home(path: Path) -> Path:
    """The project's own Dagster instance folder, with telemetry off (no network here)."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return path


def cmd_home(args) -> int:
    print(ensure_dagster_home(Path(os.environ["DAGSTER_HOME"])))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmdata", description="LLM training data as Dagster assets")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("op", help="run one operator on a JSONL/JSONL.gz/Parquet file or a folder")
    p.add_argument("name")
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--out", required=True, help="OUT.parquet (rejected rows go to OUT.rejected.parquet)")
    p.add_argument("--param", action="append", default=[], help="key=value (YAML value), repeatable")
    p.set_defaults(func=cmd_op)

    p = sub.add_parser("ops", help="list the registered operators")
    p.add_argument("--json", action="store_true", help="full descriptions with param schemas")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("status", help="per-stage docs in / kept / dropped / quarantined, from disk")
    p.add_argument("--project", default=".")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rejected", help="dropped documents of a stage, a few per reason")
    p.add_argument("stage")
    p.add_argument("--pipeline", default=None)
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

    args = parser.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(Path(getattr(args, "project", ".")).resolve() / DEFAULT_HOME))
    ensure_dagster_home(Path(os.environ["DAGSTER_HOME"]))
    try:
        return args.func(args)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
