"""`with_weights`: a new manifest over the same pinned inputs and draw ranges with other weights,
what an in-trainer algorithm switches to (`MixtureDataset.update`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

from dagster_llmdata.errors import MixtureError
import dagster_llmdata.mixture.algorithms as alg
from dagster_llmdata.mixture.manifest import Manifest, write_manifest
from dagster_llmdata.mixture.plan import compute_stream, draw_plan


def with_weights(manifest: Manifest, weights: Mapping[str, float], algorithm: dict | None = None,
                 feedback: dict | None = None, write: bool = True) -> Manifest:
    """`manifest` with token shares `weights` (domains left out get 0; they are normalised), the
    same inputs, seed and budget. Written beside it (not made the mixture's latest) unless
    `write=False`. A domain the manifest pins no documents for cannot be given weight."""
    w = alg.normalise(weights, list(manifest.domains))
    unpinned = sorted(d for d, v in w.items() if v > 0 and not manifest.draw.get(d))
    if unpinned:
        raise MixtureError(f"manifest {manifest.version} pins no documents for {unpinned} (weight 0 when it was planned): "
                           "re-materialise the mixture with weight on them")
    new = copy.deepcopy(manifest)
    for d, info in new.domains.items():
        info["weight"] = w[d]
        info.pop("weight_asked", None)
    _, new.n_samples, new.repetition = draw_plan(new.domains, new.token_budget)
    new.algorithm = algorithm if algorithm is not None else {**manifest.algorithm, "state": {}}
    new.feedback = feedback
    new.warnings = [f"weights set over manifest {manifest.version}'s pinned inputs"]
    new.version = ""
    new.stream = compute_stream(new)
    if write and manifest.path is not None:
        write_manifest(new, manifest.path.parent, point_latest=False)
    else:
        new.version = new.compute_version()
    return new
