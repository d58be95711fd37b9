"""What an operator is: typed params, the columns it needs and adds, a description, and how it
runs over one dataset. Operators know nothing about Dagster."""

from __future__ import annotations

import hashlib
import json
from abc import ABC
from collections import Counter
from typing import Annotated, Any, ClassVar

import pyarrow as pa
from datatrove.data import Document
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..io.docsteps import RoutedDocStep
from ..verdict import Verdict
from ..stage_run import StageRun


class OperatorParams(BaseModel):
    """Base for operator params: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _known_to_datatrove(language: str) -> str:
    from datatrove.utils.word_tokenizers import load_tokenizer_assignments

    if language not in load_tokenizer_assignments():
        raise ValueError(f"datatrove has no word tokenizer for language {language!r} (try 'eng', 'deu', 'fra', ...)")
    return language


DatatroveLanguage = Annotated[
    str,
    AfterValidator(_known_to_datatrove),
    Field(description="Language of the text, for datatrove's word and sentence splitting (ISO 639-3 code such as eng, deu, fra, optionally with its script: cmn_Hani)."),
]


class DocFunction:
    """A per-document function (what an operator's `doc_fn()` returns).

    `__call__(doc)` looks at one datatrove Document, may change it in place, and returns a
    verdict (see `dagster_llmdata.verdict`). `counters` holds counts the operator reports in its
    metadata; they are added to the step's datatrove stats when a task ends, so they are summed
    over tasks. A function that needs a resource for the whole run (a model, a sandbox process)
    opens it in `__enter__` and releases it in `__exit__`; the routing step enters it around
    a task's documents. Holding resources only while entered keeps the function picklable, so
    the executor can copy it to each task."""

    def __init__(self) -> None:
        self.counters: Counter = Counter()

    def __call__(self, doc: Document) -> Verdict:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


class Operator(ABC):
    """One registered processing step. Subclasses set the class attributes and either
    `doc_fn` (a per-document keep/reject/modify function) or `run` (whole-dataset work)."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str]
    Params: ClassVar[type[OperatorParams]] = OperatorParams
    requires: ClassVar[tuple[str, ...]] = ("id", "text")
    produces: ClassVar[dict[str, pa.DataType]] = {}
    kinds: ClassVar[tuple[str, ...]] = ("datatrove",)

    def __init__(self, params: OperatorParams | dict[str, Any] | None = None):
        self.params = params if isinstance(params, self.Params) else self.Params.model_validate(params or {})

    @property
    def code_version(self) -> str:
        """Operator version + params: a change in either marks the stage stale in Dagster."""
        blob = json.dumps(self.params.model_dump(mode="json"), sort_keys=True)
        return f"{self.name}-v{self.version}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def routed_step(self, run: StageRun, schema: pa.Schema) -> RoutedDocStep:
        return RoutedDocStep(run.stage, self.name, self.doc_fn(), run.rejected_writer(schema), run.quarantine_writer(schema))

    def produced_columns(self) -> dict[str, pa.DataType]:
        return dict(self.produces)

    def doc_fn(self) -> DocFunction:
        raise NotImplementedError(f"operator {self.name} has neither doc_fn nor run")

    def run(self, run: StageRun) -> dict[str, Any]:
        """Process `run.input_files` into the kept / rejected / quarantine folders.
        Returns extra metadata (per-kind counts, ...) for the materialisation."""
        out_schema = run.output_schema(self.produced_columns())
        stats = run.execute([run.reader(), self.routed_step(run, out_schema), run.kept_writer(out_schema)])
        return self.metadata_from_stats(stats)

    def metadata_from_stats(self, stats: dict[str, dict[str, float]]) -> dict[str, Any]:
        return {}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """What the agent and the CLI read about this operator."""
        return {
            "name": cls.name,
            "version": cls.version,
            "description": cls.description,
            "requires": list(cls.requires),
            "produces": {k: str(v) for k, v in cls.produces.items()},
            "params": cls.Params.model_json_schema(),
        }


def is_per_document(op_cls: type[Operator]) -> bool:
    """A doc_fn operator (no whole-dataset `run`): it can run fused in one datatrove pass with its neighbours."""
    return op_cls.run is Operator.run
