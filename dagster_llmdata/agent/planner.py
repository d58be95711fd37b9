"""Planners: goal + profile (+ findings of earlier rounds) -> a pipeline spec, as plain data that
the verifier then checks. The deterministic planner (the default) uses rules over the registry's
operators; the LLM planner (llm_planner.py) asks a model for the same shape."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from dagster_llmdata.spec.intent import Goals, Intent
from dagster_llmdata.agent.profile import Profile


@dataclass
class Finding:
    """One verification check: what was checked, whether it passed, and why (the planner reads
    the failed ones in the next round)."""

    check: str
    passed: bool
    detail: str = ""
    stage: str | None = None
    op: str | None = None
    phase: str = "static"  # static | dynamic | security

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        where = f" [{self.stage}]" if self.stage else ""
        return f"{self.check}{where}: {self.detail}"


@dataclass
class PlanRequest:
    intent: Intent
    goals: Goals
    profile: Profile
    name: str
    sources: list[dict]  # SourceSpec data the agent chose (planners do not choose paths)
    storage: str
    round: int = 0
    history: list[list[Finding]] = field(default_factory=list)  # failed findings, one list per earlier round


@dataclass
class Plan:
    spec: Any  # the proposed spec as data (unverified: from a model it may be anything)
    notes: list[str] = field(default_factory=list)  # why each stage is there
    raw: str | None = None  # a model's answer text, kept for the report
    problem: str | None = None  # the answer could not be read as a spec at all (not JSON, not an object)


class Planner(Protocol):
    name: str

    def plan(self, request: PlanRequest) -> Plan: ...


def spec_frame(request: PlanRequest, stages: list[dict], description: str) -> dict[str, Any]:
    """The parts of a spec the agent fixes itself: name, sources, storage, executor."""
    return {
        "pipeline": request.name,
        "description": description[:500],
        "storage": request.storage,
        "executor": {"kind": "local", "tasks": 2, "workers": 2},
        "sources": request.sources,
        "stages": stages,
    }


MAX_DOC_BYTES = 1_000_000
# how strongly each rejecting operator is relaxed after it dropped too much: level 1 params, level 2 removed
RELAXED_PARAMS: dict[str, dict[str, Any]] = {
    "gopher_quality": {"min_doc_words": 10, "min_stop_words": 1, "max_symbol_word_ratio": 0.3, "max_non_alpha_words_ratio": 0.5},
    "gopher_repetition": {"dup_line_frac": 0.5, "dup_para_frac": 0.5, "dup_line_char_frac": 0.4, "dup_para_char_frac": 0.4},
    "fineweb_quality": {"line_punct_thr": 0.05, "short_line_thr": 0.9, "char_duplicates_ratio": 0.1, "new_line_ratio": 0.6},
    "c4_quality": {"min_num_sentences": 2, "filter_curly_bracket": False},
    "language_id": {"min_score": 0.2},
    "extract_html": {"favour_precision": False},
}
# operators the goal cannot do without (never removed by a repair)
def _required_ops(goals: Goals) -> set[str]:
    req = {"ingest"}
    if goals.languages and not goals.code:
        req.add("language_id")
    if goals.no_pii:
        req.add("pii_redact")
    return req


class DeterministicPlanner:
    """Rules from the goal and the profile; repairs from the findings of earlier rounds."""

    name = "deterministic"

    def plan(self, request: PlanRequest) -> Plan:
        g, p = request.goals, request.profile
        flagged = Counter()  # operator -> rounds in which it dropped too much / cost too much
        wants: set[str] = set()
        for findings in request.history:
            for f in findings:
                if f.check in ("stage_drop_too_high", "survival_too_low", "cost_too_high") and f.op:
                    flagged[f.op] += 1
                elif f.check == "goal_pii_left":
                    wants.add("pii_redact")
                elif f.check == "goal_markup_left":
                    wants.add("extract_html")
                elif f.check in ("goal_dups_left", "goal_near_dups_left"):
                    wants.add("dedup_harder")
                elif f.check == "goal_language_share":
                    wants.add("language_strict")
        required = _required_ops(g)
        stages: list[dict] = []
        notes: list[str] = []

        def add(op: str, name: str, params: dict | None = None, why: str = "") -> None:
            level = flagged.get(op, 0)
            if level >= 2 and op not in required:
                notes.append(f"{op} removed after it dropped too much twice")
                return
            params = dict(params or {})
            if level >= 1:
                params.update(RELAXED_PARAMS.get(op, {}))
                notes.append(f"{op} relaxed after round findings")
            stages.append({"name": name, "op": op, "params": params})
            if why:
                notes.append(f"{name}: {why}")

        # docs over 1 MB are rare in training data and stall HTML extraction and the repetition filters
        add("ingest", "raw", {"max_doc_bytes": MAX_DOC_BYTES},
            why=f"reads the sources; docs over {MAX_DOC_BYTES:,} bytes quarantined (largest sampled: {p.length_chars.get('max', 0):,.0f} chars)")
        if g.no_markup or p.markup_share > 0 or "extract_html" in wants:
            add("extract_html", "extracted", {"timeout": 30.0}, why=f"markup in {p.markup_share:.0%} of sampled docs")
        add("normalize", "normalized", why=f"encoding errors in {p.encoding_error_share:.1%} of records; control characters, whitespace")
        if g.languages and not g.code:
            strict = "language_strict" in wants
            add("language_id", "language_filtered", {"languages": g.languages, "min_score": 0.65 if strict else 0.5},
                why=f"keep {g.languages}; sample: {dict(list(p.languages.items())[:4])}")
        if g.dedup:
            add("exact_dedup", "deduplicated", why=f"exact duplicates ~{p.exact_dup_rate:.1%}")
            near = {"num_buckets": 20, "hashes_per_bucket": 5} if "dedup_harder" in wants else {}
            add("minhash_dedup", "near_deduplicated", near, why=f"near duplicates ~{p.near_dup_rate:.1%}")
        if not g.code and g.quality >= 0.3:
            add("gopher_repetition", "repetition_filtered", why="repeated lines / n-grams (crawl junk)")
            params: dict[str, Any] = {}
            english = "en" in g.languages if g.languages else p.languages.get("en", 0.0) >= 0.9
            if not english:
                params["min_stop_words"] = 0  # datatrove's stop words are English
            if p.length_words.get("p50", 1000) < 100:
                params["min_doc_words"] = 20  # short docs are the norm in this source
            # technical text (changelogs, docs with code samples) has many words without letters:
            # hold it to what the lower fifth of the sample reaches rather than Gopher's 0.8
            low_alpha = p.alpha_word_share.get("p10", 1.0)
            if low_alpha < 0.8:
                params["max_non_alpha_words_ratio"] = round(max(0.5, low_alpha), 2)
                notes.append(f"quality_filtered: letters in {low_alpha:.0%} of words at the sample's 10th percentile; "
                             f"Gopher's 0.8 would drop technical text")
            add("gopher_quality", "quality_filtered", params, why="Gopher quality heuristics")
            if g.quality >= 0.7:
                add("fineweb_quality", "web_filtered", why="FineWeb line heuristics (min_quality >= 0.7)")
        if g.no_pii or p.pii_doc_share > 0 or "pii_redact" in wants:
            add("pii_redact", "redacted", why=f"personal data in {p.pii_doc_share:.1%} of sampled docs")
        if g.export:
            lang = (g.languages or ["en"])[0]
            add("export_shards", "shards", {"tokenizer": f"spacy:{lang}"}, why="training-ready shards with token counts")
        description = f"Proposed by the agent for: {request.intent.goal}"
        return Plan(spec_frame(request, stages, description), notes)
