"""dagster-llmdata: LLM training data as a graph of Dagster software-defined assets.

The public API is the handful of names in `__all__`; each is imported on first use, so
`import dagster_llmdata` stays cheap and loads no feature (nor Dagster) it does not need. Names
that earlier releases exported from here still resolve (`_COMPAT`), from the module that owns them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_PUBLIC = {
    "load_project": "dagster_llmdata.definitions",
    "PipelineSpec": "dagster_llmdata.spec.pipeline",
    "Operator": "dagster_llmdata.operators.base",
    "OperatorParams": "dagster_llmdata.config",
    "register_operator": "dagster_llmdata.operators",
    "apply_operator": "dagster_llmdata.engine.standalone",
    "dataset": "dagster_llmdata.engine.datasets",
    "MixtureDataset": "dagster_llmdata.mixture.reader",
    "report": "dagster_llmdata.mixture.feedback",
    "search_samples": "dagster_llmdata.store.search",
    "propose": "dagster_llmdata.agent.agent",
    "LlmdataError": "dagster_llmdata.errors",
}
# exported by earlier releases; kept importable from here for existing code
_COMPAT = {
    "AgentConfig": "dagster_llmdata.spec.agent",
    "Intent": "dagster_llmdata.spec.intent",
    "load_intent": "dagster_llmdata.spec.intent",
    "ProposalResult": "dagster_llmdata.agent.result",
    "PipelineComponent": "dagster_llmdata.components",
    "MixtureComponent": "dagster_llmdata.components",
    "AgentComponent": "dagster_llmdata.components",
    "dataset_files": "dagster_llmdata.engine.datasets",
    "StageOutcome": "dagster_llmdata.engine.execute",
    "run_stage": "dagster_llmdata.engine.execute",
    "LEDGER_CHECK": "dagster_llmdata.defs.translator",
    "build_pipeline_assets": "dagster_llmdata.defs.assets",
    "build_pipeline_job": "dagster_llmdata.defs.assets",
    "partitions_def_for": "dagster_llmdata.defs.translator",
    "StageTranslator": "dagster_llmdata.defs.translator",
    "Ledger": "dagster_llmdata.io.ledger",
    "FeedbackStore": "dagster_llmdata.mixture.feedback",
    "Manifest": "dagster_llmdata.mixture.manifest",
    "read_manifest": "dagster_llmdata.mixture.manifest",
    "MixtureSpec": "dagster_llmdata.spec.mixture",
    "REGISTRY": "dagster_llmdata.operators",
    "get_operator": "dagster_llmdata.operators",
    "Removal": "dagster_llmdata.defs.removal",
    "remove_partition": "dagster_llmdata.defs.removal",
    "build_sample_corpus": "dagster_llmdata.demo.sample_corpus",
    "LandingSensorSpec": "dagster_llmdata.spec.triggers",
    "build_landing_sensor": "dagster_llmdata.defs.landing_sensor",
    "SourceSpec": "dagster_llmdata.spec.pipeline",
    "StageSpec": "dagster_llmdata.spec.pipeline",
    "SpecError": "dagster_llmdata.errors",
    "load_pipeline_spec": "dagster_llmdata.spec.pipeline",
    "ExecutorConfig": "dagster_llmdata.config",
    "StageRun": "dagster_llmdata.io.stage_run",
    "Hit": "dagster_llmdata.store.search",
    "SampleStore": "dagster_llmdata.store.lance_store",
    "StoreError": "dagster_llmdata.errors",
    "reproduce": "dagster_llmdata.mixture.reproduce",
    "ReproduceError": "dagster_llmdata.errors",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use
    from dagster_llmdata.agent.agent import propose
    from dagster_llmdata.config import OperatorParams
    from dagster_llmdata.definitions import load_project
    from dagster_llmdata.engine.datasets import dataset
    from dagster_llmdata.engine.standalone import apply_operator
    from dagster_llmdata.errors import LlmdataError
    from dagster_llmdata.mixture.feedback import report
    from dagster_llmdata.mixture.reader import MixtureDataset
    from dagster_llmdata.operators import register_operator
    from dagster_llmdata.operators.base import Operator
    from dagster_llmdata.spec.pipeline import PipelineSpec
    from dagster_llmdata.store.search import search_samples


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name) or _COMPAT.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_llmdata' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC, *_COMPAT])
