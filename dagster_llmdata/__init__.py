"""dagster-llmdata: LLM training data as a graph of Dagster software-defined assets."""

from __future__ import annotations

from .agent.agent import ProposalResult, propose
from .agent.config import AgentConfig
from .agent.intent import Intent, load_intent
from .component import PipelineComponent
from .datasets import dataset, dataset_files
from .execute import StageOutcome, run_stage
from .factory import (
    LEDGER_CHECK,
    build_pipeline_assets,
    build_pipeline_job,
    partitions_def_for,
)
from .ledger import Ledger
from .loader import load_project
from .mixture.feedback import FeedbackStore, report
from .mixture.manifest import Manifest, read_manifest
from .mixture.reader import MixtureDataset
from .mixture.spec import MixtureSpec
from .operators import (
    REGISTRY,
    Operator,
    OperatorParams,
    get_operator,
    register_operator,
)
from .removal import Removal, remove_partition
from .sample_corpus import build_sample_corpus
from .sensors import LandingSensorSpec, build_landing_sensor
from .standalone import apply_operator
from .spec import PipelineSpec, SourceSpec, SpecError, StageSpec, load_pipeline_spec
from .stage_run import ExecutorConfig, StageRun
from .store import Hit, SampleStore, StoreError, search_samples
from .store.reproduce import ReproduceError, reproduce

__all__ = [
    "AgentConfig",
    "Intent",
    "ProposalResult",
    "load_intent",
    "propose",
    "ExecutorConfig",
    "Hit",
    "FeedbackStore",
    "LEDGER_CHECK",
    "LandingSensorSpec",
    "Ledger",
    "Manifest",
    "MixtureDataset",
    "MixtureSpec",
    "Operator",
    "OperatorParams",
    "PipelineComponent",
    "PipelineSpec",
    "REGISTRY",
    "SourceSpec",
    "SpecError",
    "StageOutcome",
    "StageRun",
    "StageSpec",
    "apply_operator",
    "build_landing_sensor",
    "build_pipeline_assets",
    "build_pipeline_job",
    "build_sample_corpus",
    "dataset",
    "dataset_files",
    "get_operator",
    "load_pipeline_spec",
    "load_project",
    "partitions_def_for",
    "read_manifest",
    "register_operator",
    "remove_partition",
    "Removal",
    "reproduce",
    "ReproduceError",
    "SampleStore",
    "search_samples",
    "StoreError",
    "report",
    "run_stage",
]
