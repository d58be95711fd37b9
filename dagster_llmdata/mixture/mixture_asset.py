"""MixtureSpec -> Dagster objects: the `<mixture>/mixture` asset (unpartitioned, depending on
every partition of its input stages, so lineage runs mixture -> stages -> raw) that writes the
manifest, a check that the manifest is sound, and the `<mixture>/training_run` asset whose
observations (from the training-feedback sensor) say which mixture version each run and step
consumed: lineage from a checkpoint back to every raw document.

No `from __future__ import annotations` here: Dagster reads the asset's config annotation at
definition time."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_llmdata.errors import ManifestError, MixtureError, SpecError
from dagster_llmdata.mixture.algorithms import doc_weights, weight_change
from dagster_llmdata.mixture.feedback import open_store
from dagster_llmdata.mixture.manifest import Manifest, manifest_dir, read_manifest, resolved_inputs
from dagster_llmdata.mixture.plan import plan_manifest, scan_inputs
from dagster_llmdata.spec.mixture import MixtureSpec
from dagster_llmdata.spec.project import Project
from dagster_llmdata.mixture.store_input import LanceInput

MANIFEST_CHECK = "manifest_sound"


def mixture_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "mixture"])


def training_run_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "training_run"])


def mixture_op_name(name: str) -> str:
    return mixture_key(name).to_python_identifier()


class MixtureConfig(dg.Config):
    """Run config the training-feedback sensor passes; empty for a plain materialisation."""

    weights_json: str = ""  # {domain: weight} chosen by the algorithm from feedback
    state_json: str = ""  # the algorithm's state after that update
    run_id: str = ""  # the training run whose feedback moved the weights
    step: int = -1
    change: float = 0.0  # total-variation distance from the previous weights
    reset: bool = False  # start again from the spec's initial weights


def latest_manifest(spec: MixtureSpec, root: Path) -> Manifest | None:
    folder = manifest_dir((root / spec.storage).resolve(), spec.mixture)
    try:
        return read_manifest(folder / "latest.json", root) if (folder / "latest.json").exists() else None
    except ManifestError:
        return None


def build_mixture(spec: MixtureSpec, project: Project) -> dg.Definitions:
    missing = [i.dataset for i in spec.inputs if i.dataset.split("/")[0] not in project.pipelines
               or i.dataset.split("/")[1] not in [s.name for s in project.pipelines[i.dataset.split("/")[0]].stages]]
    if missing:
        raise SpecError(f"inputs name datasets no loaded pipeline has: {missing} (pipelines: {sorted(project.pipelines)})")
    root, pipelines = project.root, dict(project.pipelines)
    key = mixture_key(spec.mixture)
    deps = [dg.AssetKey(i.dataset.split("/")) for i in spec.inputs]

    @dg.asset(
        key=key, deps=deps, group_name=spec.mixture, kinds={"mixture", "json"},
        code_version=_code_version(spec),
        description=spec.description or f"Mixture of {', '.join(i.dataset for i in spec.inputs)} ({spec.algorithm.name}); "
                                         "writes a manifest that MixtureDataset streams.",
        check_specs=[dg.AssetCheckSpec(MANIFEST_CHECK, asset=key, blocking=True,
                                       description="weights sum to 1, every drawn domain has documents, every pinned file exists")],
    )
    def _mixture(context: dg.AssetExecutionContext, config: MixtureConfig):
        try:
            manifest, previous = _materialise(spec, root, pipelines, config)
        except (MixtureError, ManifestError, SpecError) as exc:
            raise dg.Failure(f"mixture {spec.mixture!r}: {exc}") from None
        for text in manifest.warnings:
            context.log.warning(text)
        yield dg.MaterializeResult(asset_key=key, metadata=_metadata(manifest, previous), data_version=dg.DataVersion(manifest.version))
        yield _check(key, manifest)

    training = dg.AssetSpec(
        training_run_key(spec.mixture), deps=[key], group_name=spec.mixture, kinds={"training"},
        description="Training runs on this mixture: observations (one per reported step) name the run, step, "
                    "per-domain losses and the mixture version consumed.",
    )
    return dg.Definitions(assets=[_mixture, training])


def _code_version(spec: MixtureSpec) -> str:
    import hashlib

    return hashlib.sha1(spec.model_dump_json().encode()).hexdigest()[:12]


def _materialise(spec: MixtureSpec, root: Path, pipelines, config: MixtureConfig) -> tuple[Manifest, Manifest | None]:
    previous = latest_manifest(spec, root)
    scan = scan_inputs(spec, root, pipelines)
    weights = state = feedback = None
    if config.weights_json:
        weights, state = json.loads(config.weights_json), json.loads(config.state_json or "{}")
        feedback = {"run_id": config.run_id, "step": config.step, "change": config.change}
    elif previous is not None and not config.reset and previous.feedback and previous.algorithm.get("name") == spec.algorithm.name:
        # a plain re-materialisation (new upstream data) keeps the weights feedback chose
        weights, state, feedback = previous.weights, previous.algorithm.get("state"), previous.feedback
    docs = None
    if spec.algorithm.name == "reweight" and feedback and feedback.get("run_id"):
        losses = open_store(root / spec.feedback_store).doc_losses(feedback["run_id"], feedback.get("step"))
        p = spec.algorithm.params
        docs = doc_weights(losses, **{k: p[k] for k in ("low_quantile", "high_quantile", "learned_weight", "noisy_weight") if k in p})
    manifest = plan_manifest(spec, root, scan, weights=weights, state=state, feedback=feedback, doc_weights=docs)
    open_store(root / spec.feedback_store).register_domains(spec.mixture, list(manifest.domains))
    return manifest, previous


def _metadata(m: Manifest, previous: Manifest | None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "manifest": dg.MetadataValue.path(str(m.path)), "version": m.version, "algorithm": m.algorithm["name"],
        "n_samples": m.n_samples, "token_budget": m.token_budget, "seed": m.seed, "stream_sha256": (m.stream or {}).get("sha256", ""),
        "n_input_files": sum(len(i["files"]) for i in m.inputs),
        "weights": dg.MetadataValue.table(
            records=[dg.TableRecord({"domain": d, "weight": round(i["weight"], 6), "docs": i["docs"], "tokens": i["tokens"],
                                     "tokens_planned": i["tokens_planned"], "epochs": round(i["epochs"], 4)}) for d, i in m.domains.items()],
            schema=dg.TableSchema(columns=[dg.TableColumn("domain", "string"), dg.TableColumn("weight", "float"),
                                           dg.TableColumn("docs", "int"), dg.TableColumn("tokens", "int"),
                                           dg.TableColumn("tokens_planned", "int"), dg.TableColumn("epochs", "float")])),
        "algorithm_state": dg.MetadataValue.json(m.algorithm.get("state") or {}),
        "upstream": dg.MetadataValue.json({i["dataset"]: sorted({f["data_version"] or "" for f in i["files"]}) for i in m.inputs}),
        "change": float((m.feedback or {}).get("change", weight_change(previous.weights, m.weights) if previous else 0.0)),
    }
    for d, info in m.domains.items():  # numeric per domain: the UI plots these over materialisations
        md[f"weight/{d}"] = float(info["weight"])
    if m.feedback:
        md["training_run"] = str(m.feedback.get("run_id", ""))
        md["training_step"] = int(m.feedback.get("step", -1))
    if m.doc_weights:
        md["doc_weights"] = dg.MetadataValue.json(m.doc_weights)
    if m.repetition:
        md["repetition_epochs"] = dg.MetadataValue.json(m.repetition)
    if m.warnings:
        md["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in m.warnings))
    return md


def _check(key: dg.AssetKey, m: Manifest) -> dg.AssetCheckResult:
    problems = []
    total = sum(m.weights.values())
    if abs(total - 1) > 1e-6:
        problems.append(f"weights sum to {total}")
    problems += [f"domain {d} has weight but no documents" for d, i in m.domains.items() if i["weight"] > 0 and i["docs"] == 0]
    problems += [f"missing file {f['path']}" for i in resolved_inputs(m) if i.get("kind", "parquet") == "parquet"
                 for f in i["files"] if not Path(f["path"]).exists()]
    problems += _lance_problems(m)
    return dg.AssetCheckResult(asset_key=key, check_name=MANIFEST_CHECK, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                               description="; ".join(problems) or "sound", metadata={"n_problems": len(problems)})


def _lance_problems(m: Manifest) -> list[str]:
    """A pinned Lance version must be readable with the rows the manifest counted."""
    problems = []
    for inp in resolved_inputs(m):
        if inp.get("kind") == "lance":
            try:
                LanceInput(inp, ["id"]).check(verify_hashes=False)
            except ManifestError as exc:
                problems.append(str(exc))
    return problems
