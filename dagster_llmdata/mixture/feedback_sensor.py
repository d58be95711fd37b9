"""The training-feedback sensor (`type: training_feedback` in sensors/*.yaml).

Each evaluation: pull new TensorBoard scalars into the store (when a log dir is configured), read
feedback events after the cursor, record one observation of `<mixture>/training_run` per new
(run, step) with the losses and the mixture version that step consumed, and, for each run that
has passed `warmup_step` and moved `update_step` steps since its last update, run the algorithm on
the run's latest per-domain losses. When the weights move by more than `min_weight_change` (total
variation), it requests a materialisation of the mixture asset with the new weights and state
(run tags: the training run id and step). The cursor holds the last event read and each run's
algorithm state, so a restarted daemon neither re-reads nor forgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_llmdata.errors import FeedbackStoreLocked, MixtureError, SpecError
import dagster_llmdata.mixture.algorithms as alg
from dagster_llmdata.mixture.mixture_asset import MixtureConfig, latest_manifest, mixture_key, mixture_op_name, training_run_key
from dagster_llmdata.mixture.feedback import FeedbackStore, open_store
from dagster_llmdata.spec.mixture import MixtureSpec
from dagster_llmdata.spec.triggers import TrainingFeedbackSensorSpec
from dagster_llmdata.spec.project import Project
from dagster_llmdata.mixture.tensorboard import TensorBoardFeedback


RUN_TAG = "llmdata/training_run"
STEP_TAG = "llmdata/step"






def build_feedback_sensor(entry: TrainingFeedbackSensorSpec, project: Project, jobs: dict[str, Any]) -> dg.Definitions:
    mixtures: dict[str, MixtureSpec] = project.specs.get("mixture", {})
    if entry.mixture not in mixtures:
        raise SpecError(f"names unknown mixture {entry.mixture!r} (loaded: {sorted(mixtures) or 'none'})")
    spec = mixtures[entry.mixture]
    name = entry.algorithm or spec.algorithm.name
    if name not in alg.ONLINE and name != "static":
        raise SpecError(f"mixture {spec.mixture!r} uses {name!r}, which does not learn from feedback; set `algorithm:` "
                        f"to one of {', '.join(alg.ONLINE)}")
    return dg.Definitions(sensors=[_sensor(entry, spec, project.root, name)])


def _sensor(entry: TrainingFeedbackSensorSpec, spec: MixtureSpec, root: Path, algorithm: str) -> dg.SensorDefinition:
    key = mixture_key(spec.mixture)
    params = {**spec.algorithm.params, **entry.params}
    store_path = root / (entry.store or spec.feedback_store)

    @dg.sensor(
        name=entry.name or f"{spec.mixture}_feedback", asset_selection=[key],
        minimum_interval_seconds=entry.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if entry.default_status == "running" else dg.DefaultSensorStatus.STOPPED,
        description=f"Training feedback from {store_path} -> {algorithm} every {entry.update_step} steps -> re-materialise {key.to_user_string()}.",
    )
    def _feedback(context: dg.SensorEvaluationContext):
        try:
            store = open_store(store_path)
            if entry.tensorboard:

                _, problems = TensorBoardFeedback(root / entry.tensorboard.logdir, store, spec.mixture,
                                                  tag_pattern=entry.tensorboard.tag_pattern).poll()
                for p in problems:
                    context.log.warning(p)
            return evaluate(entry, spec, root, algorithm, params, store, context.cursor, context.log)
        except FeedbackStoreLocked as exc:
            return dg.SkipReason(str(exc))

    return _feedback


def evaluate(entry: TrainingFeedbackSensorSpec, spec: MixtureSpec, root: Path, algorithm: str, params: dict[str, Any],
             store: FeedbackStore, cursor: str | None, log=None) -> dg.SensorResult | dg.SkipReason:
    """One evaluation of the sensor, as a function of the store and the cursor (tested directly)."""
    state = json.loads(cursor) if cursor else {"seq": 0, "runs": {}}
    events = store.events_after(state["seq"], kinds=("domain", "target"), mixture=spec.mixture)
    if not events:
        return dg.SkipReason(f"no new feedback in {store.path} after event {state['seq']}")
    manifest = latest_manifest(spec, root)
    if manifest is None:
        return dg.SkipReason(f"mixture {spec.mixture!r} has no manifest yet: materialise it once first")
    observations, requests = [], []
    by_step: dict[tuple[str, int], list] = {}
    for e in events:
        by_step.setdefault((e.run_id, e.step), []).append(e)
    for (run, step), evs in sorted(by_step.items()):
        version = next((e.mixture_version for e in evs if e.mixture_version), None) or _consumed_at(store, run, step) or manifest.version
        md: dict[str, Any] = {"run_id": run, "step": step, "mixture_version": version}
        md.update({f"loss/{e.key}": e.loss for e in evs if e.kind == "domain"})
        md.update({f"target/{e.key}": e.loss for e in evs if e.kind == "target"})
        observations.append(dg.AssetObservation(asset_key=training_run_key(spec.mixture), metadata=md,
                                                tags={"dagster/data_version": f"{run}@{step}", RUN_TAG: run, STEP_TAG: str(step)}))
    domains = list(manifest.domains)
    for run in sorted({e.run_id for e in events if e.kind == "domain"}):
        rs = state["runs"].get(run)
        if rs is None:
            weights = manifest.weights
            alg_state = manifest.algorithm.get("state") if manifest.algorithm.get("name") == algorithm and manifest.algorithm.get("state") else None
            rs = {"last_update": None, "weights": weights, "state": alg_state or alg.init_state(algorithm, domains, weights)}
        step = max(e.step for e in events if e.run_id == run and e.kind == "domain")
        due = step >= entry.warmup_step and (rs["last_update"] is None or step - rs["last_update"] >= entry.update_step)
        if not due:
            state["runs"][run] = rs
            continue
        losses = {d: v for d, v in store.losses_at(run, step).items() if d in domains}
        p = {**params, "step": step}
        if algorithm == "odm":  # EXP3 importance-weights with what the run was sampling with, not the bandit's latest guess
            p["probabilities"] = rs["weights"]
        if algorithm == "doremi" and entry.reference_run:
            p["reference_losses"] = store.losses_at(entry.reference_run, step)
        try:
            new_state = alg.online_update(algorithm, rs["state"], losses, p)
        except MixtureError as exc:
            if log:
                log.warning(f"run {run} step {step}: {exc}; weights kept")
            rs["last_update"] = step
            state["runs"][run] = rs
            continue
        new_weights = alg.weights_out(new_state)
        change = alg.weight_change(rs["weights"], new_weights)
        rs["last_update"], rs["state"] = step, new_state
        wants_docs = algorithm == "reweight" and store.doc_losses(run, step)
        if change > entry.min_weight_change or wants_docs:
            rs["weights"] = new_weights
            config = MixtureConfig(weights_json=json.dumps(new_weights), state_json=json.dumps(new_state), run_id=run, step=step,
                                   change=round(change, 6))
            requests.append(dg.RunRequest(
                run_key=f"{spec.mixture}:{run}:{step}", asset_selection=[mixture_key(spec.mixture)],
                run_config={"ops": {mixture_op_name(spec.mixture): {"config": config.model_dump()}}},
                tags={RUN_TAG: run, STEP_TAG: str(step)},
            ))
        elif log:
            log.info(f"run {run} step {step}: weights moved {change:.4f} <= {entry.min_weight_change}; no new mixture")
        state["runs"][run] = rs
    state["seq"] = events[-1].seq
    return dg.SensorResult(run_requests=requests, asset_events=observations, cursor=json.dumps(state))


def _consumed_at(store: FeedbackStore, run: str, step: int) -> str | None:
    """The mixture version a run recorded as consumed at or before `step`."""
    version = None
    for s, v in store.consumed(run):
        if s <= step:
            version = v
    return version
