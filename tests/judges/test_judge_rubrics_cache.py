"""Rubrics (built-ins, user YAML files, fingerprints), reading a judge's answer, the score cache."""

from __future__ import annotations

import json
import multiprocessing
import textwrap

import pytest

from dagster_llmdata.errors import RubricError
from dagster_llmdata.judges.answer import JudgeAnswer, parse_answer, validator
from dagster_llmdata.judges.cache import CachedScore, CacheKey, ScoreCache, default_cache_dir
from dagster_llmdata.judges.rubrics import BUILTIN_RUBRICS, load_rubric

EDU = load_rubric("educational_value")
SAFETY = load_rubric("safety")


# --- rubrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN_RUBRICS))
def test_builtin_rubrics_put_the_document_last_behind_a_shared_prefix(name):
    rubric = load_rubric(name)
    a, b = rubric.messages("first document"), rubric.messages("a second, different one")
    assert [m["role"] for m in a] == ["system", "user"]
    assert a[0] == b[0] and rubric.name in a[0]["content"]
    assert a[1]["content"] == rubric.user_prefix() + "first document"
    assert b[1]["content"].endswith("a second, different one")
    schema = rubric.answer_schema()
    props = list(schema["properties"])
    assert props[0] == "reason" and props[-1] == "score"
    assert schema["required"] == props and schema["additionalProperties"] is False
    assert schema["properties"]["score"] == {"type": "integer", "minimum": rubric.scale.min, "maximum": rubric.scale.max}
    answer = {"reason": "ok", **{f: False for f in rubric.flags}, "score": rubric.scale.max}
    assert parse_answer(json.dumps(answer), rubric) == JudgeAnswer(rubric.scale.max, "ok", {f: False for f in rubric.flags})


def test_builtin_scales_and_flags():
    assert (EDU.scale.min, EDU.scale.max, len(EDU.criteria)) == (0, 5, 5)
    sft = load_rubric("sft_quality")
    assert (sft.scale.min, sft.scale.max) == (1, 5)
    assert (SAFETY.scale.min, SAFETY.scale.max, SAFETY.flags) == (0, 3, ["harmful", "toxic", "sexual"])
    assert all(SAFETY.answer_schema()["properties"][f] == {"type": "boolean"} for f in SAFETY.flags)


USER_RUBRIC = textwrap.dedent(
    """\
    name: code_comments
    version: "2"
    description: How well the code in the document is commented.
    scale: {min: 1, max: 4}
    criteria:
      - Functions say what they do.
      - Comments explain why, not what.
    instructions: One point, plus one per criterion met, plus one if no comment is stale.
    """
)


def test_a_user_rubric_loads_from_yaml(tmp_path):
    path = tmp_path / "code_comments.yaml"
    path.write_text(USER_RUBRIC)
    rubric = load_rubric(path)
    assert (rubric.name, rubric.version, rubric.scale.max, rubric.flags) == ("code_comments", "2", 4, [])
    assert rubric.fingerprint.startswith("2-")
    assert load_rubric(str(path)) == rubric


