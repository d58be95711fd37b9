"""`mixture:` specs in assets/: a mixture over the datasets of pipelines (validated like a
pipeline spec, with errors naming file:line:field)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dagster_llmdata.spec.pipeline import NAME
from dagster_llmdata.spec.yaml_loader import load_model


ALGORITHMS = ("static", "temperature", "doremi", "odm", "regmix", "reweight")


class MixtureInputSpec(BaseModel):
    """One dataset the mixture draws from."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["parquet", "lance"] = Field("parquet", description=(
        "Input kind: `parquet`, a stage's Parquet dataset (files pinned by sha256); `lance`, the LanceDB table a "
        "`lance_table` stage writes, pinned at its current version (tagged, so it survives cleanup and later writes)."))
    dataset: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*/[A-Za-z_][A-Za-z0-9_]*$", description="`<pipeline>/<stage>`.")
    domain_column: str = Field("domain", min_length=1, description="Column naming each document's domain.")
    tokens_column: str | None = Field(
        "n_tokens", description="Column with each document's token count (export_shards writes `n_tokens`); where it "
        "is missing, tokens are estimated as UTF-8 bytes of `text` / 4.")


class AlgorithmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal[ALGORITHMS] = Field("static", description="static | temperature | doremi | odm | regmix | reweight.")  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "static: weights {domain: w}; temperature: temperature T; doremi: eta, smoothing (c), reference_losses or "
        "reference_run; odm: smoothing; regmix: mixtures, losses (CSV paths), target, top_k, n_samples; reweight: "
        "low_quantile, high_quantile, learned_weight, noisy_weight."))


class MixtureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mixture: str = Field(pattern=NAME, description="Mixture name: the asset key is `<mixture>/mixture`.")
    description: str = Field("", description="Shown in the Dagster UI.")
    storage: str = Field("data/mixtures", description="Where manifests are written, relative to the project root.")
    inputs: list[MixtureInputSpec] = Field(min_length=1, description="Datasets to mix.")
    token_budget: int = Field(gt=0, description="Tokens the training run will consume from this mixture.")
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec, description="How the weights are chosen.")
    weights: dict[str, float] = Field(default_factory=dict, description="Initial (or static) weights per domain; default uniform over non-empty domains.")
    domains: list[str] | None = Field(None, description="Domains to use (default: every domain found in the inputs).")
    seed: int = Field(0, ge=0, description="Sampling seed recorded in the manifest.")
    epoch_cap: int | None = Field(4, ge=1, description=(
        "Epochs a domain is read at most (repeated data stops paying after about 4, Muennighoff et al. 2023); "
        "the budget a capped domain cannot take goes to the others, in proportion. null: no cap."))
    feedback_store: str = Field("data/feedback/feedback.sqlite", description="SQLite feedback store (relative to the project root).")

    @model_validator(mode="after")
    def _inputs_unique(self) -> MixtureSpec:
        names = [i.dataset for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"inputs repeat a dataset: {names}")
        bad = {d: w for d, w in self.weights.items() if not (w >= 0 and w != float("inf"))}
        if bad:
            raise ValueError(f"weights must be finite and >= 0: {bad}")
        return self

    @property
    def pipelines(self) -> list[str]:
        return sorted({i.dataset.split("/")[0] for i in self.inputs})


def load_mixture_spec(path: str | Path) -> MixtureSpec:
    """The mixture spec at `path`; any problem raises SpecError naming file:line:field."""
    return load_model(path, MixtureSpec, shape="a mixture spec is a mapping with `mixture`, `inputs` and `token_budget`")
