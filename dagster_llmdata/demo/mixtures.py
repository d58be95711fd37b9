"""The mixture part of `make demo`: materialise every mixture of the project once its pipelines are."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dagster_llmdata.io.logs import stderr_to
from dagster_llmdata.mixture.mixture_asset import mixture_key
from dagster_llmdata.mixture.manifest import read_manifest


def materialise_mixtures(root: Path, defs: dg.Definitions, names: list[str], instance: dg.DagsterInstance, log_path: Path) -> list[str]:
    """Materialise each mixture through Dagster; returns printable lines (weights, samples)."""
    lines = []
    graph = defs.resolve_asset_graph()
    for name in names:
        job = dg.define_asset_job(f"{name}_mixture_demo", selection=[mixture_key(name)]).resolve(asset_graph=graph)
        with stderr_to(log_path):
            result = job.execute_in_process(instance=instance, raise_on_error=False)
        if not result.success:
            lines.append(f"mixture {name}: FAILED (see {log_path})")
            continue
        md = result.get_asset_materialization_events()[0].materialization.metadata
        m = read_manifest(md["manifest"].value)
        weights = ", ".join(f"{d}={i['weight']:.3f} ({i['docs']} docs, {i['epochs']:.2f} epochs)" for d, i in m.domains.items())
        lines.append(f"mixture {name} v{m.version}: {m.n_samples} samples for {m.token_budget} tokens; {weights}")
        lines.append(f"  manifest: {m.path}   (MixtureDataset(\"{m.path}\") streams it)")
    return lines
