"""The select operator (threshold, top_k, percentile) on a Parquet dataset built here, and the
distillation helpers (stratified sample, classifier, agreement) on real text."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from dagster_llmdata.engine.execute import run_stage
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.judges.distill import agreement, load_classifier, stratified_sample, train_classifier
from dagster_llmdata.operators.select import Select
from dagster_llmdata.io.stage_run import StageRun

needs_distill_extra = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None or importlib.util.find_spec("scipy") is None,
    reason="the distill extra (scikit-learn, scipy) is not installed",
)

# id -> score; d2 null and d4 NaN; d1, d3 and d7 tie at 3.0
SCORES = {"d0": 1.0, "d1": 3.0, "d2": None, "d3": 3.0, "d4": float("nan"), "d5": 5.0, "d6": 2.0, "d7": 3.0}


@pytest.fixture()
def scored(tmp_path: Path, prose: list[str]) -> Path:
    rows = [{"id": i, "text": prose[n], "domain": "licences", "score": s} for n, (i, s) in enumerate(SCORES.items())]
    path = tmp_path / "scored.parquet"
    # small row groups: the passes must work across batches and files alike
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    return path


def select(tmp_path: Path, data: Path, **params):
    run = StageRun("picked", [str(data)], tmp_path / "out", tmp_path / "rej", tmp_path / "quar", tmp_path / "work")
    outcome = run_stage(Select(params), run)
    assert outcome.ledger.balanced, outcome.ledger
    kept = pq.read_table(list_parquet(run.output_dir)).to_pylist()
    rejected = {r["id"]: (r["reason"], r["value"], r["threshold"]) for r in pq.read_table(list_parquet(run.rejected_dir)).to_pylist()}
    quarantined = {r["id"]: r["reason"] for r in pq.read_table(list_parquet(run.quarantine_dir)).to_pylist()}
    return outcome, [r["id"] for r in kept], rejected, quarantined, kept


def test_select_threshold_bounds_are_inclusive(tmp_path, scored):
    outcome, kept, rejected, quarantined, rows = select(tmp_path, scored, column="score", min=2.0, max=3.0)
    assert kept == ["d1", "d3", "d6", "d7"]
    assert rejected == {"d0": ("below_threshold", 1.0, 2.0), "d5": ("above_threshold", 5.0, 3.0)}
    assert quarantined == {"d2": "missing_value", "d4": "missing_value"}
    assert rows[0]["text"] and rows[0]["domain"] == "licences"  # every column rides along
    assert outcome.ledger.rejected == {"above_threshold": 1, "below_threshold": 1}
    assert outcome.metadata["cutoff_min"] == 2.0 and outcome.metadata["kept"] == 4


def test_select_top_k_breaks_ties_by_id(tmp_path, scored):
    outcome, kept, rejected, quarantined, _ = select(tmp_path, scored, column="score", mode="top_k", k=3)
    assert kept == ["d1", "d3", "d5"]  # d7 ties d1 and d3 at 3.0 but has the largest id
    assert rejected == {"d0": ("not_in_top_k", 1.0, 3.0), "d6": ("not_in_top_k", 2.0, 3.0), "d7": ("not_in_top_k", 3.0, 3.0)}
    assert set(quarantined) == {"d2", "d4"}
    assert outcome.metadata["cutoff"] == 3.0 and outcome.metadata["kept"] == 3


def test_select_top_k_larger_than_the_data_keeps_every_value(tmp_path, scored):
    _, kept, rejected, quarantined, _ = select(tmp_path, scored, column="score", mode="top_k", k=100)
    assert kept == ["d0", "d1", "d3", "d5", "d6", "d7"] and not rejected and len(quarantined) == 2


def test_select_percentile_keeps_ties_at_the_cutoff(tmp_path, scored):
    # values 1, 2, 3, 3, 3, 5: the 40th percentile (linear) is 3.0, so all three 3.0s stay
    outcome, kept, rejected, _, _ = select(tmp_path, scored, column="score", mode="percentile", percentile=40)
    assert kept == ["d1", "d3", "d5", "d7"]
    assert rejected == {"d0": ("below_percentile", 1.0, 3.0), "d6": ("below_percentile", 2.0, 3.0)}
    assert outcome.metadata["cutoff"] == 3.0
    # the 90th percentile is 4.0 (between 3 and 5): only the 5.0 is at or above it
    _, kept, rejected, _, _ = select(tmp_path, scored, column="score", mode="percentile", percentile=90)
    assert kept == ["d5"] and rejected["d7"] == ("below_percentile", 3.0, 4.0)


def test_select_integer_column_with_nulls(tmp_path):
    rows = [{"id": f"n{i}", "text": "x", "n_tokens": v} for i, v in enumerate([10, None, 30, 20])]
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _, kept, rejected, quarantined, _ = select(tmp_path, path, column="n_tokens", mode="top_k", k=2)
    assert kept == ["n2", "n3"] and rejected == {"n0": ("not_in_top_k", 10.0, 20.0)} and quarantined == {"n1": "missing_value"}


def test_select_refuses_a_missing_or_text_column(tmp_path, scored):
    with pytest.raises(ValueError, match="not in the input"):
        select(tmp_path, scored, column="quality", min=1)
    with pytest.raises(ValueError, match="not numeric"):
        select(tmp_path, scored, column="domain", min=1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"column": "s"}, "needs min or max"),
        ({"column": "s", "mode": "top_k"}, "needs k"),
        ({"column": "s", "mode": "top_k", "k": 5, "min": 1}, "min not used in mode 'top_k'"),
        ({"column": "s", "min": 3, "max": 1}, "above max"),
        ({"column": "s", "mode": "percentile", "percentile": 101}, "less than or equal to 100"),
    ],
)
def test_select_params_say_what_is_wrong(params, message):
    with pytest.raises(ValidationError, match=message):
        Select(params)


def test_every_select_param_is_described():
    for name, spec in Select.Params.model_fields.items():
        assert spec.description, name


# --- distillation --------------------------------------------------------------------------------


def test_stratified_sample_covers_every_domain_and_is_deterministic():
    rng = random.Random(7)
    # one big domain and two small ones: a uniform sample of 20 would likely miss a small one
    rows = [{"domain": "web", "length": rng.randint(50, 5000)} for _ in range(2000)]
    rows += [{"domain": "code", "length": rng.randint(50, 5000)} for _ in range(5)]
    rows += [{"domain": "books", "length": 100_000}]
    sample = stratified_sample(rows, 20, seed=1)
    assert len(sample) == len(set(sample)) == 20
    assert {rows[i]["domain"] for i in sample} == {"web", "code", "books"}
    # every length quartile of the big domain is in it too
    assert len({min(3, rows[i]["length"] * 4 // 5001) for i in sample if rows[i]["domain"] == "web"}) >= 3
    assert stratified_sample(rows, 20, seed=1) == sample
    assert stratified_sample(rows, 20, seed=2) != sample
    assert stratified_sample(rows[:10], 20, seed=1) == list(range(10))


def judged_corpus() -> tuple[list[str], list[int]]:
    """Real text from this machine, scored 0-3 for educational value as a judge would: the language
    reference 3, substantial stdlib docstrings 2, Debian changelogs and copyright files 1, source
    code and crawl junk 0."""
    from dagster_llmdata.demo.sample_corpus import _junk, _stdlib_files, debian_docs, docstrings_and_code, python_docs

    docstrings, code = docstrings_and_code(_stdlib_files()[:150])
    items = [(d["text"], 3) for d in python_docs()]
    items += [(d["text"], 2) for d in docstrings if len(d["text"].split()) >= 30]
    items += [(d["text"], 1) for d in debian_docs(600)]
    items += [(c["text"], 0) for c in code[:400]]
    rng = random.Random(0)
    items += [(_junk(rng, docstrings), 0) for _ in range(150)]
    rng.shuffle(items)
    return [t for t, _ in items], [label for _, label in items]


@needs_distill_extra
def test_classifier_learns_the_judge_and_round_trips(tmp_path):
    texts, labels = judged_corpus()
    assert len(set(labels)) == 4 and len(texts) > 1000
    clf = train_classifier(texts, labels, seed=0)
    held = clf.holdout
    assert held["n"] == pytest.approx(0.2 * len(texts), abs=1)
    # chance is a Spearman of 0; the majority class alone gives an F1 of 0 here
    assert held["spearman"] > 0.6 and held["f1"] > 0.7 and held["accuracy"] > 0.8, held
    scores = clf.score(texts[:50])
    assert scores.shape == (50,) and scores.min() >= 0 and scores.max() <= 3
    again = load_classifier(clf.save(tmp_path / "classifier" / "model.joblib"))
    assert again.score(texts[:50]).tolist() == scores.tolist()
    assert again.holdout == held


@needs_distill_extra
def test_agreement_on_a_hand_made_case():
    judge = [0, 1, 2, 3, 3, 1]
    ours = [0.2, 1.4, 1.6, 2.6, 3.0, 2.2]
    a = agreement(judge, ours, threshold=2)
    # ranks: judge (1, 2.5, 4, 5.5, 5.5, 2.5) vs ours (1, 2, 3, 5, 6, 4); Pearson of the ranks:
    # covariance sum 15, squared deviations 16.5 and 17.5
    assert a["spearman"] == pytest.approx(15 / (16.5 * 17.5) ** 0.5)
    # binary at 2: judge positives {2, 3, 4}, ours {3, 4, 5}: tp 2, fp 1, fn 1
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert a["accuracy"] == pytest.approx(4 / 6)
    # rounded: ours -> 0, 1, 2, 3, 3, 2
    assert a["confusion"] == {"labels": [0, 1, 2, 3], "matrix": [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 2]]}
    assert a["n"] == 6
