"""What a per-document function may answer about one document: the written protocol.

A doc function gets a datatrove `Document` (its `text`, its `id`, every other column in
`metadata`), may change `doc.text` / `doc.metadata` in place, and returns one of:

- `True` or `None`: keep the document (with whatever it changed);
- `False`: reject it; the reason is the operator's name;
- `Reject(reason, value=..., threshold=...)`: reject it with a reason and, when a measured value
  failed a bound, that value and the bound, so a user can tune thresholds from the rejected rows;
- `(False, "reason")`: datatrove's own filter answer, accepted as `Reject("reason")`.

Raising an exception quarantines that one document with reason `error:<ExceptionType>`; it
never stops the stage. The routing, writers and ledger live in `io.docsteps.RoutedDocStep`,
never in an operator.

Counts an operator wants in its metadata go in a `counters` Counter on the doc function
(summed over tasks by datatrove's stats)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reject:
    """Drop this document: `reason` is a short snake_case word; `value` is what was measured and
    `threshold` the bound it failed (both optional, numbers)."""

    reason: str
    value: float | None = None
    threshold: float | None = None


Verdict = bool | None | Reject | tuple[bool, str]


def as_reject(verdict: Verdict, default_reason: str) -> Reject | None:
    """None when the document is kept, else the Reject that says why."""
    if verdict is None or verdict is True:
        return None
    if verdict is False:
        return Reject(default_reason)
    if isinstance(verdict, Reject):
        return verdict
    if isinstance(verdict, tuple):
        keep, reason = verdict
        return None if keep else Reject(reason or default_reason)
    raise TypeError(f"a doc function returned {type(verdict).__name__}; expected bool, None, Reject or (bool, reason)")
