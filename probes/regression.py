"""Numeric attributes: ridge probes in the same grouped, nested cross-validation as the
classifiers, scored by held-out R².

For each outer fold the penalty ``alpha`` of each attribute is the one with the least
squared error over the inner folds (grouped by image, as :func:`probes.crossval.inner_folds`
draws them for the classifiers); the control task is refitted with the attribute's own
penalty. Every fit comes from per-block sufficient statistics
(:class:`probes.solver.Moments`), so one eigen-decomposition serves every penalty and
every attribute of a fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.crossval import inner_folds
from probes.solver import Moments, default_device, solve_ridge

__all__ = ["RegressionResult", "nested_ridge", "r2_score_groups"]

ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


@dataclass
class RegressionResult:
    """Out-of-fold predictions of ``L`` numeric targets (and of their control targets,
    refitted with the same penalty), and the penalty each outer fold chose."""

    predicted: np.ndarray  # (L, n) float64
    control_predicted: np.ndarray | None  # (L, n)
    chosen_alpha: np.ndarray  # (L, F)


def nested_ridge(
    X: np.ndarray,
    targets: np.ndarray,
    folds: np.ndarray,
    groups: np.ndarray,
    alphas: Sequence[float] = ALPHAS,
    *,
    n_inner: int = 3,
    control: np.ndarray | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> RegressionResult:
    """Grouped nested cross-validation of ridge probes on shared features.

    ``X`` ``(n, d)`` features; ``targets`` ``(L, n)`` numeric values; ``folds`` ``(n,)``
    outer fold of each row; ``groups`` ``(n,)`` the image of each row. Ties between
    penalties go to the strongest (the largest ``alpha``). Solved in float64.
    """
    device = torch.device(device) if device is not None else default_device()
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    L, n = targets.shape
    Y = targets if control is None else np.concatenate([targets, np.atleast_2d(control)])
    X_t = torch.as_tensor(X, dtype=torch.float64, device=device)  # (n, d)
    Y_t = torch.as_tensor(Y.T, dtype=torch.float64, device=device)  # (n, t)
    grid = torch.tensor(sorted(alphas, reverse=True), dtype=torch.float64, device=device)
    F = int(folds.max()) + 1
    predicted = np.zeros(Y.shape)  # (t, n)
    chosen = np.zeros((L, F))
    for f in range(F):
        inner = inner_folds(groups, folds, f, n_inner, seed)  # (n,) -1 outside the training rows
        blocks = [_moments(X_t, Y_t, inner == i) for i in range(n_inner)]
        total = blocks[0]
        for block in blocks[1:]:
            total = total + block
        errors = torch.zeros(len(grid), Y.shape[0], dtype=torch.float64, device=device)
        for i, block in enumerate(blocks):
            coef, intercept = solve_ridge(total - block, grid)  # (A, d, t), (A, t)
            rows = torch.as_tensor(inner == i, device=device)
            residual = Y_t[rows][None] - (X_t[rows] @ coef + intercept[:, None])  # (A, m, t)
            errors += residual.pow(2).sum(1)
        best = errors[:, :L].argmin(0)  # (L,) first minimum: the strongest penalty
        best = torch.cat([best, best]) if control is not None else best  # (t,)
        coef, intercept = solve_ridge(total, grid)
        columns = torch.arange(len(best), device=device)
        weights = coef[best, :, columns]  # (t, d)
        offsets = intercept[best, columns]  # (t,)
        test = torch.as_tensor(folds == f, device=device)
        predicted[:, (folds == f)] = (X_t[test] @ weights.T + offsets).T.cpu().numpy()
        chosen[:, f] = grid[best[:L]].cpu().numpy()
    return RegressionResult(
        predicted=predicted[:L],
        control_predicted=predicted[L:] if control is not None else None,
        chosen_alpha=chosen,
    )


def _moments(X: torch.Tensor, Y: torch.Tensor, rows: np.ndarray) -> Moments:
    mask = torch.as_tensor(rows, device=X.device)
    return Moments.of(X[mask], Y[mask])


def r2_score_groups(
    truth: np.ndarray, predicted: np.ndarray, groups: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Held-out R² (``1 - SSE / SST``, SST around the mean of ``truth``, as
    ``sklearn.metrics.r2_score``) and the per-image SSE and SST (for a bootstrap over
    images)."""
    _, inverse = np.unique(groups, return_inverse=True)
    sse = np.bincount(inverse, weights=(truth - predicted) ** 2)
    sst = np.bincount(inverse, weights=(truth - truth.mean()) ** 2)
    total = sst.sum()
    return (1.0 - sse.sum() / total if total > 0 else float("nan")), sse, sst
