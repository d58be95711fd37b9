"""datatrove's heuristic quality filters (Gopher, C4, FineWeb), every param exposed.

datatrove decides; when it rejects a doc, an `explain_*` function of ours measures the statistic
behind that reason, so the rejected row carries the value that failed and the bound it failed."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import get_filter_result
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.text import PUNCTUATION_SET, split_into_words
from pydantic import Field

from dagster_llmdata.operators.verdict import Reject
from dagster_llmdata.operators.base import DatatroveLanguage, DocFunction, Operator
from dagster_llmdata.config import OperatorParams

# (value, threshold) of a rejection; (None, None) when the reason is not a measured bound
Measure = tuple[float | None, float | None]
Explain = Callable[[Any, str, str], Measure]


class DatatroveFilterFn(DocFunction):
    """Asks a datatrove filter about each doc; a rejection comes back with its reason and
    `explain(filter, text, reason)`'s measure."""

    def __init__(self, filt, explain: Explain):
        super().__init__()
        self.filt, self.explain = filt, explain

    def __call__(self, doc: Document):
        judged_text = doc.text  # C4 rewrites the text of docs it keeps
        keep, reason = get_filter_result(self.filt.filter(doc))
        if keep:
            return True
        if not reason:
            return False
        return Reject(reason, *self.explain(self.filt, judged_text, reason))


class _DatatroveFilter(Operator):
    filter_cls: ClassVar[type]
    explain: ClassVar[Explain]

    def doc_fn(self):
        return DatatroveFilterFn(self.filter_cls(**self.params.model_dump()), type(self).explain)


def _share(items: Sequence, test: Callable[[Any], bool]) -> float:
    return sum(1 for item in items if test(item)) / len(items)


Share = Annotated[float, Field(ge=0, le=1)]


class GopherQualityParams(OperatorParams):
    min_doc_words: int | None = Field(50, ge=0, description="Reject docs with fewer words than this (words made only of punctuation not counted). None or 0 turns the check off.")
    max_doc_words: int | None = Field(100000, ge=0, description="Reject docs with more words than this (punctuation-only words not counted). None or 0 turns the check off.")
    min_avg_word_length: int | None = Field(3, ge=0, description="Reject docs whose mean word length, in characters, is below this. None or 0 turns the check off.")
    max_avg_word_length: int | None = Field(10, ge=0, description="Reject docs whose mean word length, in characters, is above this. None or 0 turns the check off.")
    max_symbol_word_ratio: float | None = Field(0.1, ge=0, description="Reject docs with more '#' characters per word, or more ellipses ('...' or '…') per word, than this. None or 0 turns the check off.")
    max_bullet_lines_ratio: Share | None = Field(0.9, description="Reject docs where more than this share of lines start with a bullet ('•' or '-'). None or 0 turns the check off.")
    max_ellipsis_lines_ratio: Share | None = Field(0.3, description="Reject docs where more than this share of lines end with an ellipsis. None or 0 turns the check off.")
    max_non_alpha_words_ratio: Share | None = Field(0.8, description="Despite datatrove's name for it: the minimum share of words holding at least one letter; docs below it are rejected. None or 0 turns the check off.")
    min_stop_words: int | None = Field(2, ge=0, description="Reject docs containing fewer distinct stop words (see stop_words) than this. None or 0 turns the check off.")
    stop_words: list[str] | None = Field(None, description="The stop words min_stop_words counts. None uses datatrove's English list: the, be, to, of, and, that, have, with.")
    language: DatatroveLanguage = "eng"


def explain_gopher_quality(f: GopherQualityFilter, text: str, reason: str) -> Measure:
    words = split_into_words(text, f.language)
    content_words = [w for w in words if not set(w) <= PUNCTUATION_SET]
    mean_length = sum(map(len, content_words)) / len(content_words) if content_words else float("nan")
    lines = text.splitlines()
    match reason:
        case "gopher_short_doc":
            return len(content_words), f.min_doc_words
        case "gopher_long_doc":
            return len(content_words), f.max_doc_words
        case "gopher_below_avg_threshold":
            return mean_length, f.min_avg_word_length
        case "gopher_above_avg_threshold":
            return mean_length, f.max_avg_word_length
        case "gopher_too_many_hashes":
            return text.count("#") / len(words), f.max_symbol_word_ratio
        case "gopher_too_many_ellipsis":
            return (text.count("...") + text.count("…")) / len(words), f.max_symbol_word_ratio
        case "gopher_too_many_bullets":
            return _share(lines, lambda line: line.lstrip().startswith(("•", "-"))), f.max_bullet_lines_ratio
        case "gopher_too_many_end_ellipsis":
            return _share(lines, lambda line: line.rstrip().endswith(("...", "…"))), f.max_ellipsis_lines_ratio
        case "gopher_below_alpha_threshold":
            return _share(words, lambda w: any(c.isalpha() for c in w)), f.max_non_alpha_words_ratio
        case "gopher_enough_stop_words":  # datatrove's name for "not enough stop words"
            return len(f.stop_words & set(words)), f.min_stop_words
    return None, None


