"""Every error the library raises on purpose, under one base class: a caller catches
`LlmdataError` to tell "the library refused, with a message for a person" from a bug."""

from __future__ import annotations


class LlmdataError(Exception):
    """Base of every error dagster-llmdata raises for a reason a user can act on."""


class StageFailed(RuntimeError):
    """A stage cannot produce its dataset for a reason the user must act on (not bad input, which
    is quarantined): the message says what and why, without a stack trace."""
