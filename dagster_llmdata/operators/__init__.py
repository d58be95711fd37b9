"""Layer 3, operators: the contract (base classes, verdicts, the drop router), one module per
operator, and the registry every pipeline spec (or the agent) names them from."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from dagster_llmdata.operators.base import BatchFunction, CheckOutcome, DocFunction, Operator, has_batch_fn, is_streaming
from dagster_llmdata.config import OperatorParams, RuntimeSettings
from dagster_llmdata.errors import StageFailed
from dagster_llmdata.operators.decontaminate import Decontaminate
from dagster_llmdata.operators.dedup import ExactDedup, MinhashDedup
from dagster_llmdata.operators.export import ExportShards
from dagster_llmdata.operators.ingest import Ingest
from dagster_llmdata.operators.language_id import LanguageId
from dagster_llmdata.operators.lance_table import LanceTable
from dagster_llmdata.operators.distilled_judge import DistilledJudge
from dagster_llmdata.operators.llm_judge import LlmJudge
from dagster_llmdata.operators.select import Select
from dagster_llmdata.operators.semantic_dedup import SemanticDedup
from dagster_llmdata.operators.source import SourceOperator, SourceRead
from dagster_llmdata.operators.sentence_dedup import SentenceDedup
from dagster_llmdata.operators.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from dagster_llmdata.operators.text_ops import ExtractHtml, Normalize, PiiRedact

REGISTRY: dict[str, type[Operator]] = {}


def register_operator(cls: type[Operator]) -> type[Operator]:
    """Add an operator class to the registry (usable as a decorator for user plugins)."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no `name`")
    known = REGISTRY.get(cls.name)
    # the same class defined again (a module re-imported on reload) replaces itself; another one clashes
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"operator name {cls.name!r} is registered twice: by {known.__module__}.{known.__qualname__} "
                         f"and by {cls.__module__}.{cls.__qualname__}; give one of them another `name`")
    REGISTRY[cls.name] = cls
    return cls


def get_operator(name: str) -> type[Operator]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}{did_you_mean(name, REGISTRY)}; known: {', '.join(sorted(REGISTRY))}") from None


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_params_error(op_cls: type[Operator], exc: ValidationError) -> str:
    """A params validation error in one line per problem, naming the param (and the closest known
    name for a typo)."""
    known = op_cls.Params.model_fields
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown param {where!r} for {op_cls.name}{did_you_mean(str(err['loc'][0]), known)}; "
                         f"known: {', '.join(known)}")
        else:
            lines.append(f"param {where!r} of {op_cls.name}: {err['msg']}")
    return "\n".join(lines)


for _cls in (
    Ingest, ExtractHtml, Normalize, LanguageId, GopherQuality, GopherRepetition, C4Quality, FineWebQuality,
    ExactDedup, MinhashDedup, SentenceDedup, Decontaminate, PiiRedact, ExportShards, LlmJudge, DistilledJudge, Select,
    SemanticDedup, LanceTable,
):
    register_operator(_cls)

__all__ = [
    "BatchFunction", "CheckOutcome", "DocFunction", "StageFailed", "Operator", "OperatorParams", "REGISTRY", "RuntimeSettings", "SourceOperator", "SourceRead", "register_operator",
    "get_operator", "has_batch_fn", "is_streaming",
    "did_you_mean", "describe_params_error",
]
