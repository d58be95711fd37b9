"""Operator params as a readable, validated schema; rejected rows that say which value failed
which bound; one place for each count in dedup metadata."""

from __future__ import annotations

import inspect
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from dagster_llmdata import apply_operator
from dagster_llmdata.engine.execute import run_stage
from dagster_llmdata.io.parquet_store import list_parquet
from dagster_llmdata.io.schema import drop_schema
from dagster_llmdata.operators import REGISTRY, has_batch_fn, is_streaming
from dagster_llmdata.operators.base import BatchFunction, DocFunction
from dagster_llmdata.io.stage_run import StageRun
from tests.conftest import write_jsonl


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_param_has_a_description(op):
    schema = REGISTRY[op].Params.model_json_schema()
    undescribed = [name for name, prop in schema.get("properties", {}).items() if not prop.get("description")]
    assert not undescribed, f"{op}: params without a description: {undescribed}"


@pytest.mark.parametrize(
    "op, params",
    [
        ("pii_redact", {"kinds": ["emial"]}),
        ("gopher_quality", {"language": "englsh"}),
        ("minhash_dedup", {"shingle": "byte"}),
        ("minhash_dedup", {"verify_threshold": 1.5}),
        ("export_shards", {"compression": "zip"}),
        ("language_id", {"languages": []}),
        ("language_id", {"min_score": 1.5}),
        ("gopher_repetition", {"top_n_grams": [(2, 1.2)]}),
        ("fineweb_quality", {"short_line_thr": -0.1}),
    ],
)
def test_bad_param_values_are_validation_errors(op, params):
    with pytest.raises(ValidationError):
        REGISTRY[op](params)


def test_good_enumerated_values_pass():
    assert REGISTRY["pii_redact"]({"kinds": ["email", "phone"]}).params.kinds == ["email", "phone"]
    assert REGISTRY["gopher_quality"]({"language": "deu"}).params.language == "deu"


FILTER_OPERATORS = ["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"]


@pytest.mark.parametrize("op", FILTER_OPERATORS)
def test_filter_params_match_datatrove(op):
    """Every argument of the wrapped datatrove filter is a param, except the exclusion writer:
    routing rejected docs is ours."""
    cls = REGISTRY[op]
    datatrove_args = set(inspect.signature(cls.filter_cls.__init__).parameters) - {"self", "exclusion_writer"}
    assert set(cls.Params.model_fields) == datatrove_args


@pytest.mark.parametrize("op", sorted(name for name, cls in REGISTRY.items() if is_streaming(cls)))
def test_doc_functions_are_doc_functions(op):
    cls = REGISTRY[op]
    fn = cls().batch_fn() if has_batch_fn(cls) else cls().doc_fn()
    assert isinstance(fn, BatchFunction if has_batch_fn(cls) else DocFunction) and not fn.counters


# measures compared against a lower bound fail below it; the rest fail above theirs
LOWER_BOUNDS = {
    "gopher_short_doc", "gopher_below_avg_threshold", "gopher_below_alpha_threshold", "gopher_enough_stop_words",
    "too_few_sentences", "line_punct_ratio", "language_score_below_threshold",
}

SHORT = "The cat sat on the mat and that was all there was to it."
SENTENCES = [f"Sentence number {i} talks about something else entirely." for i in range(20)]


def _docs(prose: list[str]) -> dict[str, dict[str, str]]:
    """For each filter, docs that fail exactly one check, keyed by the reason they fail with."""
    return {
        "gopher_quality": {
            "gopher_short_doc": SHORT,
            "gopher_below_alpha_threshold": " ".join(["the river and the hill are green"] + ["2024"] * 40 + ["water flows to the sea"] * 2),
            "gopher_too_many_hashes": prose[0] + " #" * 60,
            "gopher_enough_stop_words": " ".join(["Quick brown foxes jump over lazy dogs near rivers"] * 8),
            "gopher_above_avg_threshold": " ".join(["Extraordinarily incomprehensible characteristically and the internationalization"] * 10),
            "gopher_too_many_bullets": "\n".join(f"- point number {i} is about the thing and that" for i in range(20)),
        },
        "gopher_repetition": {
            "dup_line_frac": "\n".join(["Click here to subscribe to our newsletter!"] * 30),
            "top_2_gram": " ".join(f"red apple {w}" for w in prose[0].split()[:80]),
            "dup_para_frac": "\n\n".join(["A paragraph that repeats itself word for word."] * 5 + [prose[0]]),
        },
        "c4_quality": {
            "too_few_sentences": "This is one sentence here. This is two of them.",
            "lorem_ipsum": prose[0] + "\nLorem ipsum dolor sit amet, consectetur adipiscing.",
        },
        "fineweb_quality": {
            "line_punct_ratio": "\n".join(f"this line number {i} has words but no ending mark at all here" for i in range(10)),
            "short_line_ratio": "\n".join(f"Item {i} is here." for i in range(20)),
            "char_dup_ratio": "\n".join(SENTENCES + SENTENCES[:3]),
            "list_ratio": "\n\n\n".join(SENTENCES),
        },
    }


