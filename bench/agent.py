"""Agent benchmark: intent -> verified proposal with the deterministic planner.

    .venv/bin/python bench/agent.py [--sample_docs 1000] [--corpus_docs 3000]

1. Wall time of one proposal (sample, profile, plan, static checks, dry run in an ephemeral
   Dagster instance, re-profile, report) for the sample corpus with a 1,000-doc sample (target
   <= 60 s on this machine).
2. A suite of varied intents over real sources (sample-corpus domains, HTML pages, mixed
   languages, planted PII and duplicates, Python code): the share whose FIRST proposal (round 0,
   before any repair) verifies (target >= 80%), and how many verify after repairs.
Writes bench/results/agent.json."""

from __future__ import annotations

import shutil
import time

from common import REPO, WORK, bench_args, save

from dagster_llmdata.agent.agent import propose
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.spec.intent import Intent
from dagster_llmdata.demo.sample_corpus import build_sample_corpus
from tests.agent_helpers import code_source, html_source, mixed_language_source, pii_and_dups_source
from tests.conftest import prose_docs

SUITE = [
    ("sample_clean_en", "landing/sample", "a clean English pre-training set, no personal data, near-duplicates removed", {}),
    ("python_docs", "landing/python_docs", "an English documentation corpus, deduplicated", {}),
    ("html_text", "landing/pages", "plain text from these HTML pages, no markup, deduplicated", {}),
    ("german_only", "landing/messages", "German text only, deduplicated", {"languages": ["de"]}),
    ("multilingual", "landing/messages", "a deduplicated multilingual corpus, keep every language", {}),
    ("french_spanish", "landing/messages", "French and Spanish text without duplicates", {"languages": ["fr", "es"]}),
    ("code", "landing/stdlib", "a Python source code corpus, deduplicated, no personal data", {}),
    ("pii_dups", "landing/crawl", "an English corpus without personal data or duplicates", {}),
    ("strict_quality", "landing/sample", "high-quality English text for pre-training", {"min_quality": 0.8}),
    ("changelogs_no_email", "landing/debian", "Debian changelogs and licences with no e-mail addresses, deduplicated", {}),
    ("raw_dedup_only", "landing/sample", "raw text, unfiltered, keep every language, only exact and near duplicates removed", {}),
    ("cost_capped", "landing/sample", "a clean English corpus, deduplicated", {"max_cost": 1.0, "target_size": 100}),
]


def build_sources(root, corpus_docs: int) -> None:
    land = root / "landing"
    build_sample_corpus(land / "sample", corpus_docs)
    for name in ("python_docs.jsonl", "debian.jsonl.gz"):
        (land / name.split(".")[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(land / "sample" / name, land / name.split(".")[0] / name)
    html_source(land / "pages", 60)
    mixed_language_source(land / "messages", 40)
    code_source(land / "stdlib", 150)
    pii_and_dups_source(land / "crawl", prose_docs(40))


def main() -> None:
    args = bench_args(sample_docs=1000, corpus_docs=3000, suite_sample_docs=300).parse_args()
    root = WORK / "agent"
    shutil.rmtree(root, ignore_errors=True)
    (root / "assets").mkdir(parents=True)
    build_sources(root, args.corpus_docs)

    config = AgentConfig(sample_docs=args.sample_docs, max_repair_rounds=2)
    start = time.perf_counter()
    headline = propose(Intent(goal=SUITE[0][2], sources=[SUITE[0][1]], name="headline"), root, config)
    wall = time.perf_counter() - start

    suite_config = AgentConfig(sample_docs=args.suite_sample_docs, max_repair_rounds=2)
    runs = []
    for name, source, goal, constraints in SUITE:
        t = time.perf_counter()
        r = propose(Intent(goal=goal, sources=[source], constraints=constraints, name=name), root, suite_config)
        first = r.rounds[0] if r.rounds else None
        runs.append({"intent": name, "goal": goal, "constraints": constraints, "status": r.status, "rounds": len(r.rounds),
                     "first_round_verified": bool(first and not first.failed),
                     "first_round_failures": [str(f) for f in first.failed][:5] if first else r.reasons[:5],
                     "stages": [s["op"] for s in (r.rounds[-1].spec or {}).get("stages", [])] if r.rounds and isinstance(r.rounds[-1].spec, dict) else [],
                     "survival": _survival(r), "seconds": round(time.perf_counter() - t, 1)})
        print(runs[-1], flush=True)
    first_share = sum(r["first_round_verified"] for r in runs) / len(runs)
    save("agent", {
        "headline": {"sample_docs": args.sample_docs, "records_profiled": headline.profile.n_records if headline.profile else 0,
                     "status": headline.status, "rounds": len(headline.rounds), "wall_s": round(wall, 1), "target_s": 60,
                     "stages": len(headline.ledger)},
        "suite": {"intents": len(runs), "sample_docs": args.suite_sample_docs, "first_proposal_verified_share": round(first_share, 3),
                  "verified_after_repairs_share": round(sum(r["status"] == "verified" for r in runs) / len(runs), 3),
                  "target_first_share": 0.8, "runs": runs},
        "command": f"python bench/agent.py --sample_docs {args.sample_docs} --corpus_docs {args.corpus_docs} "
                   f"--suite_sample_docs {args.suite_sample_docs}",
        "repo": str(REPO.name),
    })


def _survival(result) -> float | None:
    led = result.ledger
    if not led:
        return None
    names = list(led)
    return round(led[names[-1]]["n_out"] / led[names[0]]["n_in"], 3) if led[names[0]]["n_in"] else None


if __name__ == "__main__":
    main()