class GopherQuality(_DatatroveFilter):
    name = "gopher_quality"
    version = "2"
    description = (
        "Gopher quality rules (datatrove GopherQualityFilter): word count bounds, mean word length, "
        "symbol/word ratio, bullet and ellipsis line ratios, alphabetic word share, stop-word presence."
    )
    Params = GopherQualityParams
    filter_cls = GopherQualityFilter
    explain = staticmethod(explain_gopher_quality)


NGramSize = Annotated[int, Field(ge=1)]


class GopherRepetitionParams(OperatorParams):
    dup_line_frac: Share | None = Field(0.3, description="Reject docs where more than this share of lines repeat an earlier line. None or 0 turns the check off.")
    dup_para_frac: Share | None = Field(0.3, description="Reject docs where more than this share of paragraphs (blocks between blank lines) repeat an earlier one. None or 0 turns the check off.")
    dup_line_char_frac: Share | None = Field(0.2, description="Reject docs where repeated lines hold more than this share of the characters. None or 0 turns the check off.")
    dup_para_char_frac: Share | None = Field(0.2, description="Reject docs where repeated paragraphs hold more than this share of the characters. None or 0 turns the check off.")
    top_n_grams: tuple[tuple[NGramSize, Share], ...] = Field(
        ((2, 0.2), (3, 0.18), (4, 0.16)),
        description="(n, share) pairs: reject docs where all occurrences of the most frequent word n-gram hold more than `share` of the characters.",
    )
    dup_n_grams: tuple[tuple[NGramSize, Share], ...] = Field(
        ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.1)),
        description="(n, share) pairs: reject docs where word n-grams that repeat an earlier one hold more than `share` of the characters.",
    )
    language: DatatroveLanguage = "eng"


def explain_gopher_repetition(f: GopherRepetitionFilter, text: str, reason: str) -> Measure:
    if reason in ("dup_para_frac", "dup_para_char_frac"):
        paragraphs = f.paragraph_exp.split(text.strip())
        n_repeated, repeated_chars = find_duplicates(paragraphs)
        if reason == "dup_para_frac":
            return n_repeated / len(paragraphs), f.dup_para_frac
        return repeated_chars / len(text), f.dup_para_char_frac
    if reason in ("dup_line_frac", "dup_line_char_frac"):
        lines = f._line_splitter.split(text)  # the filter's own splitter, so the lines are the ones it counted
        n_repeated, repeated_chars = find_duplicates(lines)
        if reason == "dup_line_frac":
            return n_repeated / len(lines), f.dup_line_frac
        return repeated_chars / len(text), f.dup_line_char_frac
    if m := re.fullmatch(r"top_(\d+)_gram", reason):
        n = int(m[1])
        top_chars = find_top_duplicate(get_n_grams(split_into_words(text, f.language), n))
        return top_chars / len(text), next(share for size, share in f.top_n_grams if size == n)
    if m := re.fullmatch(r"duplicated_(\d+)_n_grams", reason):
        n = int(m[1])
        repeated_chars = find_all_duplicate(split_into_words(text, f.language), n)
        return repeated_chars / len(text), next(share for size, share in f.dup_n_grams if size == n)
    return None, None  # "empty"


class GopherRepetition(_DatatroveFilter):
    name = "gopher_repetition"
    version = "2"
    description = (
        "Gopher repetition rules (datatrove GopherRepetitionFilter): duplicated lines/paragraphs and "
        "top / duplicated n-gram character fractions."
    )
    Params = GopherRepetitionParams
    filter_cls = GopherRepetitionFilter
    explain = staticmethod(explain_gopher_repetition)