@pytest.mark.parametrize(
    "text, complaint",
    [
        (USER_RUBRIC.replace("criteria:\n  - Functions say what they do.\n  - Comments explain why, not what.\n", ""), "criteria: Field required"),
        (USER_RUBRIC.replace("{min: 1, max: 4}", "{min: 4, max: 1}"), "scale: Value error, scale min (4) must be below max (1)"),
        (USER_RUBRIC.replace("{min: 1, max: 4}", "{min: 1, max: four}"), "scale.max: Input should be a valid integer"),
        (USER_RUBRIC + "threshold: 3\n", "threshold: Extra inputs are not permitted"),
        (USER_RUBRIC.replace("code_comments", "Code Comments"), "name: String should match pattern"),
        (USER_RUBRIC + "flags: [score]\n", "flag 'score'"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping of rubric fields, got list"),
    ],
)
def test_a_broken_rubric_file_is_named_with_its_problem(tmp_path, text, complaint):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(RubricError) as err:
        load_rubric(path)
    assert str(path) in str(err.value) and complaint in str(err.value)


def test_unknown_rubric_names_and_missing_files(tmp_path):
    with pytest.raises(RubricError, match="no built-in rubric 'educational'.*educational_value"):
        load_rubric("educational")
    with pytest.raises(RubricError, match="missing.yaml: cannot read it"):
        load_rubric(tmp_path / "missing.yaml")


def test_the_fingerprint_follows_the_text_not_only_the_version():
    edited = EDU.model_copy(update={"criteria": [*EDU.criteria[:-1], "It is outstanding teaching material."]})
    assert edited.version == EDU.version and edited.fingerprint != EDU.fingerprint
    assert EDU.model_copy(update={"version": "2"}).fingerprint != EDU.fingerprint
    assert EDU.model_copy(update={"instructions": EDU.instructions + " "}).fingerprint != EDU.fingerprint
    assert load_rubric("educational_value").fingerprint == EDU.fingerprint


# --- answers ---------------------------------------------------------------------------------


def edu(score=3, reason="clear and on topic", **extra) -> str:
    return json.dumps({"reason": reason, "score": score, **extra})


@pytest.mark.parametrize(
    "text",
    [edu(), "  \n" + edu() + "\n ", "```json\n" + edu() + "\n```", "```\n" + edu() + "\n```", "\n```JSON\n" + edu() + "```\n",
     '{"reason": "clear and on topic", "score": 3.0}'],
)
def test_usable_answers(text):
    assert parse_answer(text, EDU) == JudgeAnswer(3, "clear and on topic", {})


@pytest.mark.parametrize(
    "text, reason",
    [
        (None, "empty_completion"),
        ("", "empty_completion"),
        (" \n\t", "empty_completion"),
        ("```json\n\n```", "empty_completion"),
        ('{"reason": "x", "score": 3', "malformed_json"),
        ("Here is my answer: " + edu(), "malformed_json"),
        (edu() + " I hope this helps", "malformed_json"),
        ("```python\n" + edu() + "\n```", "malformed_json"),
        ("The page is educational. Score: 3", "malformed_json"),
        ("Score: 3. Sorry, I can't explain further.", "malformed_json"),
        ("[3]", "schema_violation"),
        ('"3"', "schema_violation"),
        ('{"score": 3}', "schema_violation"),
        (edu(extra=1), "schema_violation"),
        (edu(reason=7), "schema_violation"),
        (edu(score="3"), "schema_violation"),
        (edu(score=True), "schema_violation"),
        (edu(score=2.5), "schema_violation"),
        (edu(score=None), "schema_violation"),
        (edu(reason="x" * 401), "schema_violation"),
        (edu(score=6), "score_out_of_range"),
        (edu(score=-1), "score_out_of_range"),
        ("I'm sorry, but I can't assist with that request.", "refusal"),
        ("I’m sorry, I can’t rate this.", "refusal"),
        ("I cannot evaluate this document because it contains personal data.", "refusal"),
        ("As an AI, I am not able to judge this.", "refusal"),
        ("Sorry, I won't help with that.", "refusal"),
        ('{"refusal": "I cannot help with this."}', "refusal"),
        ('{"reason": "I am unable to assess this content."}', "refusal"),
    ],
)
def test_unusable_answers_say_why(text, reason):
    assert parse_answer(text, EDU) == reason


def test_a_scored_answer_that_apologises_is_still_an_answer():
    assert parse_answer(edu(score=0, reason="I'm sorry to say this page is only adverts."), EDU).score == 0


def test_flags_must_be_booleans():
    ok = {"reason": "r", "harmful": False, "toxic": True, "sexual": False, "score": 2}
    assert parse_answer(json.dumps(ok), SAFETY) == JudgeAnswer(2, "r", {"harmful": False, "toxic": True, "sexual": False})
    assert parse_answer(json.dumps({**ok, "toxic": "yes"}), SAFETY) == "schema_violation"
    assert parse_answer(json.dumps({k: v for k, v in ok.items() if k != "sexual"}), SAFETY) == "schema_violation"
    assert parse_answer(json.dumps({**ok, "score": 4}), SAFETY) == "score_out_of_range"


def test_validator_is_none_for_usable_answers():
    validate = validator(EDU)
    assert validate(edu()) is None
    assert validate(edu(score=9)) == "score_out_of_range"
    assert validate("") == "empty_completion"


# --- cache -----------------------------------------------------------------------------------


def key(text: str, rubric=EDU, model: str = "qwen") -> CacheKey:
    return CacheKey.of(text, model, rubric.name, rubric.fingerprint)


def test_cache_hit_miss_and_reopen(tmp_path):
    with ScoreCache(tmp_path) as cache:
        assert cache.get_many([key("a")]) == {}
        cache.put_many([(key("a"), CachedScore(edu(), 100, 12)), (key("b"), CachedScore(edu(score=1), 90, 11))])
        assert cache.get_many([key("a"), key("c")]) == {key("a"): CachedScore(edu(), 100, 12)}
    with ScoreCache(tmp_path) as reopened:
        assert reopened.get_many([key("a"), key("b")]) == {key("a"): CachedScore(edu(), 100, 12), key("b"): CachedScore(edu(score=1), 90, 11)}
        # any change to what the judge sees or who judges misses
        edited = EDU.model_copy(update={"instructions": EDU.instructions + " Be strict."})
        assert reopened.get_many([key("a", rubric=edited), key("a", model="llama"), key("a ")]) == {}


def test_cache_takes_many_keys_at_once(tmp_path):
    with ScoreCache(tmp_path) as cache:
        cache.put_many((key(f"doc {i}"), CachedScore(edu(score=i % 6))) for i in range(1200))
        found = cache.get_many([key(f"doc {i}") for i in range(0, 2400, 2)])
    assert len(found) == 600 and found[key("doc 10")].answer == edu(score=4)


def test_cache_only_takes_answers(tmp_path):
    with ScoreCache(tmp_path) as cache, pytest.raises(ValueError):
        cache.put_many([(key("a"), CachedScore("[1, 2]"))])


def _write_scores(folder: str, writer: int, n: int, go) -> None:
    with ScoreCache(folder) as cache:
        go.wait()  # both processes hold a connection, then race: many small transactions each
        for start in range(0, n, 5):
            cache.put_many((key(f"w{writer} doc {i}"), CachedScore(edu(score=writer), i, writer)) for i in range(start, start + 5))


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    go = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_scores, args=(str(tmp_path), w, 1000, go)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with ScoreCache(tmp_path) as cache:
        assert len(cache) == 2000
        found = cache.get_many([key(f"w{w} doc {i}") for w in (1, 2) for i in range(1000)])
    assert len(found) == 2000 and found[key("w2 doc 999")] == CachedScore(edu(score=2), 999, 2)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMDATA_CACHE_DIR", str(tmp_path / "scores"))
    assert default_cache_dir() == tmp_path / "scores"
    monkeypatch.delenv("LLMDATA_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / ".llmdata_cache"
