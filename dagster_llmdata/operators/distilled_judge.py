"""distilled_judge: the FineWeb-Edu pattern in one stage. The LLM judge annotates a stratified
sample, a cheap classifier (hashed word n-grams, linear) learns its scores on part of that sample,
is checked against the judge on the rest, and scores every document. The judge's cost is paid for
`sample_size` documents, not the corpus."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from datatrove.data import Document
from pydantic import Field

from dagster_llmdata.io.docsteps import row_to_document
from dagster_llmdata.io.parquet_store import iter_batches, list_parquet
from dagster_llmdata.judges.distill import load_classifier, stratified_sample, train_classifier
from dagster_llmdata.operators.metadata import Table, bins_of, histogram
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.verdict import Verdict
from dagster_llmdata.operators.base import BatchFunction, CheckOutcome, Operator
from dagster_llmdata.errors import StageFailed
from dagster_llmdata.operators.llm_judge import LlmJudge, LlmJudgeParams, forget_judged

CLASSIFIER_FILE = "_classifier.joblib"


class DistilledJudgeParams(LlmJudgeParams):
    column_prefix: str = Field("quality", pattern=r"^[a-z][a-z0-9_]*$", description="Columns written: <prefix>_score (the classifier's score, a float on the rubric's scale, every document) and <prefix>_judge_score (the judge's integer score, sampled documents only).")
    sample_size: int = Field(500, ge=10, le=1_000_000, description="Documents the LLM judge annotates, stratified by domain and length.")
    holdout: float = Field(0.2, gt=0, lt=0.9, description="Share of the judged sample kept out of training to measure agreement with the judge.")
    seed: int = Field(0, description="Seed of the sample and the train/held-out split.")
    model_kind: Literal["logistic", "ridge"] = Field("logistic", description="Linear model on hashed word 1-2-grams: logistic regression over the scale's labels, or ridge regression.")
    threshold: float | None = Field(None, description="Score at which a document counts as good, for F1 and accuracy; None: the middle of the rubric's scale.")
    agreement_floor: float = Field(0.5, ge=-1, le=1, description="The `judge_agreement` check warns when the held-out Spearman correlation with the judge is below this.")
    batch_size: int = Field(2048, ge=1, le=1_000_000, description="Documents scored per classifier call; does not change scores.")


class ClassifierFn(BatchFunction):
    """Scores a batch with the classifier saved by this stage's run, and carries the judge's score
    for the documents it annotated."""

    def __init__(self, path: str, prefix: str, judged: dict[str, int]):
        super().__init__()
        self.path, self.prefix, self.judged = path, prefix, judged
        self._clf = None

    def __enter__(self):
        self._clf = load_classifier(self.path)
        return self

    def __exit__(self, *exc):
        self._clf = None

    def __call__(self, docs: list[Document]) -> list[Verdict]:
        scores = self._clf.score([d.text for d in docs])
        for doc, score in zip(docs, scores):
            doc.metadata[f"{self.prefix}_score"] = float(score)
            doc.metadata[f"{self.prefix}_judge_score"] = self.judged.get(doc.id)
        return [True] * len(docs)


class DistilledJudge(Operator):
    name = "distilled_judge"
    version = "1"
    description = (
        "Judge a stratified sample with an LLM (as llm_judge), train a cheap classifier on those scores, check it "
        "against the judge on a held-out part of the sample, and score every document with it: <prefix>_score (float "
        "on the rubric's scale) for all, <prefix>_judge_score for the sampled ones. Agreement (Spearman, F1 at the "
        "threshold, confusion matrix) goes to metadata; the `judge_agreement` check warns below `agreement_floor`."
    )
    Params = DistilledJudgeParams
    Runtime = LlmJudge.Runtime
    runtime_key = LlmJudge.runtime_key
    kinds = ("datatrove", "llm", "judge", "classifier")
    checks = {"judge_agreement": "The distilled classifier agrees with the LLM judge on held-out documents (Spearman >= agreement_floor)."}

    def __init__(self, params=None, runtime=None):
        super().__init__(params, runtime)
        self.judge = LlmJudge(self.params.model_dump(include=set(LlmJudgeParams.model_fields) - {"column_prefix", "batch_size"}), runtime)

    @property
    def code_version(self) -> str:
        return f"{super().code_version}-{self.judge.code_version.rsplit('-', 1)[-1]}"

    def produced_columns(self) -> dict[str, pa.DataType]:
        prefix = self.params.column_prefix
        return {f"{prefix}_score": pa.float64(), f"{prefix}_judge_score": pa.int64()}

    def forget_partition(self, run: StageRun) -> dict[str, Any] | None:
        return forget_judged(run, self.judge.params, self.judge.runtime)

    def run(self, run: StageRun) -> dict[str, Any]:
        p = self.params
        sample = self._judge_sample(run)
        judged = {doc_id: score for doc_id, score, _ in sample["scored"]}
        if not sample["size"]:  # an empty partition: nothing to judge or to score
            return {"sample_size": 0}
        if not judged:
            raise StageFailed(f"{run.stage}: the judge scored none of the {sample['size']} sampled documents "
                              f"(failures: {dict(sample['failures'])}); nothing to train a classifier on")
        texts = [text for _, _, text in sample["scored"]]
        scale = self.judge.rubric.scale
        threshold = p.threshold if p.threshold is not None else (scale.min + scale.max) / 2
        try:
            clf = train_classifier(texts, list(judged.values()), seed=p.seed, holdout=p.holdout, kind=p.model_kind, threshold=threshold)
        except ValueError as exc:
            raise StageFailed(f"{run.stage}: {exc}") from None
        path = clf.save(run.work_dir / CLASSIFIER_FILE)
        schema = run.output_schema(self.produced_columns())
        step = self.routed_step(run, schema, ClassifierFn(str(path), p.column_prefix, judged))
        run.execute([run.reader(), step, run.kept_writer(schema)])
        (run.output_dir / CLASSIFIER_FILE).write_bytes(path.read_bytes())  # kept with the data it scored
        return self._metadata(sample, clf, judged)

    def _judge_sample(self, run: StageRun) -> dict[str, Any]:
        """The stratified sample, judged (through the score cache, like any llm_judge stage)."""
        meta = [{"domain": domain, "length": length or 0}
                for batch in iter_batches(run.input_files, columns=["domain", "text"])
                for domain, length in zip(batch.column(0).to_pylist(), pc.utf8_length(batch.column(1)).to_pylist())]
        wanted = set(stratified_sample(meta, self.params.sample_size, self.params.seed))
        docs, position = [], 0
        for batch in iter_batches(run.input_files):
            for row in batch.to_pylist():
                if position in wanted:
                    docs.append(row_to_document(row))
                position += 1
        scored, failures = [], Counter()
        fn = self.judge.batch_fn()
        with fn:
            for start in range(0, len(docs), self.judge.params.batch_size):
                chunk = docs[start: start + self.judge.params.batch_size]
                for doc, verdict in zip(chunk, fn(chunk)):
                    if verdict is True:
                        scored.append((doc.id, doc.metadata["judge_score"], doc.text))
                    else:
                        failures[getattr(verdict, "reason", "unscored")] += 1
        return {"size": len(docs), "scored": scored, "failures": failures, "usage": fn.counters}

    def _metadata(self, sample: dict[str, Any], clf, judged: dict[str, int]) -> dict[str, Any]:
        usage, held_out = sample["usage"], clf.holdout
        confusion = held_out.get("confusion", {"labels": [], "matrix": []})
        labels, matrix = confusion["labels"], confusion["matrix"]
        meta: dict[str, Any] = {
            "judge_model": self.judge.params.model,
            "judge_backend": self.judge.params.backend,
            "rubric": self.judge.rubric.name,
            "rubric_version": self.judge.rubric.fingerprint,
            "sample_size": sample["size"],
            "sample_judged": len(judged),
            "sample_failures": dict(sample["failures"]),
            "judge_requests": usage["requests"],
            "judge_cache_hits": usage["cache_hits"],
            "judge_tokens_in": usage["tokens_in"],
            "judge_tokens_out": usage["tokens_out"],
            "classifier_kind": clf.kind,
            "agreement_n": held_out.get("n", 0),
            "agreement_spearman": held_out["spearman"] if held_out.get("spearman") is not None else float("nan"),
            "agreement_f1": round(held_out.get("f1", 0.0), 4),
            "agreement_accuracy": round(held_out.get("accuracy", 0.0), 4),
            "agreement_threshold": held_out.get("threshold", float("nan")),
            "agreement_confusion": Table(["judge \\ classifier", *map(str, labels)],
                                         [{"judge \\ classifier": str(label), **{str(c): n for c, n in zip(labels, row)}}
                                          for label, row in zip(labels, matrix)]),
            "judge_sample_histogram": histogram(Counter(judged.values()), label="judge score")[1],
        }
        if note := self.judge.quality_note():
            meta["judge_quality_note"] = note
        return meta

    def dataset_metadata(self, run: StageRun) -> dict[str, Any]:
        column = f"{self.params.column_prefix}_score"
        values = [v for batch in iter_batches(list_parquet(run.output_dir), columns=[column]) for v in batch.column(0).to_pylist()]
        if not values:
            return {}
        table, chart = histogram(bins_of(values), label=column)
        return {f"{column}_histogram": table, f"{column}_chart": chart}

    def evaluate_checks(self, metadata: dict[str, Any]) -> list[CheckOutcome]:
        rho = metadata.get("agreement_spearman")
        measured = isinstance(rho, (int, float)) and rho == rho  # NaN: not measured
        passed = measured and rho >= self.params.agreement_floor
        if measured:
            why = f"held-out Spearman {rho:.3f} vs floor {self.params.agreement_floor}"
        elif metadata.get("classifier_kind") == "constant":
            why = "the judge gave every sampled document the same score: the classifier is that constant"
        else:
            why = "no agreement measured (too few judged documents to hold any back)"
        return [CheckOutcome(
            "judge_agreement", passed, why,
            {"spearman": rho if measured else None, "floor": self.params.agreement_floor,
             "n": metadata.get("agreement_n")},
        )]


__all__ = ["DistilledJudge", "DistilledJudgeParams"]
