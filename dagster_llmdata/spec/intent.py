"""An intent: what a user wants built (a goal in plain words, the sources, constraints), read
from YAML with errors that name the file and line. Turned into `Goals`, the measurable
requirements the planner plans for and the verifier checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dagster_llmdata.errors import IntentError
from dagster_llmdata.spec.pipeline import NAME
from dagster_llmdata.spec.yaml_loader import model_from_yaml

MAX_INTENT_BYTES = 64 * 1024


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    languages: list[str] | None = Field(
        None, min_length=1, max_length=20,
        description="Languages to keep (ISO 639-1 codes as fastText lid.176 labels them: en, de, fr, ...).",
    )
    min_quality: float | None = Field(
        None, ge=0, le=1,
        description="How strict the quality filters are: 0 none, ~0.5 Gopher repetition + quality, >= 0.7 adds FineWeb's line filters.",
    )
    target_size: int | None = Field(None, ge=1, le=10**12, description="Documents the full run should keep at least (checked against the projection).")
    max_cost: float | None = Field(None, ge=0, le=10**9, description="Most the full run may cost in USD (projected from the dry run's measured CPU time).")

    def model_post_init(self, _context) -> None:
        for lang in self.languages or []:
            if not re.fullmatch(r"[a-z]{2,3}", lang):
                raise ValueError(f"language {lang!r} is not an ISO 639 code such as en, de, fr")


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    goal: str = Field(min_length=3, max_length=4000, description="What the dataset is for, in plain words.")
    sources: list[str] = Field(min_length=1, max_length=32, description="Landing folders (or files) of raw data, relative to the project root.")
    constraints: Constraints = Field(default_factory=Constraints, description="Optional limits: languages, quality, size, cost.")
    name: str | None = Field(None, pattern=NAME, max_length=64, description="Pipeline name for the proposal (default: from the goal).")


def load_intent(path: str | Path) -> Intent:
    """The intent at `path` (at most MAX_INTENT_BYTES); any problem raises IntentError naming file:line."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_INTENT_BYTES:
            raise IntentError(f"{path}: an intent is at most {MAX_INTENT_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IntentError(f"{path}: cannot read intent: {exc}") from None
    return model_from_yaml(path, text, Intent, error=IntentError,
                           shape="an intent is a mapping with `goal` and `sources` (optional `constraints`, `name`)")


LANGUAGE_WORDS = {
    "english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it", "portuguese": "pt",
    "dutch": "nl", "russian": "ru", "chinese": "zh", "japanese": "ja", "polish": "pl", "swedish": "sv",
}


@dataclass
class Goals:
    """The measurable side of an intent: what the output must (and must not) hold."""

    languages: list[str] | None = None
    no_pii: bool = False
    dedup: bool = True
    no_markup: bool = False
    code: bool = False  # a code corpus: prose filters and language ID would wipe it
    quality: float = 0.5  # strictness of the heuristic filters, 0..1
    export: bool = False
    target_size: int | None = None
    max_cost: float | None = None
    notes: list[str] = field(default_factory=list)  # how each requirement was read from the intent

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _has(goal: str, *words: str) -> str | None:
    return next((w for w in words if re.search(rf"\b{w}", goal)), None)


def read_goals(intent: Intent) -> Goals:
    """Requirements from the goal's words and the constraints (the constraints win)."""
    goal, c = intent.goal.lower(), intent.constraints
    g = Goals(target_size=c.target_size, max_cost=c.max_cost)
    if c.languages:
        g.languages = list(c.languages)
        g.notes.append(f"languages {g.languages} from constraints")
    else:
        named = [code for word, code in LANGUAGE_WORDS.items() if re.search(rf"\b{word}\b", goal)]
        if named:
            g.languages = named
            g.notes.append(f"languages {named} named in the goal")
    if w := _has(goal, "personal", "pii", "privacy", "private", "e-mail", "email", "anonymi", "redact", "gdpr"):
        g.no_pii = True
        g.notes.append(f"no personal data ('{w}' in the goal)")
    if w := _has(goal, "keep duplicates", "with duplicates"):
        g.dedup = False
        g.notes.append(f"duplicates kept ('{w}')")
    if w := _has(goal, "html", "markup", "web page", "webpage", "boilerplate", "text only", "plain text"):
        g.no_markup = True
        g.notes.append(f"no markup left ('{w}' in the goal)")
    if w := _has(goal, "code", "source file", "programming", "python source", "repositor"):
        g.code = True
        g.notes.append(f"a code corpus ('{w}' in the goal): no prose quality filters, no language filter")
    if c.min_quality is not None:
        g.quality = c.min_quality
    elif w := _has(goal, "high.quality", "high-quality", "strict", "very clean"):
        g.quality = 0.8
        g.notes.append(f"strict quality filters ('{w}')")
    elif _has(goal, "raw", "no filter", "unfiltered"):
        g.quality = 0.0
    if w := _has(goal, "pre-train", "pretrain", "training set", "training data", "shards", "corpus"):
        g.export = True
        g.notes.append(f"exported as training shards ('{w}')")
    return g


def default_name(intent: Intent) -> str:
    """A pipeline name from the intent's name, else from the goal's first words."""
    if intent.name:
        return intent.name
    words = [w for w in re.findall(r"[a-z0-9]+", intent.goal.lower()) if w not in {"a", "an", "the", "from", "of", "these", "for", "and", "with"}]
    name = "_".join(words[:4]) or "proposal"
    return ("p_" + name if name[0].isdigit() else name)[:48]
