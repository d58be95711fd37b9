"""What a document function or a batch function may answer about a document: the written protocol.

Both get datatrove `Document`s (`text`, `id`, every other column in `metadata`) and may change
`doc.text` / `doc.metadata` in place (a column the operator `produces` is set in `metadata`).
A document function (`Operator.doc_fn()`, a `DocFunction`) gets one document and returns one
verdict; a batch function (`Operator.batch_fn()`, a `BatchFunction`) gets a list of up to
`batch_size` documents and returns a list of verdicts, one per document, in the same order.
A verdict is one of:

- `True` or `None`: keep the document (with whatever it changed);
- `False`: reject it; the reason is the operator's name;
- `Reject(reason, value=..., threshold=...)`: reject it with a reason and, when a measured value
  failed a bound, that value and the bound, so a user can tune thresholds from the rejected rows;
- `(False, "reason")`: datatrove's own filter answer, accepted as `Reject("reason")`;
- `Quarantine(reason, detail=...)`: the operator could not decide (a judge's server failed, the
  answer broke its schema): the document is set aside with the reason, never scored by default.

Raising an exception quarantines the document (a batch function: every document of the batch)
with reason `error:<ExceptionType>`; so does a batch function that returns the wrong number of
verdicts, or a verdict of another type. Nothing stops the stage. The routing, writers and ledger
live in `operators.routing` (`RoutedStep`, `DropRouter`), never in an operator.

Counts an operator reports in its metadata go in the function's `counters` (a Counter), summed
over tasks by datatrove's stats."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reject:
    """Drop this document: `reason` is a short snake_case word; `value` is what was measured and
    `threshold` the bound it failed (both optional, numbers)."""

    reason: str
    value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Set this document aside undecided: `reason` is a short snake_case word, `detail` says more
    (an error message, the offending answer) and goes into the row's `meta.error`."""

    reason: str
    detail: str | None = None


Verdict = bool | None | Reject | Quarantine | tuple[bool, str]


def route_of(verdict: Verdict, default_reason: str) -> Reject | Quarantine | None:
    """None when the document is kept, else the Reject or Quarantine that says why."""
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return Reject(default_reason)
    if isinstance(verdict, (Reject, Quarantine)):
        return verdict
    if isinstance(verdict, tuple) and len(verdict) == 2:
        keep, reason = verdict
        return None if keep else Reject(reason or default_reason)
    return Quarantine("error:bad_verdict", f"the operator answered {type(verdict).__name__}: {verdict!r:.200}")
