"""`llmdata mixture ...`: RegMix over proxy-run CSVs, replaying feedback through DoReMi / ODM
(`update`), a mixture's latest manifest, feedback from the command line or a TensorBoard log dir;
and `llmdata train-demo`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dagster_llmdata.errors import FeedbackError, FeedbackStoreLocked, ManifestError, MixtureError


def cmd_regmix(args) -> int:
    from dagster_llmdata.mixture.regmix import fit, predict_csv, read_proxy_runs, regmix

    try:
        runs = read_proxy_runs(args.mixtures, args.losses, args.target)
        prior = json.loads(args.prior) if args.prior else None
        result = regmix(runs, prior=prior, n_samples=args.samples, top_k=args.top_k, seed=args.seed, min_spearman=args.min_spearman)
        print(f"RegMix over {result.n_runs} proxy runs, target {args.target!r}, regressor {result.regressor}")
        spearman = "n/a (too few runs)" if result.cv_spearman is None else f"{result.cv_spearman:.4f}"
        print(f"cross-validated Spearman: {spearman}")
        print(f"predicted {args.target} of the chosen mixture: {result.predicted_loss:.6g}")
        print("mixture:")
        for d, w in result.weights.items():
            print(f"  {d}\t{w:.6f}")
        if args.predict:
            if not args.out:
                print("--predict needs --out", file=sys.stderr)
                return 2
            _, model = fit(runs, args.seed)
            n = predict_csv(model, runs.domains, args.predict, args.out)
            print(f"wrote {n} predictions to {args.out}")
        if args.json:
            Path(args.json).write_text(json.dumps({"weights": result.weights, "cv_spearman": result.cv_spearman, **result.state}, indent=1))
    except (MixtureError, json.JSONDecodeError) as exc:
        print(f"llmdata mixture regmix: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_proxies(args) -> int:
    from dagster_llmdata.mixture.regmix import proxy_mixtures, repetition_caps, write_mixtures_csv

    try:
        tokens = json.loads(args.tokens)
        if not isinstance(tokens, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in tokens.values()):
            raise MixtureError("--tokens must be a JSON object {domain: tokens >= 0}")
        prior = {d: float(n) for d, n in tokens.items()}
        caps = repetition_caps(tokens, args.budget, args.max_epochs) if args.budget else None
        domains, X = proxy_mixtures(prior, args.n, caps=caps, max_epochs=args.max_epochs, seed=args.seed)
        n = write_mixtures_csv(domains, X, args.out)
    except json.JSONDecodeError as exc:
        print(f"llmdata mixture proxies: --tokens is not JSON ({exc.msg})", file=sys.stderr)
        return 2
    except MixtureError as exc:
        print(f"llmdata mixture proxies: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} proxy mixtures over {len(domains)} domains to {args.out}"
          + (f" (each domain capped at {args.max_epochs:g} epochs of {args.budget} tokens)" if args.budget else ""))
    return 0


def cmd_update(args) -> int:
    from dagster_llmdata.mixture.replay import read_feedback, replay

    def fail(msg: str) -> int:
        print(f"llmdata mixture update: {msg}", file=sys.stderr)
        return 2

    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        return fail(f"--params is not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(params, dict):
        return fail("--params must be a JSON object")
    state = None
    if args.state:
        try:
            state = json.loads(Path(args.state).read_text(encoding="utf-8"))
        except OSError as exc:
            return fail(f"cannot read {args.state}: {exc.strerror}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return fail(f"{args.state}: not a JSON state ({exc})")
    try:
        result = replay(args.algorithm, read_feedback(args.losses), params, state, source=args.losses)
    except MixtureError as exc:
        return fail(str(exc))
    if result["state"].get("note"):
        print(f"note: {result['state']['note']}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_show(args) -> int:
    from dagster_llmdata.mixture.manifest import read_manifest

    try:
        m = read_manifest(args.manifest)
    except ManifestError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"mixture {m.mixture} version {m.version} ({m.algorithm['name']}), seed {m.seed}, {m.n_samples} samples for {m.token_budget} tokens")
    if m.feedback:
        print(f"from feedback: run {m.feedback.get('run_id')} step {m.feedback.get('step')} (change {m.feedback.get('change')})")
    print(f"{'domain':<16}{'weight':>9}{'docs':>9}{'tokens':>11}{'epochs':>8}")
    for d, i in m.domains.items():
        print(f"{d:<16}{i['weight']:>9.4f}{i['docs']:>9}{i['tokens']:>11}{i['epochs']:>8.2f}")
    for inp in m.inputs:
        print(f"input {inp['kind']} {inp.get('dataset')}: {len(inp.get('files', []))} files")
    for w in m.warnings:
        print(f"warning: {w}")
    return 0


def cmd_report(args) -> int:
    from dagster_llmdata.mixture.feedback import report

    losses = {}
    for pair in args.loss:
        key, sep, value = pair.partition("=")
        if not sep:
            print(f"expected domain=loss, got {pair!r}", file=sys.stderr)
            return 2
        try:
            losses[key] = float(value)
        except ValueError:
            print(f"{pair!r}: loss is not a number", file=sys.stderr)
            return 2
    try:
        res = report(args.run_id, args.step, losses, store=args.store, mixture=args.mixture, restart=args.restart, source="cli")
    except (FeedbackError, FeedbackStoreLocked) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps({"accepted": res.accepted, "duplicates": res.duplicates, "rejected": res.rejected}))
    return 0 if res.ok else 1


def cmd_tensorboard(args) -> int:
    from dagster_llmdata.mixture.feedback import open_store
    from dagster_llmdata.mixture.tensorboard import TensorBoardFeedback

    res, problems = TensorBoardFeedback(args.logdir, open_store(args.store), mixture=args.mixture, run_id=args.run_id).poll()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(json.dumps({"accepted": res.accepted, "duplicates": res.duplicates, "rejected": res.rejected}))
    return 1 if problems or res.rejected else 0


def cmd_train_demo(args) -> int:
    from dagster_llmdata.demo.trainer import run_train_demo

    return run_train_demo(Path(args.project).resolve(), steps=args.steps, report_every=args.report_every, dagster=not args.no_dagster,
                          mixture=args.mixture)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mixture", help="mixtures: RegMix, manifests, training feedback")
    msub = p.add_subparsers(dest="mixture_command", required=True)

    r = msub.add_parser("regmix", help="fit RegMix on proxy runs and print the chosen mixture",
                        description="Mixtures CSV: `index` + one column per domain; losses CSV: `index` + one column per metric.")
    r.add_argument("--mixtures", required=True)
    r.add_argument("--losses", required=True)
    r.add_argument("--target", required=True, help="losses CSV column to minimise")
    r.add_argument("--predict", help="another mixtures CSV to predict the target for")
    r.add_argument("--out", help="where --predict writes `index,predicted`")
    r.add_argument("--top-k", type=int, default=128, help="how many of the best predicted mixtures to average (paper: 128)")
    r.add_argument("--samples", type=int, default=100_000, help="Dirichlet samples searched (paper: 100k)")
    r.add_argument("--min-spearman", type=float, default=0.5,
                   help="refuse (exit 2) when the cross-validated Spearman of the regressor is below this")
    r.add_argument("--prior", help='JSON {domain: share} to centre the search on (e.g. token shares); default uniform')
    r.add_argument("--seed", type=int, default=None, help="default: the published seed 42")
    r.add_argument("--json", help="also write the result as JSON here")
    r.set_defaults(func=cmd_regmix)

    x = msub.add_parser("proxies", help="write RegMix proxy-run mixtures (Dirichlet around the token prior, repetition-capped)")
    x.add_argument("--tokens", required=True, help='JSON {domain: tokens}: the prior and, with --budget, the repetition caps')
    x.add_argument("--n", type=int, default=64, help="how many proxy mixtures")
    x.add_argument("--budget", type=int, help="the target run's token budget; caps a domain at tokens * max_epochs / budget")
    x.add_argument("--max-epochs", type=float, default=4.0)
    x.add_argument("--seed", type=int, default=42)
    x.add_argument("--out", required=True, help="mixtures CSV to write (index + one column per domain)")
    x.set_defaults(func=cmd_proxies)

    u = msub.add_parser("update", help="replay per-domain losses (JSON lines) through DoReMi or ODM and print weights and state",
                        description='One JSON object per line: {"step": N, "losses": {domain: loss or [per-token losses]}, '
                                    '"reference": {domain: loss} (DoReMi), "probabilities": {domain: p} (ODM, optional)}. '
                                    'Prints {"weights", "average_weights" (DoReMi), "state"}.')
    u.add_argument("--algorithm", required=True, choices=["doremi", "odm"])
    u.add_argument("--params", help='JSON object, e.g. {"eta": 1.0, "smoothing": 0.001} (doremi) or {"reward_scale": 0.1} (odm)')
    u.add_argument("--state", help="a state (or a previous output of this command) to continue from; default: uniform over the domains seen")
    u.add_argument("--losses", required=True, help="the feedback file (JSON lines)")
    u.set_defaults(func=cmd_update)

    s = msub.add_parser("show", help="print a manifest (a file, or a mixture's manifests folder for its latest)")
    s.add_argument("manifest")
    s.set_defaults(func=cmd_show)

    f = msub.add_parser("report", help="report one step's per-domain losses to the feedback store")
    f.add_argument("run_id")
    f.add_argument("step", type=int)
    f.add_argument("loss", nargs="+", help="domain=loss")
    f.add_argument("--store", default="data/feedback/feedback.sqlite")
    f.add_argument("--mixture")
    f.add_argument("--restart", action="store_true", help="accept a step lower than the run's last (resumed from a checkpoint)")
    f.set_defaults(func=cmd_report)

    t = msub.add_parser("tensorboard", help="read new per-domain scalars (loss/<domain>) from a TensorBoard log dir into the store")
    t.add_argument("logdir")
    t.add_argument("--store", default="data/feedback/feedback.sqlite")
    t.add_argument("--mixture")
    t.add_argument("--run-id", help="default: each event file's folder under logdir")
    t.set_defaults(func=cmd_tensorboard)

    d = sub.add_parser("train-demo", help="train a small LM on CPU on the demo mixture while Dagster re-weights it from feedback")
    d.add_argument("--project", default=".")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--report-every", type=int, default=50, help="steps between two per-domain loss reports")
    d.add_argument("--mixture", default="sample_mix")
    d.add_argument("--no-dagster", action="store_true", help="run the feedback loop in-process instead of under dagster dev")
    d.set_defaults(func=cmd_train_demo)
