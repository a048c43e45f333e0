"""Linear probes that follow the scikit-learn estimator contract.

Both standardise their features, choose their penalty by inner cross-validation, and
solve in torch (:mod:`probes.solver`), on the GPU when one is present. They pass
scikit-learn's own estimator checks (``tests/test_probes.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from interp.errors import ConfigError
from probes.crossval import group_folds, inner_correct, torch_backend
from probes.solver import default_device, fit_logistic, fit_ridge

__all__ = ["LinearProbe", "RidgeProbe"]


def _grid(values: float | Sequence[float]) -> list[float]:
    grid = sorted(float(v) for v in np.atleast_1d(values))
    if not grid or min(grid) <= 0:
        raise ConfigError(f"penalty grid must hold positive numbers, got {values!r}")
    return grid


def _inner_folds(n_samples: int, cv: int, seed: int) -> np.ndarray:
    if n_samples < cv:
        raise ConfigError(
            f"inner {cv}-fold cross-validation needs at least {cv} samples, got "
            f"n_samples = {n_samples}; pass a single penalty to skip it"
        )
    return group_folds(np.arange(n_samples), cv, seed)


def _device(device: str | None) -> torch.device:
    return torch.device(device) if device else default_device()


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Standardise, then L2-penalised multinomial logistic regression.

    Parameters
    ----------
    Cs : inverse penalty, or a grid of them to choose from by inner cross-validation
        (accuracy; ties go to the strongest penalty). Same meaning as scikit-learn's ``C``.
    cv : inner folds.
    max_iter : iteration cap of the solver.
    device : torch device (default: the GPU when present, else the CPU).
    random_state : seed of the inner folds.

    Learned: ``classes_``, ``scaler_``, ``C_``, ``cv_scores_`` (mean inner accuracy per
    penalty, empty without a grid), ``coef_`` and ``intercept_`` (in standardised units,
    shaped as scikit-learn's: one row for two classes), ``n_iter_`` (of the final fit),
    ``n_features_in_``.
    """

    def __init__(
        self,
        Cs: float | Sequence[float] = (0.01, 0.1, 1.0),
        cv: int = 3,
        max_iter: int = 300,
        device: str | None = None,
        random_state: int = 0,
    ) -> None:
        self.Cs = Cs
        self.cv = cv
        self.max_iter = max_iter
        self.device = device
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        grid = _grid(self.Cs)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        self.scaler_ = StandardScaler().fit(X)
        device = _device(self.device)
        features = torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32, device=device)
        n_classes = len(self.classes_)

        self.cv_scores_ = np.array([])
        self.C_ = grid[0]
        if len(grid) > 1:
            inner = _inner_folds(len(y), self.cv, self.random_state)[None]  # (1, n)
            correct = inner_correct(
                features.cpu().numpy(),
                encoded[None],
                inner,
                grid,
                self.cv,
                max(n_classes, 1),
                torch_backend(device, self.max_iter),
            )[0, 0]  # (len(grid),)
            self.cv_scores_ = correct / len(y)
            self.C_ = grid[int(self.cv_scores_.argmax())]
        solution = fit_logistic(
            features,
            torch.as_tensor(encoded, device=device)[None],
            torch.ones(1, len(y), dtype=torch.bool, device=device),
            torch.tensor([self.C_]),
            max(n_classes, 1),
            max_iter=self.max_iter,
        )
        self.n_iter_ = max(1, solution.n_iter)
        coef = solution.coef[0].T.cpu().double().numpy()  # (classes, features)
        intercept = solution.intercept[0].cpu().double().numpy()  # (classes,)
        if n_classes == 2:
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        self.coef_, self.intercept_ = coef, intercept
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scores = self.scaler_.transform(X) @ self.coef_.T + self.intercept_
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        if len(self.classes_) == 2:
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        elif len(self.classes_) == 1:
            return np.ones((len(scores), 1))
        scores = scores - scores.max(1, keepdims=True)
        odds = np.exp(scores)
        return odds / odds.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        if len(self.classes_) == 2:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.asarray(scores).reshape(len(scores), -1).argmax(1)]


class RidgeProbe(RegressorMixin, BaseEstimator):
    """Standardise, then ridge regression (one or many targets).

    Parameters
    ----------
    alphas : penalty, or a grid of them to choose from by inner cross-validation (mean
        squared error over all targets). Same meaning as scikit-learn's ``Ridge(alpha)``.
    cv : inner folds.
    device : torch device (default: the GPU when present, else the CPU).
    random_state : seed of the inner folds.

    Learned: ``scaler_``, ``alpha_``, ``cv_scores_`` (mean inner squared error per
    penalty), ``coef_`` (``(targets, features)``, or ``(features,)`` for a 1-D ``y``, in
    standardised units), ``intercept_``, ``n_features_in_``.
    """

    def __init__(
        self,
        alphas: float | Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
        cv: int = 3,
        device: str | None = None,
        random_state: int = 0,
    ) -> None:
        self.alphas = alphas
        self.cv = cv
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one probe for many targets (pixels)
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeProbe:
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        grid = _grid(self.alphas)
        self.scaler_ = StandardScaler().fit(X)
        device = _device(self.device)
        features = torch.as_tensor(self.scaler_.transform(X), device=device)  # float64
        targets = torch.tensor(y.reshape(len(y), -1), dtype=features.dtype, device=device)
        alphas = torch.tensor(grid, dtype=features.dtype, device=device)
        self.cv_scores_ = np.array([])
        self.alpha_ = grid[0]
        if len(grid) > 1:
            folds = torch.as_tensor(_inner_folds(len(y), self.cv, self.random_state))
            errors = torch.zeros(len(grid), dtype=features.dtype, device=device)
            for k in range(self.cv):
                train, test = folds != k, folds == k
                coef, intercept = fit_ridge(features[train], targets[train], alphas)
                predicted = features[test] @ coef + intercept[:, None, :]  # (A, n_test, t)
                errors += (predicted - targets[test]).pow(2).sum((1, 2))
            self.cv_scores_ = (errors / targets.numel()).cpu().numpy()
            self.alpha_ = grid[int(self.cv_scores_.argmin())]
        coef, intercept = fit_ridge(features, targets, alphas[grid.index(self.alpha_)][None])
        self.coef_ = coef[0].T.cpu().numpy()  # (t, features)
        self.intercept_ = intercept[0].cpu().numpy()  # (t,)
        if y.ndim == 1:
            self.coef_, self.intercept_ = self.coef_[0], self.intercept_[0]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.scaler_.transform(X) @ self.coef_.T + self.intercept_
