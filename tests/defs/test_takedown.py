"""A takedown reaches every place a document lives: `llmdata remove` over a pipeline with an LLM
judge (a real OpenAI-compatible server, its answers in the score cache) and a lance_table stage,
consumed by two mixtures and a training run. The partition's rows leave the LanceDB table in a new
tagged version (older versions keep them), its cached answers go (the other partition's stay), and
the manifests and the run that consumed it are reported, untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
from dagster._core.instance import InstanceRef

from dagster_llmdata import load_project
from dagster_llmdata.cli.common import ensure_dagster_home
from dagster_llmdata.defs.resources import JudgeResource
from dagster_llmdata.judges.cache import CacheKey, ScoreCache
from dagster_llmdata.judges.rubrics import load_rubric
from dagster_llmdata.mixture.feedback import FeedbackStore
from dagster_llmdata.mixture.manifest import read_manifest
from dagster_llmdata.mixture.mixture_asset import mixture_key
from dagster_llmdata.mixture.reproduce import reproduce
from dagster_llmdata.store import SampleStore
from dagster_llmdata.store.search import search_samples
from tests.conftest import materialise_partition, write_jsonl

LLMDATA = str(Path(sys.executable).parent / "llmdata")
PIPELINE = textwrap.dedent(
    """\
    pipeline: lake
    sources: [{name: web, landing: landing}]
    stages:
      - {name: raw, op: ingest}
      # 16 tokens (64 characters without a tokenizer): every document is cut, so its answer is cached under the cut text
      - {name: judged, op: llm_judge, params: {model: judge-model, max_doc_tokens: 16, batch_size: 8}}
      - {name: store, op: lance_table}
    """
)
LANCE_MIX = "mixture: lmix\ninputs:\n  - {kind: lance, dataset: lake/store}\ntoken_budget: 1000\n"
PARQUET_MIX = "mixture: pmix\ninputs:\n  - {dataset: lake/judged}\ntoken_budget: 1000\n"


def _rows(prose: list[str], prefix: str, start: int, n: int) -> list[dict]:
    # the id leads the text, so no two documents share the 64 characters the judge reads
    return [{"id": f"{prefix}{i}", "text": f"{prefix}{i}: {prose[i]}", "domain": "docs" if i % 2 else "legal"} for i in range(start, start + n)]


def _mixture(root: Path, instance, name: str):
    defs = load_project(root)
    job = dg.define_asset_job(f"m_{name}", selection=[mixture_key(name)]).resolve(asset_graph=defs.resolve_asset_graph())
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return read_manifest(result.get_asset_materialization_events()[0].materialization.metadata["manifest"].value)


def _cached(cache_dir: Path, rows: list[dict]) -> list[bool]:
    rubric = load_rubric("educational_value")
    keys = [CacheKey.of(r["text"][:64], "judge-model", rubric.name, rubric.fingerprint) for r in rows]
    with ScoreCache(cache_dir) as cache:
        found = cache.get_many(keys)
    return [k in found for k in keys]


def test_remove_reaches_the_table_the_cache_and_reports_manifests_and_runs(judge_url, tmp_path, prose, monkeypatch):
    root = tmp_path / "proj"
    (root / "assets").mkdir(parents=True)
    (root / "assets" / "lake.yaml").write_text(PIPELINE)
    (root / "assets" / "pmix.yaml").write_text(PARQUET_MIX)
    a, b = _rows(prose, "a", 0, 6), _rows(prose, "b", 6, 4)
    write_jsonl(root / "landing" / "a.jsonl", a)
    cache_dir = Path(os.environ["LLMDATA_CACHE_DIR"])  # the judge_url fixture's fresh cache
    judge = {"judge": JudgeResource(base_url=judge_url, backoff_s=0.01, max_backoff_s=0.2, timeout_s=3.0, max_retries=2)}
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(ensure_dagster_home(root / ".dagster_home")))) as instance:
        assert materialise_partition(root, instance, judge, partition="web/a.jsonl")[0].success
        before_b = _mixture(root, instance, "pmix")  # pinned only a: not a consumer of b
        write_jsonl(root / "landing" / "b.jsonl", b)
        result, meta = materialise_partition(root, instance, judge, partition="web/b.jsonl")
        assert result.success and meta["judged"]["judge_truncated_docs"].value == 4
        (root / "assets" / "lmix.yaml").write_text(LANCE_MIX)
        lance_manifest, parquet_manifest = _mixture(root, instance, "lmix"), _mixture(root, instance, "pmix")
    FeedbackStore(root / "data" / "feedback" / "feedback.sqlite").record_consumed("run-7", 40, "lmix", lance_manifest.version)
    uri = lance_manifest.inputs[0]["uri"]
    store = SampleStore(root / uri, "store")
    pinned = lance_manifest.inputs[0]["version"]
    assert store.partition_rows("web/b.jsonl") == 4 and all(_cached(cache_dir, a + b))

    out = subprocess.run([LLMDATA, "remove", "lake", "web/b.jsonl", "--project", str(root)], capture_output=True, text=True,
                         env={**os.environ, "DAGSTER_HOME": str(root / ".dagster_home")}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout

    # the table: a new version without b's rows, tagged for the removal; the pinned version keeps them
    assert store.partition_rows("web/b.jsonl") == 0 and store.table().count_rows() == 6
    latest = store.table().version
    assert store.tags()["removed-web_b.jsonl"] == latest and latest > pinned
    assert store.partition_rows("web/b.jsonl", pinned) == 4
    assert f"store: 4 rows deleted from LanceDB table 'store': version {latest}, tagged removed-web_b.jsonl" in text
    for mode in ("vector", "fts"):
        assert search_samples(b[0]["text"], str(root / uri), "store", mode=mode, where="partition = 'web/b.jsonl'") == []
    assert {h.partition for h in search_samples(b[0]["text"], str(root / uri), "store", k=20)} == {"web/a.jsonl"}

    # the cache: b's answers (cached under their cut text) are gone, a's stay
    assert _cached(cache_dir, b) == [False] * 4 and all(_cached(cache_dir, a))
    assert "judged: 4 score cache entries dropped" in text

    # reported, not rewritten: the two manifests that pinned b and the run that trained on one of them
    assert f"consumed by mixture lmix manifest {lance_manifest.version}" in text
    assert "lake/store: 4 rows in LanceDB table 'store'" in text
    assert f"consumed by mixture pmix manifest {parquet_manifest.version}" in text and "lake/judged: 1 file(s), 4 rows" in text
    assert before_b.version not in text
    assert f"consumed by training run run-7 (mixture lmix {lance_manifest.version}, from step 40)" in text
    assert read_manifest(lance_manifest.path).version == lance_manifest.version  # still readable: untouched
    assert reproduce(lance_manifest.path)["matches"]  # the evidence still reproduces from the pinned version
    # and the Parquet stages hold nothing of b
    assert not any(p.name == "b.jsonl" for p in (root / "data" / "pipelines" / "lake").glob("*/*/web/*"))


def test_removal_result_lists_consumers(judge_url, tmp_path, prose, instance):
    """The Python API: Removal carries the new Lance version, the cache count, the manifests and runs."""
    from dagster_llmdata.defs.removal import remove_partition
    from dagster_llmdata.spec.project import read_project

    root = tmp_path / "proj"
    (root / "assets").mkdir(parents=True)
    (root / "assets" / "lake.yaml").write_text(PIPELINE)
    (root / "assets" / "lmix.yaml").write_text(LANCE_MIX)
    write_jsonl(root / "landing" / "b.jsonl", _rows(prose, "b", 0, 5))
    judge = {"judge": JudgeResource(base_url=judge_url, backoff_s=0.01, max_backoff_s=0.2, timeout_s=3.0, max_retries=2)}
    assert materialise_partition(root, instance, judge)[0].success
    manifest = _mixture(root, instance, "lmix")
    removal = remove_partition(read_project(root).pipelines["lake"], root, "web/b.jsonl", instance)
    assert set(removal.stages_cleared) == {"raw", "judged", "store"}
    (lance,) = removal.lance_versions.values()
    assert lance["rows_removed"] == 5 and lance["rows_total"] == 0 and lance["tag"] == "removed-web_b.jsonl"
    assert removal.forgotten["judged"]["score_cache_entries_removed"] == 5
    assert [(m.mixture, m.version) for m in removal.manifests] == [("lmix", manifest.version)]
    assert removal.training_runs == [] and removal.problems == []
    # removing it again finds nothing more to delete: no empty version, no second tag
    versions = len(SampleStore(root / manifest.inputs[0]["uri"], "store").versions())
    again = remove_partition(read_project(root).pipelines["lake"], root, "web/b.jsonl", instance)
    assert again.lance_versions == {} and len(SampleStore(root / manifest.inputs[0]["uri"], "store").versions()) == versions
