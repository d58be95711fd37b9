"""llm_judge: an LLM scores every document with a rubric. A batch operator: documents go to the
backend a batch at a time (the `openai` backend sends them concurrently, one request each, and
the server batches), answers are checked against the rubric's JSON schema, scores are cached by
(text sent, model, rubric fingerprint), and a document the judge could not score is quarantined
with the reason: never scored 0 or a default."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document
from pydantic import Field

from dagster_llmdata.io.logs import ProgressLines, status_line
from dagster_llmdata.io.parquet_store import count_rows, iter_batches, list_parquet
from dagster_llmdata.judges.answer import JudgeAnswer, parse_answer, validator
from dagster_llmdata.judges.backend import JudgeBackend, JudgeRequest, JudgeRuntime
from dagster_llmdata.judges.cache import CachedScore, CacheKey, ScoreCache, default_cache_dir, text_hash
from dagster_llmdata.judges.rubrics import Rubric, load_rubric
from dagster_llmdata.operators.metadata import Table, histogram
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.verdict import Quarantine, Verdict
from dagster_llmdata.operators.base import BatchFunction, Operator
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.judges.cpu_backend import BUNDLED_MODELS, WEAK_JUDGE_NOTE
from dagster_llmdata.judges.cpu_backend import CpuBackend
from dagster_llmdata.judges.openai_backend import OpenAIBackend
from dagster_llmdata.judges.vllm_backend import VllmBackend

CHARS_PER_TOKEN = 4  # estimate when no tokenizer is known (openai backend without `tokenizer`)
# a document with NULs or a large share of other control characters is binary, not text
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
BINARY_CONTROL_SHARE = 0.05
EXAMPLES_PER_SCORE = 2


class LlmJudgeParams(OperatorParams):
    rubric: str = Field("educational_value", min_length=1, description="A built-in rubric (educational_value, sft_quality, safety) or the path of a rubric YAML file.")
    backend: Literal["openai", "vllm", "cpu"] = Field(
        "openai", description="openai: any OpenAI-compatible server (vllm serve); vllm: in-process vllm.LLM on a GPU; cpu: the bundled SmolLM2-135M on CPU (a weak judge).",
    )
    model: str = Field("smollm2-135m-instruct", min_length=1, description="Model name as the server knows it (openai), a model path or id (vllm), or the bundled model / a GGUF path (cpu).")
    max_doc_tokens: int = Field(1024, ge=16, le=1_000_000, description="Documents longer than this many tokens are cut to it before judging; the cut is recorded in <prefix>_truncated.")
    max_output_tokens: int = Field(256, ge=8, le=8192, description="Tokens the judge may write for its answer.")
    tokenizer: str | None = Field(None, description="tokenizer.json used to count tokens for truncation; None: the backend's own tokenizer, or 4 characters per token for openai.")
    column_prefix: str = Field("judge", pattern=r"^[a-z][a-z0-9_]*$", description="Columns written: <prefix>_score, <prefix>_reason, <prefix>_truncated (and <prefix>_<flag> for flag rubrics).")
    batch_size: int = Field(64, ge=1, le=100_000, description="Documents handed to the backend at once (the openai backend sends them concurrently); does not change scores.")


def make_backend(backend: str, runtime: JudgeRuntime, model: str) -> JudgeBackend:
    """The backend by name; heavy imports happen only for the one used."""
    if backend == "openai":

        return OpenAIBackend(runtime, model)
    if backend == "vllm":

        return VllmBackend(runtime, model)

    return CpuBackend(runtime, model)


class Truncator:
    """Cuts a document to `max_tokens` tokens with the tokenizer at hand."""

    def __init__(self, max_tokens: int, tokenizer: Any | None):
        self.max_tokens, self.tokenizer = max_tokens, tokenizer

    def __call__(self, text: str) -> tuple[str, bool]:
        if self.tokenizer is None:
            limit = self.max_tokens * CHARS_PER_TOKEN
            return (text, False) if len(text) <= limit else (text[:limit], True)
        # a huge document is never tokenized whole: a token is rarely longer than 16 characters
        head = text[: self.max_tokens * 16]
        ids = _encode(self.tokenizer, head)
        if len(ids) > self.max_tokens:
            return _decode(self.tokenizer, ids[: self.max_tokens]), True
        return head, len(head) < len(text)


def _encode(tokenizer: Any, text: str) -> list[int]:
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(encoded, "ids", encoded))  # tokenizers.Tokenizer returns an Encoding


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def is_binary(text: str) -> bool:
    head = text[:20_000]
    return "\x00" in head or len(CONTROL.findall(head)) > BINARY_CONTROL_SHARE * max(1, len(head))


class LlmJudgeFn(BatchFunction):
    """Scores a batch: cache first, the backend for the rest, one verdict per document."""

    def __init__(self, params: LlmJudgeParams, runtime: JudgeRuntime, rubric: Rubric):
        super().__init__()
        self.params, self.runtime, self.rubric = params, runtime, rubric
        self._backend: JudgeBackend | None = None
        self._cache: ScoreCache | None = None
        self._truncate: Truncator | None = None
        self.expected: int | None = None  # documents this run will see, when known (for progress)
        self._progress: ProgressLines | None = None

    def __enter__(self):
        p = self.params
        self._backend = make_backend(p.backend, self.runtime, p.model)
        self._backend.wait_ready()  # a server still starting is waited for, not judged as refusing
        self._progress = ProgressLines("llm_judge", self.expected, what="docs judged")
        self._cache = ScoreCache(self.runtime.cache_dir or default_cache_dir())
        tokenizer = None
        if p.tokenizer:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(p.tokenizer)
        elif hasattr(self._backend, "tokenizer"):
            tokenizer = self._backend.tokenizer()
        self._truncate = Truncator(p.max_doc_tokens, tokenizer)
        return self

    def __exit__(self, *exc):
        if self._progress is not None and self._progress.done:
            late = self.counters["failed_deadline_exceeded"]
            status_line(self._progress.line(f"{late} quarantined deadline_exceeded" if late else "done"))
        for resource in (self._backend, self._cache):
            if resource is not None:
                resource.close()
        self._backend = self._cache = None

    def __call__(self, docs: list[Document]) -> list[Verdict]:
        p, rubric = self.params, self.rubric
        verdicts: list[Verdict | None] = [None] * len(docs)
        keys: dict[int, CacheKey] = {}
        sent: dict[int, str] = {}
        cuts: list[tuple[str, str]] = []
        for i, doc in enumerate(docs):
            if is_binary(doc.text):
                verdicts[i] = Quarantine("binary_document", "control characters: not text a judge should read")
                continue
            sent[i], truncated = self._truncate(doc.text)
            doc.metadata[f"{p.column_prefix}_truncated"] = truncated
            self.counters["truncated"] += truncated
            keys[i] = CacheKey.of(sent[i], p.model, rubric.name, rubric.fingerprint)
            if truncated:
                cuts.append((text_hash(doc.text), keys[i].text_hash))
        self._cache.note_cuts(cuts)
        cached = self._cache.get_many(keys.values())
        todo = [i for i in keys if keys[i] not in cached]
        self.counters["cache_hits"] += len(keys) - len(todo)
        for i in keys:
            if keys[i] in cached:
                verdicts[i] = self._scored(docs[i], parse_answer(cached[keys[i]].answer, rubric))
        requests = [JudgeRequest(rubric.messages(sent[i]), rubric.answer_schema(), p.max_output_tokens) for i in todo]
        progress = self._progress
        progress.advance(len(docs) - len(todo), failed=len(docs) - len(keys))
        completions = self._backend.complete(requests, validator(rubric), lambda c: progress.advance(1, failed=c.error is not None)) if requests else []
        fresh = []
        for i, completion in zip(todo, completions):
            self.counters["requests"] += completion.attempts
            self.counters["tokens_in"] += completion.tokens_in
            self.counters["tokens_out"] += completion.tokens_out
            answer = parse_answer(completion.text, rubric) if completion.error is None else completion.error
            if isinstance(answer, str):  # a failure reason: the document is set aside, never scored by default
                self.counters[f"failed_{answer}"] += 1
                verdicts[i] = Quarantine(answer, completion.detail or (completion.text or "")[:500])
                continue
            fresh.append((keys[i], CachedScore(completion.text, completion.tokens_in, completion.tokens_out)))
            verdicts[i] = self._scored(docs[i], answer)
        self._cache.put_many(fresh)
        return verdicts

    def _scored(self, doc: Document, answer: JudgeAnswer | str) -> Verdict:
        if isinstance(answer, str):  # a cached answer that no longer parses (a changed parser): judge it again next time
            return Quarantine(answer, "cached answer no longer valid")
        prefix = self.params.column_prefix
        doc.metadata[f"{prefix}_score"] = answer.score
        doc.metadata[f"{prefix}_reason"] = answer.reason
        for flag, value in answer.flags.items():
            doc.metadata[f"{prefix}_{flag}"] = value
        self.counters[f"score_{answer.score}"] += 1
        return True


class LlmJudge(Operator):
    name = "llm_judge"
    version = "1"
    description = (
        "Score every document with an LLM judge and a rubric (educational_value 0-5, sft_quality 1-5, safety "
        "flags, or a rubric YAML): writes <prefix>_score (an integer on the rubric's scale), <prefix>_reason and "
        "<prefix>_truncated. Backends: an OpenAI-compatible server (vllm serve), in-process vLLM, or a small CPU "
        "model. Scores are cached by text, model and rubric; documents the judge could not score are quarantined "
        "with the reason. Select on the score with the `select` operator."
    )
    Params = LlmJudgeParams
    Runtime = JudgeRuntime
    runtime_key = "judge"
    kinds = ("datatrove", "llm", "judge")

    def __init__(self, params=None, runtime=None):
        super().__init__(params, runtime)
        self.rubric = load_rubric(self.params.rubric)

    @property
    def code_version(self) -> str:
        # the rubric's text is data too: an edited rubric file re-versions the stage
        return f"{super().code_version}-{hashlib.sha1(self.rubric.fingerprint.encode()).hexdigest()[:8]}"

    def produced_columns(self) -> dict[str, pa.DataType]:
        prefix = self.params.column_prefix
        columns = {f"{prefix}_score": pa.int64(), f"{prefix}_reason": pa.string(), f"{prefix}_truncated": pa.bool_()}
        columns.update({f"{prefix}_{flag}": pa.bool_() for flag in self.rubric.flags})
        return columns

    def batch_fn(self) -> LlmJudgeFn:
        return LlmJudgeFn(self.params, self.runtime, self.rubric)

    def routed_step(self, run: StageRun, schema: pa.Schema, fn=None):
        fn = self.batch_fn() if fn is None else fn
        # the total for progress lines: known when one task reads an input that exists (not inside a fused pass)
        if isinstance(fn, LlmJudgeFn) and run.tasks == 1 and run.input_files and all(Path(f).is_file() for f in run.input_files):
            fn.expected = count_rows(run.input_files)
        return super().routed_step(run, schema, fn)

    def forget_partition(self, run: StageRun) -> dict[str, Any] | None:
        return forget_judged(run, self.params, self.runtime)

    def metadata_from_stats(self, stats: dict[str, dict[str, float]]) -> dict[str, Any]:
        totals: Counter = Counter()
        for name, values in stats.items():
            if name.startswith(f"{self.name} ("):
                totals.update({k: int(v) for k, v in values.items() if k != "time_s"})
        meta: dict[str, Any] = {
            "judge_model": self.params.model,
            "judge_backend": self.params.backend,
            "rubric": self.rubric.name,
            "rubric_version": self.rubric.fingerprint,
            "judge_requests": totals["requests"],
            "judge_cache_hits": totals["cache_hits"],
            "judge_tokens_in": totals["tokens_in"],
            "judge_tokens_out": totals["tokens_out"],
            "judge_truncated_docs": totals["truncated"],
            "judge_failures": {k.removeprefix("failed_"): v for k, v in totals.items() if k.startswith("failed_")},
        }
        if note := self.quality_note():
            meta["judge_quality_note"] = note
        return meta

    def quality_note(self) -> str | None:
        """A warning for metadata when the judge is known to be weak (the bundled 135M CPU model)."""
        return WEAK_JUDGE_NOTE if self.params.backend == "cpu" and self.params.model in BUNDLED_MODELS else None

    def dataset_metadata(self, run: StageRun) -> dict[str, Any]:
        """The score histogram and a few examples per score, read from the kept dataset."""
        column = f"{self.params.column_prefix}_score"
        return score_summary(list_parquet(run.output_dir), column, f"{self.params.column_prefix}_reason")


def forget_judged(run: StageRun, params: LlmJudgeParams, runtime: JudgeRuntime) -> dict[str, Any] | None:
    """A takedown: the score cache drops its answers for every text of the removed partition (what
    the stage read, and what it wrote), under any model or rubric. An answer also used by an identical
    text that stays is dropped too: a judge's reason may quote the text, and the cost is one judgement
    again on that text's next run, where keeping it would need a scan of every pipeline sharing the cache.
    A cut text is found through the cache's record of cuts; an answer cached before that record
    existed is found too when the cut is by characters (no tokenizer to load)."""
    path = Path(runtime.cache_dir or default_cache_dir()) / "scores.sqlite"
    if not path.exists():
        return None
    files = run.input_files + [f for d in (run.output_dir, run.rejected_dir, run.quarantine_dir) for f in list_parquet(d)]
    removed = 0
    chars = params.max_doc_tokens * CHARS_PER_TOKEN if params.backend == "openai" and not params.tokenizer else None
    with ScoreCache(path.parent) as cache:
        for f in files:
            if "text" not in pq.ParquetFile(f).schema_arrow.names:
                continue
            for batch in iter_batches([f], columns=["text"]):
                texts = [t for t in batch.column(0).to_pylist() if t is not None]
                if chars:
                    texts += [t[:chars] for t in texts if len(t) > chars]
                removed += cache.forget(text_hash(t) for t in texts)
    return {"score_cache": str(path), "score_cache_entries_removed": removed}


def score_summary(files: list[str], score_column: str, reason_column: str | None = None) -> dict[str, Any]:
    """`<score>_histogram` (table + markdown chart) and `<score>_examples` (a few per score)."""
    counts: Counter = Counter()
    examples: dict[int, list[dict]] = {}
    columns = ["id", "text", score_column] + ([reason_column] if reason_column else [])
    for f in files:
        pf = pq.ParquetFile(f)
        if score_column not in pf.schema_arrow.names:
            continue
        for batch in pf.iter_batches(columns=[c for c in columns if c in pf.schema_arrow.names], batch_size=4096):
            for row in batch.to_pylist():
                score = row[score_column]
                counts[score] += 1
                band = examples.setdefault(score, [])
                if len(band) < EXAMPLES_PER_SCORE:
                    band.append({"score": score, "id": row["id"], "reason": row.get(reason_column) or "",
                                 "text": " ".join((row["text"] or "").split())[:200]})
    if not counts:
        return {}
    table, chart = histogram(dict(counts), label="score")
    return {
        f"{score_column}_histogram": table,
        f"{score_column}_chart": chart,
        f"{score_column}_examples": Table(["score", "id", "reason", "text"], [r for s in sorted(examples) for r in examples[s]]),
        f"{score_column}_mean": round(sum(s * n for s, n in counts.items()) / sum(counts.values()), 4),
    }


__all__ = ["LlmJudge", "LlmJudgeParams", "score_summary", "make_backend"]
