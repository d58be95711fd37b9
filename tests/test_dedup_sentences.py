"""sentence_dedup (C4-style 3-sentence spans) and decontaminate (13-gram overlap with eval sets)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagster_llmdata import apply_operator
from dagster_llmdata.operators.sentence_dedup import split_sentences

from tests.conftest import materialise_partition, one_source_project, write_jsonl

BOILER = "Cookies help us deliver our services. By using our services you agree. Read our privacy policy here."


def _sentences(text: str) -> list[str]:
    return [s for s, _ in split_sentences(text)]


def _out(tmp_path, name):
    path = tmp_path / f"out.{name}.parquet" if name else tmp_path / "out.parquet"
    return pq.read_table(path).to_pylist()


def test_split_sentences_gives_the_text_back():
    text = 'One. Two!  "Three?" Four\nFive line\n\nSix... seven'
    pieces = split_sentences(text)
    assert "".join(s + sep for s, sep in pieces) == text
    assert [s for s, _ in pieces] == ["One.", "Two!", '"Three?"', "Four", "Five line", "Six...", "seven"]


def test_repeated_span_is_removed_from_later_docs_only(tmp_path, prose):
    docs = [{"id": "first", "text": prose[0] + " " + BOILER}, {"id": "second", "text": BOILER + " " + prose[1]},
            {"id": "third", "text": prose[2]}, {"id": "only-boiler", "text": BOILER}]
    outcome = apply_operator("sentence_dedup", write_jsonl(tmp_path / "in.jsonl", docs), tmp_path / "out.parquet")
    kept = {r["id"]: r for r in _out(tmp_path, "")}
    assert BOILER in kept["first"]["text"] and kept["first"]["removed_sentences"] == 0
    assert "Cookies" not in kept["second"]["text"] and kept["second"]["removed_sentences"] == 3
    assert kept["second"]["text"] == prose[1].strip()
    assert kept["third"]["text"] == prose[2]
    (dropped,) = _out(tmp_path, "rejected")  # nothing left of it
    assert (dropped["id"], dropped["reason"], dropped["value"], dropped["threshold"]) == ("only-boiler", "too_short_after_sentence_dedup", 0, 50)
    assert outcome.metadata["removed_spans"] == 2 and outcome.metadata["removed_sentences"] == 6
    assert outcome.metadata["docs_changed"] == 2 and outcome.ledger.balanced


def test_short_docs_that_lost_nothing_are_kept(tmp_path):
    docs = [{"id": "a", "text": "Tiny. Doc. Here."}, {"id": "b", "text": "Other. Tiny. One."}]
    outcome = apply_operator("sentence_dedup", write_jsonl(tmp_path / "in.jsonl", docs), tmp_path / "out.parquet")
    assert outcome.ledger.n_out == 2 and outcome.metadata["removed_spans"] == 0


def test_sentence_spans_of_earlier_partitions_are_removed_in_later_ones(tmp_path, instance, prose):
    stages = [{"name": "spans", "op": "sentence_dedup", "params": {"min_doc_words": 10}}]
    root = one_source_project(tmp_path, "sent", stages, [{"id": "a0", "text": prose[0] + " " + BOILER}])
    (root / "landing" / "b.jsonl").rename(root / "landing" / "a.jsonl")
    write_jsonl(root / "landing" / "b.jsonl", [{"id": "b0", "text": BOILER + " " + prose[1]}])
    materialise_partition(root, instance, partition="web/a.jsonl")
    _, md = materialise_partition(root, instance, partition="web/b.jsonl")
    assert md["spans"]["removed_sentences"].value == 3 and md["spans"]["partitions_compared"].value == 1
    (row,) = pq.read_table(root / "data/sent/spans/data/web/b.jsonl").to_pylist()
    assert "Cookies" not in row["text"] and row["removed_sentences"] == 3


EVAL_Q = ("Which of the following best explains why the moon shows phases to an observer standing on the "
          "surface of the earth during a single lunar month")


@pytest.fixture()
def eval_files(tmp_path):
    write_jsonl(tmp_path / "evals" / "qa.jsonl", [{"question": EVAL_Q, "answer": "Because sunlight hits it from changing angles."},
                                                  {"question": "Too short to matter?", "answer": "yes"}])
    pq.write_table(pa.table({"prompt": ["Translate the following sentence into French and explain each word choice you make "
                                        "along the way please"], "id": [7]}), tmp_path / "evals" / "mt.parquet")
    return tmp_path / "evals"


def test_decontaminate_drops_docs_sharing_a_13_gram_and_records_which(tmp_path, prose, eval_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs = [{"id": "leak", "text": prose[0] + " Quiz: " + EVAL_Q.upper() + "? Answer below."},
            {"id": "mt", "text": "Exercise: translate the following sentence into French, and explain each word choice you make along the way."},
            {"id": "near-miss", "text": " ".join(EVAL_Q.split()[:12]) + " and then something else entirely."},
            {"id": "short", "text": "Too short to matter? yes"}, {"id": "clean", "text": prose[1]}]
    params = {"eval_sets": [{"name": "qa", "path": "evals/qa.jsonl", "fields": ["question", "answer"]},
                            {"name": "mt", "path": "evals/mt.parquet"}]}
    outcome = apply_operator("decontaminate", write_jsonl(tmp_path / "in.jsonl", docs), tmp_path / "out.parquet", params)
    dropped = {r["id"]: r for r in _out(tmp_path, "rejected")}
    assert set(dropped) == {"leak", "mt"}
    assert dropped["leak"]["reason"] == "eval_contamination" and dropped["leak"]["contamination_set"] == "qa"
    ngram = dropped["leak"]["contamination_ngram"].split()
    assert len(ngram) == 13 and " ".join(ngram) in EVAL_Q.lower()
    assert dropped["leak"]["value"] == len(EVAL_Q.split()) - 12  # every 13-gram of the question matched
    assert dropped["mt"]["contamination_set"] == "mt"
    assert {r["id"] for r in _out(tmp_path, "")} == {"near-miss", "short", "clean"}
    assert outcome.metadata["contaminated_by_qa"] == 1 and outcome.metadata["contaminated_by_mt"] == 1


def test_decontaminate_n_gram_size_is_a_param_and_missing_eval_files_are_a_clear_error(tmp_path, eval_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs = [{"id": "near-miss", "text": " ".join(EVAL_Q.split()[:8]) + " and something else."}]
    params = {"eval_sets": [{"name": "qa", "path": "evals/qa.jsonl"}], "n_grams": 8}
    outcome = apply_operator("decontaminate", write_jsonl(tmp_path / "in.jsonl", docs), tmp_path / "out.parquet", params)
    assert outcome.ledger.rejected == {"eval_contamination": 1}
    from dagster_llmdata.errors import StageFailed

    with pytest.raises(StageFailed, match="does not exist"):
        apply_operator("decontaminate", tmp_path / "in.jsonl", tmp_path / "out2.parquet",
                       {"eval_sets": [{"name": "gone", "path": "evals/nope.jsonl"}]})


def test_decontaminate_reruns_when_an_eval_set_changes(tmp_path, instance, prose, eval_files):
    stages = [{"name": "clean", "op": "decontaminate", "params": {"eval_sets": [{"name": "qa", "path": "evals/qa.jsonl"}]}}]
    root = one_source_project(tmp_path, "dc", stages, [{"id": "x", "text": prose[3]}, {"id": "y", "text": prose[4]}])
    _, md = materialise_partition(root, instance)
    assert md["clean"]["n_out"].value == 2
    # the benchmark now holds a sentence of prose[4]: the stage runs again instead of skipping
    with open(eval_files / "qa.jsonl", "a") as fh:
        fh.write(json.dumps({"question": " ".join(prose[4].split()[20:40])}) + "\n")
    _, md = materialise_partition(root, instance)
    assert "llmdata/skipped" not in md["clean"] and md["clean"]["dropped/eval_contamination"].value == 1
