"""Materialise mixtures now, through Dagster in a given instance: what `make demo` does once its
pipelines are built and what `llmdata materialize MIXTURE` does."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dagster_llmdata.io.logs import stderr_to
from dagster_llmdata.mixture.mixture_asset import mixture_key
from dagster_llmdata.mixture.manifest import read_manifest


def materialise_mixtures(defs: dg.Definitions, names: list[str], instance: dg.DagsterInstance, log_path: Path) -> tuple[list[str], list[str]]:
    """Materialise each mixture (its asset alone; its input stages as they are). Returns printable
    lines (weights, samples, manifest) and the names of the mixtures that failed."""
    lines, failed = [], []
    graph = defs.resolve_asset_graph()
    for name in names:
        job = dg.define_asset_job(f"{name}_mixture_now", selection=[mixture_key(name)]).resolve(asset_graph=graph)
        with stderr_to(log_path):
            result = job.execute_in_process(instance=instance, raise_on_error=False, resources=defs.resources,
                                            tags={"llmdata/launched_by": "llmdata"})
        if not result.success:
            failed.append(name)
            lines.append(f"mixture {name}: FAILED: {_first_error(result)} (log: {log_path})")
            continue
        md = result.get_asset_materialization_events()[0].materialization.metadata
        m = read_manifest(md["manifest"].value)
        weights = ", ".join(f"{d}={i['weight']:.3f} ({i['docs']} docs, {i['epochs']:.2f} epochs)" for d, i in m.domains.items())
        lines.append(f"mixture {name} v{m.version}: {m.n_samples} samples for {m.token_budget} tokens; {weights}")
        lines.append(f"  manifest: {m.path}   (MixtureDataset(\"{m.path}\") streams it)")
    return lines, failed


def _first_error(result) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data.error:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "the run failed"
