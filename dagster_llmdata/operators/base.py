"""What an operator is: typed params, the columns it needs and adds, a description, and how it
runs over one dataset. Operators know nothing about Dagster."""

from __future__ import annotations

import hashlib
import json
from abc import ABC
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import pyarrow as pa
from datatrove.data import Document
from pydantic import AfterValidator, Field

from dagster_llmdata.operators.routing import DropRouter, RoutedStep
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.operators.verdict import Verdict
from dagster_llmdata.config import OperatorParams, RuntimeSettings




@dataclass(frozen=True)
class CheckOutcome:
    """The result of one of an operator's own checks (`Operator.checks`): a warning, not a gate."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)






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
    verdict (see `dagster_llmdata.operators.verdict`). `counters` holds counts the operator reports in its
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


class BatchFunction(DocFunction):
    """A per-batch function (what an operator's `batch_fn()` returns): `__call__(docs)` gets a list
    of up to `batch_size` documents and returns one verdict per document, in order (see
    `dagster_llmdata.operators.verdict`). For work that pays per call: a model, a server, an embedder.
    Lifecycle and counters as for `DocFunction`."""

    def __call__(self, docs: list[Document]) -> list[Verdict]:  # type: ignore[override]
        raise NotImplementedError


class Operator(ABC):
    """One registered processing step. Subclasses set the class attributes and one of three
    shapes: `doc_fn` (one document at a time), `batch_fn` (a batch at a time; its Params have a
    `batch_size`), both streaming and fusable with their neighbours in one datatrove pass; or
    `run` (whole-dataset work such as dedup or export)."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str]
    Params: ClassVar[type[OperatorParams]] = OperatorParams
    requires: ClassVar[tuple[str, ...]] = ("id", "text")
    produces: ClassVar[dict[str, pa.DataType]] = {}
    kinds: ClassVar[tuple[str, ...]] = ("datatrove",)
    # params that change how the work is done, not its result (left out of the code version)
    non_data_params: ClassVar[frozenset[str]] = frozenset({"batch_size"})
    # runtime settings (not data) and the name they are supplied under (a Dagster resource key)
    Runtime: ClassVar[type[RuntimeSettings] | None] = None
    runtime_key: ClassVar[str | None] = None
    # the operator's own non-blocking checks, name -> what they check (see `evaluate_checks`)
    checks: ClassVar[dict[str, str]] = {}
    # runs of its stage over different partitions never overlap (a dedup that reads what the
    # partitions before it kept): materialisation holds a stage-wide lock around them
    serial: ClassVar[bool] = False

    def __init__(
        self,
        params: OperatorParams | dict[str, Any] | None = None,
        runtime: RuntimeSettings | dict[str, Any] | None = None,
    ):
        self.params = params if isinstance(params, self.Params) else self.Params.model_validate(params or {})
        if self.Runtime is None:
            if runtime:
                raise ValueError(f"operator {self.name} takes no runtime settings")
            self.runtime = None
        else:
            self.runtime = runtime if isinstance(runtime, self.Runtime) else self.Runtime.model_validate(runtime or {})

    @property
    def code_version(self) -> str:
        """Operator version + params: a change in either marks the stage stale in Dagster."""
        data = self.params.model_dump(mode="json", exclude=set(self.non_data_params))
        blob = json.dumps(data, sort_keys=True)
        return f"{self.name}-v{self.version}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def routed_step(self, run: StageRun, schema: pa.Schema, fn: DocFunction | None = None) -> RoutedStep:
        """The routing step around this operator's function (or `fn`, one built at run time:
        a batch function is handed `batch_size` documents at a time)."""
        if fn is None:
            fn = self.batch_fn() if has_batch_fn(type(self)) else self.doc_fn()
        batch_size = self.params.batch_size if isinstance(fn, BatchFunction) else None
        return RoutedStep(self.name, fn, self.drops(run, schema), batch_size=batch_size)

    def drops(self, run: StageRun, schema: pa.Schema) -> DropRouter:
        """Where this operator's rejected and quarantined rows go (kept rows have `schema`): the
        only way an operator writes them, so every drop carries the same columns."""
        return DropRouter(run, schema)

    def compared_state(self, run: StageRun) -> str:
        """A digest of what the stage reads besides its input files (the partitions a dedup
        compares against); it goes into the fingerprint, so a change there re-runs the stage."""
        return ""

    def forget_partition(self, run: StageRun) -> dict[str, Any] | None:
        """A partition is being removed: drop what the stage keeps about it outside the partition's
        own folders (a dedup index, a LanceDB table's rows, a score cache's answers). Called while its
        folders (and its input's) still exist, so it may read them; returns what it dropped, for the
        removal's report, or None."""

    def produced_columns(self) -> dict[str, pa.DataType]:
        return dict(self.produces)

    def doc_fn(self) -> DocFunction:
        raise NotImplementedError(f"operator {self.name} has no doc_fn, batch_fn or run")

    def batch_fn(self) -> BatchFunction:
        raise NotImplementedError(f"operator {self.name} has no batch_fn")

    def run(self, run: StageRun) -> dict[str, Any]:
        """Process `run.input_files` into the kept / rejected / quarantine folders.
        Returns extra metadata (per-kind counts, ...) for the materialisation."""
        out_schema = run.output_schema(self.produced_columns())
        stats = run.execute([run.reader(), self.routed_step(run, out_schema), run.kept_writer(out_schema)])
        return self.metadata_from_stats(stats)

    def metadata_from_stats(self, stats: dict[str, dict[str, float]]) -> dict[str, Any]:
        return {}

    def evaluate_checks(self, metadata: dict[str, Any]) -> list[CheckOutcome]:
        """One outcome per name in `checks`, judged from the materialisation's metadata."""
        return []

    def dataset_metadata(self, run: StageRun) -> dict[str, Any]:
        """Metadata read from the finished datasets (a score histogram, examples); values may be
        plain, dicts/lists, or `dagster_llmdata.operators.metadata` Markdown / Table."""
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
            "shape": "dataset" if not is_streaming(cls) else "batch" if has_batch_fn(cls) else "document",
            "params": cls.Params.model_json_schema(),
            "runtime": cls.Runtime.model_json_schema() if cls.Runtime else None,
        }


def has_batch_fn(op_cls: type[Operator]) -> bool:
    return op_cls.batch_fn is not Operator.batch_fn


def is_streaming(op_cls: type[Operator]) -> bool:
    """A doc_fn or batch_fn operator (no whole-dataset `run`): it streams documents, so it runs
    fused in one datatrove pass with its streaming neighbours."""
    return op_cls.run is Operator.run