def _rejected(out: Path) -> list[dict]:
    return pq.read_table(out.with_name(out.stem + ".rejected.parquet")).to_pylist()


def _apply(tmp_path: Path, op: str, docs: dict[str, str], params: dict | None = None) -> list[dict]:
    src = write_jsonl(tmp_path / f"{op}.jsonl", [{"id": key, "text": text} for key, text in docs.items()])
    out = tmp_path / f"{op}.parquet"
    apply_operator(op, src, out, params)
    return _rejected(out)


@pytest.mark.parametrize("op", FILTER_OPERATORS)
def test_rejected_rows_carry_the_failing_value_and_its_bound(tmp_path, prose, op):
    docs = _docs(prose)[op]
    rejected = _apply(tmp_path, op, docs)
    assert {row["id"]: row["reason"] for row in rejected} == {reason: reason for reason in docs}
    for row in rejected:
        if row["reason"] == "lorem_ipsum":  # a phrase found, not a measure over a bound
            assert row["value"] is None and row["threshold"] is None
        elif row["reason"] in LOWER_BOUNDS:
            assert row["value"] < row["threshold"], row["reason"]
        else:
            assert row["value"] > row["threshold"], row["reason"]


@pytest.mark.parametrize(
    "op, reason, bound",
    [
        ("gopher_quality", "gopher_short_doc", lambda v: {"min_doc_words": int(v)}),
        ("gopher_quality", "gopher_below_alpha_threshold", lambda v: {"max_non_alpha_words_ratio": v}),
        ("gopher_repetition", "top_2_gram", lambda v: {"top_n_grams": [(2, v)]}),
        ("c4_quality", "too_few_sentences", lambda v: {"min_num_sentences": int(v)}),
        ("fineweb_quality", "char_dup_ratio", lambda v: {"char_duplicates_ratio": v}),
    ],
)
def test_a_bound_set_to_the_reported_value_lets_the_doc_pass_that_check(tmp_path, prose, op, reason, bound):
    """The value is exactly what datatrove compared: at a bound equal to it the check passes
    (a later check may still reject the doc)."""
    doc = {reason: _docs(prose)[op][reason]}
    (row,) = _apply(tmp_path / "default", op, doc)
    assert reason not in [r["reason"] for r in _apply(tmp_path / "at_value", op, doc, bound(row["value"]))]


def test_c4_counts_sentences_when_judging_sentences_too(tmp_path):
    (row,) = _apply(tmp_path, "c4_quality", {"few": "This is one sentence here. This is two of them."}, {"split_paragraph": False})
    assert (row["reason"], row["value"], row["threshold"]) == ("too_few_sentences", 2, 5)


def test_language_score_rejection_reports_score_and_min_score(tmp_path):
    (row,) = _apply(tmp_path, "language_id", {"short": "ok ok fine"}, {"min_score": 0.99})
    assert row["reason"] == "language_score_below_threshold"
    assert row["value"] == pytest.approx(row["lang_score"]) and row["threshold"] == 0.99


def test_dedup_metadata_does_not_repeat_the_ledger(tmp_path, prose):
    rows = [{"id": "a", "text": prose[0]}, {"id": "b", "text": prose[0]}]
    outcome = apply_operator("exact_dedup", write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.parquet")
    assert outcome.ledger.rejected == {"exact_duplicate": 1}
    assert set(outcome.metadata) == {"hashes_from_other_partitions", "partitions_compared"}


def test_minhash_rejected_files_have_the_rejected_dataset_columns(tmp_path, prose):
    near = prose[2].replace(" the ", " THE ", 2) + " An extra closing remark."
    texts = prose[:6] + [near, near + " And one more."]
    src = tmp_path / "in" / "part-0.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts}), src)
    run = StageRun(
        stage="near", input_files=[str(src)], output_dir=tmp_path / "out", rejected_dir=tmp_path / "rejected",
        quarantine_dir=tmp_path / "quarantine", work_dir=tmp_path / "work",
    )
    op = REGISTRY["minhash_dedup"]()
    outcome = run_stage(op, run)
    assert outcome.ledger.rejected == {"near_duplicate": 2}
    assert outcome.metadata["duplicate_clusters"] == 1 and outcome.metadata["partitions_compared"] == 0
    expected = drop_schema(run.output_schema(op.produced_columns()))
    files = list_parquet(run.rejected_dir)
    assert files and all(pq.read_schema(f).names == expected.names for f in files)
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    kept_ids = set(pq.read_table(list_parquet(run.output_dir)).column("id").to_pylist())
    assert {(r["stage"], r["reason"], r["value"], r["threshold"]) for r in rows} == {("near", "near_duplicate", None, None)}
    # the three versions of prose[2] form one cluster: one is kept, the other two point at it
    assert {r["id"] for r in rows} | {rows[0]["kept_id"]} == {"d2", "d6", "d7"} and rows[0]["kept_id"] in kept_ids
    assert rows[0]["kept_id"] == rows[1]["kept_id"]
