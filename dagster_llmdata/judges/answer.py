"""Reading a judge's answer: the JSON object its rubric asks for, or the reason it is unusable.
Strict on purpose: a score we had to guess at is worse than a quarantined document."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from dagster_llmdata.judges.backend import Validator
from dagster_llmdata.judges.rubrics import REASON_MAX_CHARS, Rubric


@dataclass(frozen=True)
class JudgeAnswer:
    score: int
    reason: str
    flags: dict[str, bool] = field(default_factory=dict)


# the one wrapping we accept around the JSON: a markdown code fence, optionally tagged json
_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*?)\n?```$", re.DOTALL | re.IGNORECASE)

# a prose refusal opens with one of these (checked only on text that is not JSON at all)
_REFUSAL_OPENING = re.compile(
    r"^(?:(?:i['’]?m|i am)\s+(?:so\s+|very\s+)?sorry\b|sorry\b|i\s+apologi[sz]e\b|my apologies\b"
    r"|i\s+(?:can\s*not|can['’]?t|won['’]?t|will not|must decline|am (?:not able|unable)|['’]m (?:not able|unable))\b"
    r"|as an ai\b|unfortunately,?\s+i\s+(?:can|am|won|will|['’]m))",
    re.IGNORECASE,
)


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL_OPENING.match(text.lstrip(" \t\r\n\"'*_>")))


def _unwrap(text: str) -> str:
    body = text.strip()
    fenced = _FENCE.match(body)
    return fenced.group(1).strip() if fenced else body


def parse_answer(text: str | None, rubric: Rubric) -> JudgeAnswer | str:
    """The answer, or one of: empty_completion, malformed_json, schema_violation,
    score_out_of_range, refusal."""
    if text is None or not text.strip():
        return "empty_completion"
    body = _unwrap(text)
    if not body:
        return "empty_completion"
    try:
        data = json.loads(body)
    except ValueError:
        return "refusal" if looks_like_refusal(body) else "malformed_json"
    if not isinstance(data, dict):
        return "schema_violation"
    expected = {"reason", "score", *rubric.flags}
    if set(data) != expected or not isinstance(data["reason"], str):
        # a refusal in JSON: a `refusal` field, or a bare reason that declines instead of scoring
        declined = "refusal" in data or ("score" not in data and isinstance(data.get("reason"), str) and looks_like_refusal(data["reason"]))
        return "refusal" if declined else "schema_violation"
    score = data["score"]
    # JSON Schema counts 3.0 as an integer; a bool is not one (True is an int in Python)
    if isinstance(score, bool) or not (isinstance(score, int) or (isinstance(score, float) and score.is_integer())):
        return "schema_violation"
    if len(data["reason"]) > REASON_MAX_CHARS:
        return "schema_violation"
    if any(not isinstance(data[flag], bool) for flag in rubric.flags):
        return "schema_violation"
    if not rubric.scale.min <= score <= rubric.scale.max:
        return "score_out_of_range"
    return JudgeAnswer(score=int(score), reason=data["reason"], flags={flag: data[flag] for flag in rubric.flags})


def validator(rubric: Rubric) -> Validator:
    """For a backend's retry loop: None when the text is a usable answer, else the reason."""
    def validate(text: str) -> str | None:
        answer = parse_answer(text, rubric)
        return answer if isinstance(answer, str) else None

    return validate
