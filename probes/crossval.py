"""Cross-validation grouped by image, with the penalty chosen by inner cross-validation.

Everything here works on stacks of problems that share one feature matrix, so that a
site's attributes x outer folds x inner folds x penalties go through the batched solver
(:mod:`probes.solver`) in two calls: one to choose each penalty, one to refit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from interp.errors import ConfigError
from probes.solver import HISTORY, default_device, fit_logistic, predict_logistic

__all__ = [
    "Backend",
    "NestedResult",
    "group_folds",
    "inner_correct",
    "inner_folds",
    "nested_logistic",
    "sklearn_backend",
    "torch_backend",
]


def group_folds(groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """``(n,)`` fold index of each row: whole groups (images) assigned to folds by a
    seeded shuffle, fold sizes in groups differing by at most one."""
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < n_splits:
        raise ConfigError(
            f"{len(unique)} images cannot make {n_splits} folds; use more images or fewer folds"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[order] = np.arange(len(unique)) % n_splits
    return fold_of_group[inverse]


@dataclass
class NestedResult:
    """Out-of-fold predictions of ``L`` label sets (and, refitted with the same penalty,
    of ``L`` control label sets), and the penalty each outer fold chose."""

    predicted: np.ndarray  # (L, n) held-out prediction of every row
    control_predicted: np.ndarray | None  # (L, n) the same for the control labels
    chosen_C: np.ndarray  # (L, F) penalty chosen by inner cross-validation


# A backend fits P problems on shared features and predicts every row under each:
# (X (n, d), y (P, n), train (P, n) bool, C (P,), n_classes) -> (P, n) class indices.
Backend = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def torch_backend(
    device: str | torch.device | None = None,
    max_iter: int = 300,
    dtype: torch.dtype | None = None,
    tol: float | None = None,
    max_bytes: int = 4 * 2**30,
) -> Backend:
    """All problems in batched L-BFGS calls (:func:`probes.solver.fit_logistic`).

    ``dtype`` / ``tol`` default to float64 at 1e-6 on a GPU and float32 at 1e-4 on a CPU.
    float64 solves as precisely as scikit-learn run to convergence; in float32 the
    inner-CV scores of near-tied penalties can flip the choice of C and move an accuracy
    by a few images (see the README's benchmark), but on a CPU float64 costs about twice
    the time, on a data-centre GPU little (on a consumer GPU, whose float64 is many times
    slower than its float32, pass ``dtype=torch.float32``). ``max_bytes`` caps the
    solver's working set (its memory grows with problems x (rows x classes + features x
    classes x history)): problems are solved in as many calls as that takes.
    """

    def solve(X, y, train, C, n_classes):
        dev = torch.device(device) if device else default_device()
        on_gpu = dev.type == "cuda"
        kind = dtype or (torch.float64 if on_gpu else torch.float32)
        stop = tol if tol is not None else (1e-6 if kind == torch.float64 else 1e-4)
        features = torch.as_tensor(X, dtype=kind, device=dev)
        n, d = X.shape
        itemsize = torch.finfo(kind).bits // 8
        per_problem = itemsize * (4 * n * n_classes + (2 * HISTORY + 4) * (d + 1) * n_classes)
        chunk = max(1, int(max_bytes // per_problem))
        out = []
        for start in range(0, len(y), chunk):
            part = slice(start, start + chunk)
            solution = fit_logistic(
                features,
                torch.as_tensor(y[part], device=dev),
                torch.as_tensor(train[part], device=dev),
                torch.as_tensor(C[part], dtype=kind),
                n_classes,
                max_iter=max_iter,
                tol=stop,
            )
            out.append(predict_logistic(solution, features).cpu().numpy())
        return np.concatenate(out) if out else np.empty(y.shape, dtype=np.int64)

    return solve


def sklearn_backend(max_iter: int = 1000, tol: float = 1e-4) -> Backend:
    """The reference: one scikit-learn ``LogisticRegression`` per problem, in a loop
    (``tol`` is scikit-learn's; its default 1e-4 can stop short of the optimum by enough
    to flip a few held-out predictions)."""
    from sklearn.linear_model import LogisticRegression

    def solve(X, y, train, C, n_classes):
        out = np.empty(y.shape, dtype=np.int64)
        for p in range(len(y)):
            seen = np.unique(y[p, train[p]])
            if len(seen) == 1:  # scikit-learn refuses one class; the answer is that class
                out[p] = seen[0]
                continue
            model = LogisticRegression(C=float(C[p]), max_iter=max_iter, tol=tol)
            out[p] = model.fit(X[train[p]], y[p, train[p]]).predict(X)
        return out

    return solve


def inner_correct(
    X: np.ndarray,
    labels: np.ndarray,
    inner: np.ndarray,
    Cs: Sequence[float],
    n_inner: int,
    n_classes: int,
    solve: Backend,
) -> np.ndarray:
    """``(L, F, len(Cs))`` correct held-out predictions of each penalty, summed over the
    inner folds, in one backend call for all of them.

    ``labels`` ``(L, n)``; ``inner`` ``(F, n)``, or ``(L, F, n)`` per label set: the
    inner fold of each row of each training set (-1: not in it). Fold ``i`` of set ``f``
    is predicted by a probe fitted on the other folds of ``f``.
    """
    L = len(labels)
    inner = np.broadcast_to(inner, (L, *inner.shape[-2:]))  # (L, F, n)
    F = inner.shape[1]
    problems = [
        (a, f, i, c) for a in range(L) for f in range(F) for i in range(n_inner)
        for c in range(len(Cs))
    ]  # fmt: skip
    y = np.stack([labels[a] for a, _, _, _ in problems])
    train = np.stack([(inner[a, f] >= 0) & (inner[a, f] != i) for a, f, i, _ in problems])
    test = np.stack([inner[a, f] == i for a, f, i, _ in problems])
    C = np.array([Cs[c] for _, _, _, c in problems])
    hits = (solve(X, y, train, C, n_classes) == y) & test  # (P, n)
    return hits.sum(1).reshape(L, F, n_inner, len(Cs)).sum(2)


def nested_logistic(
    X: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    groups: np.ndarray,
    Cs: Sequence[float],
    *,
    n_inner: int = 3,
    control: np.ndarray | None = None,
    seed: int = 0,
    backend: Backend | None = None,
    members: np.ndarray | None = None,
) -> NestedResult:
    """Grouped nested cross-validation of logistic probes on shared features.

    ``X`` ``(n, d)`` standardised features; ``labels`` ``(L, n)`` class indices;
    ``folds`` ``(n,)`` outer fold of each row (see :func:`group_folds`); ``groups`` the
    image of each row. For each label set and outer fold, ``C`` is the one of ``Cs`` with
    the best accuracy over ``n_inner`` inner folds (grouped likewise, within the outer
    training rows; ties go to the strongest penalty); the probe is then refitted on the
    whole outer training set and predicts the outer test rows. ``control`` ``(L, n)``, if
    given, is refitted with the same ``C`` (Hewitt & Liang's control task shares the
    probe's hyper-parameters). ``backend`` defaults to :func:`torch_backend`.

    ``members`` ``(L, n)`` bool, if given, are the rows each label set owns (several
    designs stacked on one feature matrix, e.g. every token selection of a site, solved
    in the same two backend calls); each set is cross-validated on its rows alone, exactly
    as if it had been given by itself, and predictions elsewhere are -1.
    """
    solve = backend or torch_backend()
    labels = np.asarray(labels)
    L, n = labels.shape
    members = np.ones((L, n), dtype=bool) if members is None else np.asarray(members, bool)
    F = int(folds.max()) + 1
    K = int(max(labels.max(), control.max() if control is not None else 0)) + 1
    Cs = sorted(Cs)

    chosen = np.full((L, F), Cs[0])
    if len(Cs) > 1:
        # (L, F, n): inner fold of each outer-training row of each label set, -1 elsewhere
        owners, which = np.unique(members, axis=0, return_inverse=True)
        per_owner = np.stack(
            [
                np.stack([inner_folds(groups, folds, f, n_inner, seed, rows) for f in range(F)])
                for rows in owners
            ]
        )  # (owners, F, n)
        inner = per_owner[np.ravel(which)]
        correct = inner_correct(X, labels, inner, Cs, n_inner, K, solve)  # (L, F, C)
        chosen = np.asarray(Cs)[correct.argmax(-1)]  # first best: the strongest penalty

    sets = [labels] + ([control] if control is not None else [])
    problems = [(s, a, f) for s in range(len(sets)) for a in range(L) for f in range(F)]
    y = np.stack([sets[s][a] for s, a, _ in problems])
    train = np.stack([members[a] & (folds != f) for _, a, f in problems])
    C = np.array([chosen[a, f] for _, a, f in problems])
    predictions = solve(X, y, train, C, K)  # (P, n)
    held_out = np.full((len(sets), L, n), -1, dtype=np.int64)
    for p, (s, a, f) in enumerate(problems):
        rows = members[a] & (folds == f)
        held_out[s, a, rows] = predictions[p, rows]
    return NestedResult(
        predicted=held_out[0],
        control_predicted=held_out[1] if control is not None else None,
        chosen_C=chosen,
    )


def inner_folds(
    groups: np.ndarray,
    folds: np.ndarray,
    outer: int,
    n_inner: int,
    seed: int,
    members: np.ndarray | None = None,
) -> np.ndarray:
    """``(n,)`` inner fold of each row of the outer training set (within ``members``),
    -1 elsewhere."""
    out = np.full(len(groups), -1)
    rows = folds != outer
    if members is not None:
        rows &= members
    out[rows] = group_folds(groups[rows], n_inner, seed + 1 + outer)
    return out
