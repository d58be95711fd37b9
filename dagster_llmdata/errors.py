"""Every error the library raises on purpose, under one base class: a caller catches
`LlmdataError` to tell "the library refused, with a message for a person" from a bug. Each class
keeps its builtin base too (ValueError for bad input, RuntimeError for a state of the world), so
code that catches those still works. Defined here, at the bottom of the layers, so any module
can raise or catch any of them without importing the module that usually raises it."""

from __future__ import annotations


class LlmdataError(Exception):
    """Base of every error dagster-llmdata raises for a reason a user can act on."""


# ---- specs and project files ------------------------------------------------------------------

class SpecError(LlmdataError, ValueError):
    """A spec that cannot be used; the message says where and why."""


class IntentError(LlmdataError, ValueError):
    """An intent file that cannot be used; the message names the file (and line)."""


# ---- stages and partitions --------------------------------------------------------------------

class StageFailed(LlmdataError, RuntimeError):
    """A stage cannot produce its dataset for a reason the user must act on (not bad input, which
    is quarantined): the message says what and why, without a stack trace."""


class RayRunIncomplete(StageFailed):
    """Some of the stage's tasks did not complete on Ray, even after datatrove's resubmissions."""


class PartitionInputMissing(LlmdataError, RuntimeError):
    """The partition's raw file or upstream dataset is not there."""


class PartitionLocked(LlmdataError, RuntimeError):
    """Another process kept materialising the same stages of the partition past the lock timeout."""


# ---- judges -----------------------------------------------------------------------------------

class RubricError(LlmdataError, ValueError):
    """A rubric that cannot be used: unknown name, unreadable or invalid file."""


class CpuModelError(LlmdataError, RuntimeError):
    """The model cannot be found or loaded (a setup problem, not one document's trouble)."""


class JudgeUnavailable(StageFailed):
    """The judge's server did not come up (answer GET /models) within the wait allowed."""


# ---- sample store -----------------------------------------------------------------------------

class StoreError(LlmdataError, RuntimeError):
    """A problem with the sample store the user must act on; the message says what."""


class EmbeddingModelMissing(LlmdataError, RuntimeError):
    """The package that carries an embedding model is not installed (or its file is gone)."""


# ---- mixtures and training feedback -----------------------------------------------------------

class MixtureError(LlmdataError, ValueError):
    """Inputs an algorithm cannot use; the message says which and why."""


class ManifestError(LlmdataError, ValueError):
    """A manifest that cannot be read or no longer matches its files."""


class ReproduceError(LlmdataError, RuntimeError):
    """The manifest cannot be reproduced here; the message says which input moved or is gone."""


class FeedbackError(LlmdataError, ValueError):
    """A report that cannot be accepted at all (bad run id or step)."""


class FeedbackStoreLocked(LlmdataError, RuntimeError):
    """Another writer held the store past the timeout; nothing of this report was written."""


class EventFileError(LlmdataError, ValueError):
    """An event file that is corrupt (a CRC mismatch) at a given offset."""


class RepetitionWarning(LlmdataError, UserWarning):
    """The token budget is larger than a domain's data: its documents repeat. A warning, not an
    error; under LlmdataError too, so `-W error` turns it into one a caller catches like the rest."""


# ---- agent ------------------------------------------------------------------------------------

class PlannerError(LlmdataError, RuntimeError):
    """The planner produced no spec at all (a server down, an answer that is not JSON); recorded
    as a failed round."""


# ---- command line -----------------------------------------------------------------------------

class CommandError(LlmdataError, RuntimeError):
    """A user-facing failure: printed as one line, exit code 2."""


class InstanceUnavailable(LlmdataError, RuntimeError):
    """The instance's storage cannot be reached; the message names the connection."""