class C4QualityParams(OperatorParams):
    split_paragraph: bool = Field(True, description="Judge the text line by line, as C4 did (True), or sentence by sentence (False).")
    remove_citations: bool = Field(True, description="Delete Wikipedia-style citation marks such as [1] and [edit] from the text.")
    filter_no_terminal_punct: bool = Field(True, description="Drop lines that do not end in . ? ! \" or ', and lines ending in '...'.")
    min_num_sentences: int = Field(5, ge=-1, description="Reject docs with fewer sentences than this in the lines they keep; -1 turns the check off.")
    min_words_per_line: int = Field(3, ge=-1, description="Drop lines with fewer whitespace-separated words than this; -1 turns the check off.")
    max_word_length: int = Field(1000, ge=-1, description="Drop lines holding a word longer than this many characters; -1 turns the check off.")
    filter_lorem_ipsum: bool = Field(True, description="Reject docs with a kept line containing 'lorem ipsum'.")
    filter_javascript: bool = Field(True, description="Drop lines mentioning 'javascript'.")
    filter_curly_bracket: bool = Field(True, description="Reject docs with a kept line containing '{' (code, templates).")
    filter_policy: bool = Field(True, description="Drop lines about cookies, terms of use or privacy policies.")
    language: DatatroveLanguage = "eng"


def c4_sentence_count(f: C4QualityFilter, text: str) -> int:
    """The sentences C4 counted in a doc it rejected as too_few_sentences: the largest minimum at
    which the filter still keeps the doc, found with the filter itself as the judge (a binary
    search below the minimum that rejected it), so the count is exactly the one it compared."""
    probe = copy.deepcopy(f)
    low, high = 0, f.min_num_sentences - 1
    while low < high:
        probe.min_num_sentences = (low + high + 1) // 2
        if probe.filter(Document(text=text, id="")) is True:
            low = probe.min_num_sentences
        else:
            high = probe.min_num_sentences - 1
    return low


def explain_c4_quality(f: C4QualityFilter, text: str, reason: str) -> Measure:
    if reason == "too_few_sentences":
        return c4_sentence_count(f, text), f.min_num_sentences
    return None, None  # lorem_ipsum, curly_bracket: something present, not a measure over a bound


class C4Quality(_DatatroveFilter):
    name = "c4_quality"
    version = "2"
    description = (
        "C4 rules (datatrove C4QualityFilter): drops lines without terminal punctuation or with few words, "
        "javascript/policy lines, citations; rejects docs with lorem ipsum, curly brackets or too few sentences."
    )
    Params = C4QualityParams
    filter_cls = C4QualityFilter
    explain = staticmethod(explain_c4_quality)


class FineWebQualityParams(OperatorParams):
    line_punct_thr: Share = Field(0.12, description="Reject docs where fewer than this share of non-empty lines end in a stop character (see stop_chars).")
    line_punct_exclude_zero: bool = Field(False, description="Exempt docs where no line at all ends in a stop character from line_punct_thr.")
    stop_chars: tuple[str, ...] | None = Field(None, min_length=1, description="Line endings that count as terminal punctuation for line_punct_thr. None uses datatrove's terminal punctuation marks of many scripts.")
    short_line_thr: Share = Field(0.67, description="Reject docs where more than this share of non-empty lines are short (see short_line_length).")
    short_line_length: int = Field(30, ge=0, description="A line of at most this many characters counts as short.")
    char_duplicates_ratio: Share = Field(0.01, description="Reject docs where non-empty lines repeating an earlier line hold more than this share of the characters (newlines not counted).")
    new_line_ratio: float = Field(0.3, ge=0, description="Reject docs with more newlines per word than this (list-like pages).")
    language: DatatroveLanguage = "eng"


def explain_fineweb_quality(f: FineWebQualityFilter, text: str, reason: str) -> Measure:
    lines = [line for line in text.split("\n") if line.strip()]
    match reason:
        case "line_punct_ratio":
            return _share(lines, lambda line: line.endswith(f.stop_chars)), f.line_punct_thr
        case "short_line_ratio":
            return _share(lines, lambda line: len(line) <= f.short_line_length), f.short_line_threshold
        case "char_dup_ratio":
            return find_duplicates(lines)[1] / len(text.replace("\n", "")), f.char_duplicates_ratio
        case "list_ratio":
            return text.count("\n") / len(split_into_words(text, f.language)), f.new_line_ratio
    return None, None  # "empty"


class FineWebQuality(_DatatroveFilter):
    name = "fineweb_quality"
    version = "2"
    description = (
        "FineWeb rules (datatrove FineWebQualityFilter): share of lines ending in punctuation, share of short "
        "lines, duplicated-line characters, newline density."
    )
    Params = FineWebQualityParams
    filter_cls = FineWebQualityFilter
    explain = staticmethod(explain_fineweb_quality)
