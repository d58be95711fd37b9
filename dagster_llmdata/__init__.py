"""dagster-llmdata: LLM training data as a graph of Dagster software-defined assets."""

from __future__ import annotations

from dagster_llmdata.agent.agent import ProposalResult, propose
from dagster_llmdata.spec.agent import AgentConfig
from dagster_llmdata.spec.intent import Intent, load_intent
from dagster_llmdata.defs.components import PipelineComponent
from dagster_llmdata.engine.datasets import dataset, dataset_files
from dagster_llmdata.engine.execute import StageOutcome, run_stage
from dagster_llmdata.defs.assets import build_pipeline_assets, build_pipeline_job
from dagster_llmdata.defs.translator import LEDGER_CHECK, StageTranslator, partitions_def_for
from dagster_llmdata.io.ledger import Ledger
from dagster_llmdata.definitions import load_project
from dagster_llmdata.mixture.feedback import FeedbackStore, report
from dagster_llmdata.mixture.manifest import Manifest, read_manifest
from dagster_llmdata.mixture.reader import MixtureDataset
from dagster_llmdata.spec.mixture import MixtureSpec
from dagster_llmdata.operators import REGISTRY, Operator, get_operator, register_operator
from dagster_llmdata.config import OperatorParams
from dagster_llmdata.defs.removal import Removal, remove_partition
from dagster_llmdata.demo.sample_corpus import build_sample_corpus
from dagster_llmdata.defs.landing_sensor import LandingSensorSpec, build_landing_sensor
from dagster_llmdata.engine.standalone import apply_operator
from dagster_llmdata.spec.pipeline import PipelineSpec, SourceSpec, SpecError, StageSpec, load_pipeline_spec
from dagster_llmdata.config import ExecutorConfig
from dagster_llmdata.io.stage_run import StageRun
from dagster_llmdata.store import Hit, SampleStore, StoreError, search_samples
from dagster_llmdata.mixture.reproduce import ReproduceError, reproduce

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
    "StageTranslator",
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
