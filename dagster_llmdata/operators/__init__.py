"""The operator registry: every processing step a pipeline spec (or the agent) can name."""

from __future__ import annotations

from .base import Operator, OperatorParams, is_per_document
from .dedup import ExactDedup, MinhashDedup
from .export import ExportShards
from .ingest import Ingest
from .language_id import LanguageId
from .quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from .text_ops import ExtractHtml, Normalize, PiiRedact

REGISTRY: dict[str, type[Operator]] = {}


def register_operator(cls: type[Operator]) -> type[Operator]:
    """Add an operator class to the registry (usable as a decorator for user plugins)."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no `name`")
    REGISTRY[cls.name] = cls
    return cls


def get_operator(name: str) -> type[Operator]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


for _cls in (
    Ingest, ExtractHtml, Normalize, LanguageId, GopherQuality, GopherRepetition, C4Quality, FineWebQuality,
    ExactDedup, MinhashDedup, PiiRedact, ExportShards,
):
    register_operator(_cls)

__all__ = ["Operator", "OperatorParams", "REGISTRY", "register_operator", "get_operator", "is_per_document"]
