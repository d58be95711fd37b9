"""datatrove's heuristic quality filters (Gopher, C4, FineWeb), their params exposed."""

from __future__ import annotations

from typing import Any

from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

from .base import Operator, OperatorParams


class DatatroveFilterFn:
    """Calls a datatrove filter's per-document `filter` (its own verdicts and reasons)."""

    def __init__(self, filt):
        self.filt = filt

    def __call__(self, doc):
        return self.filt.filter(doc)


class _DatatroveFilter(Operator):
    filter_cls: Any

    def doc_fn(self):
        return DatatroveFilterFn(self.filter_cls(**self.params.model_dump()))


class GopherQualityParams(OperatorParams):
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] | None = None
    language: str = "eng"


class GopherQuality(_DatatroveFilter):
    name = "gopher_quality"
    version = "1"
    description = (
        "Gopher quality rules (datatrove GopherQualityFilter): word count bounds, mean word length, "
        "symbol/word ratio, bullet and ellipsis line ratios, alphabetic word share, stop-word presence."
    )
    Params = GopherQualityParams
    filter_cls = GopherQualityFilter


class GopherRepetitionParams(OperatorParams):
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.1)]
    language: str = "eng"


class GopherRepetition(_DatatroveFilter):
    name = "gopher_repetition"
    version = "1"
    description = (
        "Gopher repetition rules (datatrove GopherRepetitionFilter): duplicated lines/paragraphs and "
        "top / duplicated n-gram character fractions."
    )
    Params = GopherRepetitionParams
    filter_cls = GopherRepetitionFilter

    def doc_fn(self):
        kwargs = self.params.model_dump()
        kwargs["top_n_grams"] = tuple(map(tuple, kwargs["top_n_grams"]))
        kwargs["dup_n_grams"] = tuple(map(tuple, kwargs["dup_n_grams"]))
        return DatatroveFilterFn(GopherRepetitionFilter(**kwargs))


class C4QualityParams(OperatorParams):
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    language: str = "eng"


class C4Quality(_DatatroveFilter):
    name = "c4_quality"
    version = "1"
    description = (
        "C4 rules (datatrove C4QualityFilter): drops lines without terminal punctuation or with few words, "
        "javascript/policy lines, citations; rejects docs with lorem ipsum, curly brackets or too few sentences."
    )
    Params = C4QualityParams
    filter_cls = C4QualityFilter


class FineWebQualityParams(OperatorParams):
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    language: str = "eng"


class FineWebQuality(_DatatroveFilter):
    name = "fineweb_quality"
    version = "1"
    description = (
        "FineWeb rules (datatrove FineWebQualityFilter): share of lines ending in punctuation, share of short "
        "lines, duplicated-line characters, newline density."
    )
    Params = FineWebQualityParams
    filter_cls = FineWebQualityFilter
