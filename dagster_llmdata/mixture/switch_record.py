"""Record an in-trainer mixture switch (mixture.in_trainer) as a runless materialisation of the
mixture asset, so the new version shows in the asset's history with the step it applies from.
Beside mixture_asset.py: the mixture's own Dagster builders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from dagster_llmdata.mixture.manifest import Manifest
from dagster_llmdata.mixture.mixture_asset import mixture_key


def record_switch(instance: dg.DagsterInstance, mixture: str, entry: dict[str, Any], manifest: Manifest,
                  run_id: str | None = None) -> dg.AssetMaterialization:
    """Report `manifest` (the version switched to; `entry`: MixtureUpdater's history entry) as a
    materialisation of mixture `mixture`'s asset, with the training run and step in its metadata."""
    metadata: dict[str, Any] = {
        "manifest": dg.MetadataValue.path(str(manifest.path)) if manifest.path else dg.MetadataValue.text("(unwritten)"),
        "version": manifest.version,
        "run_id": run_id or "",
        "step": int(entry["step"]),
        "applies_from_step": int(entry["applies_from_step"]),
        "sample": int(entry["sample"]),
        "weights": dg.MetadataValue.json({d: float(w) for d, w in entry["weights"].items()}),
        "source": "in_trainer",
    }
    # the numbers the mixture asset's own materialisations carry, so the UI plots one weight history
    metadata.update({f"weight/{d}": float(w) for d, w in entry["weights"].items()})
    if "average_weights" in entry:
        metadata["average_weights"] = dg.MetadataValue.json(entry["average_weights"])
    event = dg.AssetMaterialization(asset_key=mixture_key(mixture), metadata=metadata,
                                    description=f"in-trainer switch to {manifest.version} from step {entry['applies_from_step']}")
    instance.report_runless_asset_event(event)
    return event


def switch_recorder(instance: dg.DagsterInstance, mixture: str, run_id: str | None = None) -> Callable[[dict, Manifest], Any]:
    """`record_switch` bound to an instance, mixture and run: an `on_switch` for MixtureUpdater."""
    return lambda entry, manifest: record_switch(instance, mixture, entry, manifest, run_id)
