"""Per-sample online batch selection, pure functions over arrays.

From a large candidate batch, train only on the k samples worth the most:
- loss-based selection (Loshchilov & Hutter 2015; Jiang et al. 2019 "selective backprop" in its
  simplest form): the k highest training losses;
- RHO-loss (Mindermann et al. 2022, "Prioritized Training on Points that are Learnable, Worth
  Learning, and Not Yet Learnt"): the k highest reducible holdout losses, training loss minus the
  "irreducible" loss a reference model trained on holdout data assigns to the sample. Noisy samples
  (high loss under both) and learnt ones (low training loss) both score low.

Each returns the indices of the kept samples in the batch's order, so a trainer can index its
tensors and a caller can record what was skipped (nothing disappears unrecorded)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dagster_llmdata.errors import MixtureError


def _array(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise MixtureError(f"{what} must be finite")
    return arr


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    if not 0 < k <= scores.size:
        raise MixtureError(f"k must be in 1..{scores.size} (the batch size), got {k}")
    # stable: among equal scores the earlier sample wins, so a selection replays exactly
    order = np.argsort(-scores, kind="stable")[:k]
    return np.sort(order)


def k_for(batch_size: int, fraction: float) -> int:
    """How many of `batch_size` to keep for a selection `fraction` in (0, 1] (at least 1)."""
    if not 0 < fraction <= 1:
        raise MixtureError(f"selection fraction must be in (0, 1], got {fraction}")
    return max(1, round(batch_size * fraction))


def loss_selection(losses: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest-loss samples, in batch order."""
    return _top_k(_array(losses, "losses"), k)


def rho_scores(losses: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reducible holdout loss per sample: training loss - irreducible (reference-model) loss."""
    lo, ref = _array(losses, "losses"), _array(reference, "reference losses")
    if lo.shape != ref.shape:
        raise MixtureError(f"{lo.size} losses but {ref.size} reference losses")
    return lo - ref


def rho_loss_selection(losses: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Indices of the k samples with the highest reducible loss (RHO-loss), in batch order."""
    return _top_k(rho_scores(losses, reference), k)


def select(losses: Sequence[float] | np.ndarray, k: int, reference: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """RHO-loss when reference losses are given, loss-based selection otherwise."""
    return loss_selection(losses, k) if reference is None else rho_loss_selection(losses, reference, k)
