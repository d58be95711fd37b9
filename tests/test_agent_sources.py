"""Planner + verifier on several real sources: each proposal verifies, and its dry-run output,
measured here again, meets the goal."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from dagster_llmdata.agent.agent import propose
from dagster_llmdata.spec.agent import agent_config
from dagster_llmdata.spec.intent import Intent
from dagster_llmdata.agent.profile import detect_languages, is_code, is_markup, pii_hits
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.demo.sample_corpus import build_sample_corpus

from tests.agent_helpers import agent_project, code_source, html_source, mixed_language_source, pii_and_dups_source

pytestmark = pytest.mark.slow


def _output(result) -> list[str]:
    spec = yaml.safe_load(Path(result.spec_path).read_text())
    folder = Path(result.dry_run_dir) / spec["stages"][-1]["name"] / "data"
    return [t for f in list_parquet(folder) for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()], spec


def _propose(root: Path, source: str, goal: str, **constraints):
    result = propose(Intent(goal=goal, sources=[source], constraints=constraints), root, agent_config(root))
    assert result.status == "verified", result.reasons
    return result


@pytest.fixture()
def root(tmp_path):
    return agent_project(tmp_path / "proj", sample_docs=300)


def test_sample_corpus_domains_clean_english(root):
    build_sample_corpus(root / "landing" / "sample", 600)
    result = _propose(root, "landing/sample", "a clean English pre-training set, no personal data, near-duplicates removed")
    texts, spec = _output(result)
    assert texts
    langs = detect_languages(texts)
    assert langs.count("en") / len(texts) >= 0.95
    assert not any(sum(pii_hits(t).values()) for t in texts)
    assert len({" ".join(t.split()) for t in texts}) == len(texts)
    assert {"extract_html", "language_id", "minhash_dedup", "pii_redact", "export_shards"} <= {s["op"] for s in spec["stages"]}


def test_html_pages_become_text_without_markup(root):
    html_source(root / "landing" / "pages")
    result = _propose(root, "landing/pages", "plain text from these HTML pages, no markup, deduplicated")
    texts, spec = _output(result)
    assert texts and sum(map(is_markup, texts)) / len(texts) <= 0.02
    assert "extract_html" in {s["op"] for s in spec["stages"]}


def test_mixed_language_source_keeps_only_the_asked_language(root):
    mixed_language_source(root / "landing" / "messages")
    result = _propose(root, "landing/messages", "German text only, deduplicated", languages=["de"])
    texts, spec = _output(result)
    assert texts and detect_languages(texts).count("de") / len(texts) >= 0.95
    quality = next((s for s in spec["stages"] if s["op"] == "gopher_quality"), None)
    assert quality is None or quality["params"].get("min_stop_words") == 0  # datatrove's stop words are English


def test_mixed_language_source_keeps_every_language_when_none_is_asked(root):
    mixed_language_source(root / "landing" / "messages")
    texts, spec = _output(_propose(root, "landing/messages", "a deduplicated multilingual corpus, keep every language"))
    assert {"en", "de", "fr", "es"} <= set(detect_languages(texts))
    assert "language_id" not in {s["op"] for s in spec["stages"]}


def test_python_source_code_is_not_wiped_by_prose_filters(root):
    code_source(root / "landing" / "stdlib")
    result = _propose(root, "landing/stdlib", "a Python source code corpus, deduplicated, no personal data")
    texts, spec = _output(result)
    ops = {s["op"] for s in spec["stages"]}
    assert not ops & {"gopher_quality", "fineweb_quality", "c4_quality", "language_id"}
    n_in = result.ledger["raw"]["n_in"]
    assert len(texts) >= 0.8 * n_in and sum(map(is_code, texts)) >= 0.6 * len(texts)


def test_planted_pii_and_duplicates_are_gone(root, prose):
    pii_and_dups_source(root / "landing" / "crawl", prose)
    texts, _ = _output(_propose(root, "landing/crawl", "an English corpus without personal data or duplicates"))
    assert texts and not any(sum(pii_hits(t).values()) for t in texts)
    assert len(set(texts)) == len(texts)
