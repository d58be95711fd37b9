"""distilled_judge in a Dagster materialisation against a real judge server process: the judge
sees only the sample, every document gets a classifier score, agreement is measured and checked."""

from __future__ import annotations


import dagster as dg
import pyarrow.parquet as pq
import pytest

from dagster_llmdata import apply_operator
from dagster_llmdata.defs.resources import JudgeResource
from tests.conftest import judge_requests, materialise_partition, one_source_project, write_jsonl

pytest.importorskip("sklearn")


def _corpus(prose: list[str]) -> list[dict]:
    rows = []
    for i in range(240):
        text = prose[i % len(prose)]
        words = text.split()
        rows.append({"id": f"d{i}", "text": " ".join(words[i % 7:]), "domain": ["law", "code", "docs"][i % 3]})
    return rows


def test_sample_judged_everything_scored_agreement_checked(judge_url, tmp_path, prose, instance):
    one_source_project(tmp_path, "d", [{"name": "scored", "op": "distilled_judge", "params": {
        "model": "judge-model", "sample_size": 60, "holdout": 0.25, "agreement_floor": 0.99}}], _corpus(prose))
    result, meta = materialise_partition(tmp_path, instance, {"judge": JudgeResource(base_url=judge_url, backoff_s=0.01)})
    assert judge_requests(judge_url) == 60  # the judge sees the sample, not the corpus
    md = meta["scored"]
    assert (md["n_in"].value, md["n_out"].value) == (240, 240)
    assert md["sample_size"].value == 60 and md["sample_judged"].value == 60 and md["agreement_n"].value == 15
    assert md["agreement_confusion"].value.records and "█" in md["quality_score_chart"].value
    rows = [r for f in sorted((tmp_path / "data/d/scored/data/web/b.jsonl").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 240 and all(0 <= r["quality_score"] <= 5 for r in rows)
    assert sum(r["quality_judge_score"] is not None for r in rows) == 60
    assert {r["domain"] for r in rows if r["quality_judge_score"] is not None} == {"law", "code", "docs"}
    # the test server's scores are word counts modulo 6: no classifier can learn them, the check says so
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "judge_agreement"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    ledger = [c for c in result.get_asset_check_evaluations() if c.check_name == "ledger_balances"]
    assert ledger and all(c.passed for c in ledger)


def test_a_judge_that_scores_nothing_fails_the_stage_clearly(tmp_path, prose, monkeypatch):
    monkeypatch.setenv("LLMDATA_CACHE_DIR", str(tmp_path / "cache"))
    src = write_jsonl(tmp_path / "in.jsonl", _corpus(prose)[:50])
    # no server at all: the judge's readiness wait fails the stage in one line, naming the server
    with pytest.raises(Exception, match=r"judge server at http://127.0.0.1:9/v1 did not come up within 1 s \(connection refused\)"):
        apply_operator("distilled_judge", src, tmp_path / "o.parquet", {"sample_size": 50},
                       runtime={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout_s": 2, "ready_timeout_s": 1})


def test_degenerate_samples_still_score_everything_and_the_check_says_why(judge_url, tmp_path, prose):
    from dagster_llmdata.operators import get_operator

    # every document has 6 words: the test server's score (words mod 6 on the rubric's scale) is one
    # value for all of them, so the classifier is that constant and the check explains it
    same = write_jsonl(tmp_path / "same.jsonl", [{"id": f"s{i}", "text": f"alpha beta gamma delta epsilon {i}"} for i in range(30)])
    outcome = apply_operator("distilled_judge", same, tmp_path / "s.parquet", {"sample_size": 12},
                             runtime={"base_url": judge_url, "backoff_s": 0.01})
    assert outcome.ledger.n_out == 30 and outcome.metadata["classifier_kind"] == "constant"
    assert len(set(pq.read_table(tmp_path / "s.parquet").column("quality_score").to_pylist())) == 1
    (check,) = get_operator("distilled_judge")().evaluate_checks(outcome.metadata)
    assert not check.passed and "same score" in check.description

    # three documents: all judged, all used for training, nothing held back to measure
    tiny = write_jsonl(tmp_path / "tiny.jsonl", [{"id": f"t{i}", "text": prose[i]} for i in range(3)])
    outcome = apply_operator("distilled_judge", tiny, tmp_path / "t.parquet", {"sample_size": 10},
                             runtime={"base_url": judge_url, "backoff_s": 0.01})
    assert outcome.ledger.n_out == 3 and outcome.metadata["agreement_n"] == 0

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    outcome = apply_operator("distilled_judge", empty, tmp_path / "e.parquet", runtime={"base_url": judge_url})
    assert outcome.ledger.n_in == 0 and outcome.ledger.balanced


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1], [0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [3, 3, 3], [0, 1, 2, 0, 1, 2, 0, 1, 2, 3], [0] * 9 + [1]])
def test_small_judged_samples_always_train(labels, prose):
    """Partitions give the judge few documents: every small label mix still yields a classifier
    whose scores stay on the judge's scale (regression: a stratified split of 5 with 2 labels)."""
    from dagster_llmdata.judges.distill import train_classifier

    clf = train_classifier(prose[: len(labels)], labels, seed=0)
    scores = clf.score(prose[:8])
    assert len(scores) == 8 and min(labels) <= scores.min() <= scores.max() <= max(labels)
