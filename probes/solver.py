"""Batched linear solvers in torch: many probes on the same features, fitted together.

A sweep fits, for one site, every attribute x fold x regularisation strength on the same
feature matrix; only the labels, the training rows and the penalty differ. Both solvers
take the features once and a stack of problems, so one matrix product serves them all
(on the GPU when the features are there).

- :func:`fit_logistic`: L2-penalised multinomial logistic regression, the objective of
  scikit-learn's ``LogisticRegression(C=C)`` (intercept not penalised), by L-BFGS on
  the sum of the problems' objectives (they are independent, so the sum's minimum is
  each one's minimum).
- :func:`fit_ridge`: ridge regression with an unpenalised intercept, in closed form from
  one eigen-decomposition per training set, for any number of penalties and targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "LogisticSolution",
    "Moments",
    "default_device",
    "fit_logistic",
    "fit_ridge",
    "predict_logistic",
    "solve_ridge",
]


_MAX_HALVINGS = 12  # a problem whose step fails this often stops (it has converged)
HISTORY = 10  # L-BFGS curvature pairs kept per problem


def _inverse_hessian_times(
    S: torch.Tensor, Y: torch.Tensor, order: list[int], gamma: torch.Tensor, q: torch.Tensor
) -> torch.Tensor:
    """L-BFGS's inverse-Hessian estimate times ``q (p, m)``, from the pairs in the ring
    buffers ``S, Y (p, h, m)`` (slots ``order``, oldest first) and the initial scale
    ``gamma (p,)``: the compact form of
    Byrd, Nocedal & Schnabel (1994), a handful of batched products instead of the
    two-loop recursion's 4h vector operations. A zero pair (no curvature seen) is given
    ``R_ii = 1`` and then contributes nothing."""
    if not order:
        return q * gamma[:, None]
    # Products with the (large) buffers in slot order; only small matrices are reordered.
    t = torch.as_tensor(order, device=q.device)
    SY = torch.bmm(S, Y.transpose(1, 2))[:, t][:, :, t]  # (p, h, h): s_i . y_j in time order
    YY = torch.bmm(Y, Y.transpose(1, 2))[:, t][:, :, t]  # (p, h, h)
    diagonal = SY.diagonal(dim1=1, dim2=2)  # (p, h)
    empty = diagonal <= 0
    R = SY.triu() + torch.diag_embed(empty.to(SY.dtype))  # (p, h, h) upper triangular
    D = torch.where(empty, 1.0, diagonal)
    a = torch.bmm(S, q[..., None])[:, t]  # (p, h, 1): S^T q
    b = torch.bmm(Y, q[..., None])[:, t]  # (p, h, 1): Y^T q
    u = torch.linalg.solve_triangular(R, a, upper=True)  # R^-1 S^T q
    inner = D[..., None] * u + gamma[:, None, None] * (torch.bmm(YY, u) - b)
    v = torch.linalg.solve_triangular(R.transpose(1, 2), inner, upper=False)  # R^-T (...)
    coeff_s = torch.zeros(q.shape[0], S.shape[1], 1, device=q.device, dtype=q.dtype)
    coeff_y = torch.zeros_like(coeff_s)
    coeff_s[:, t], coeff_y[:, t] = v, -gamma[:, None, None] * u  # back to slot order
    out = q * gamma[:, None]
    out += torch.bmm(coeff_s.transpose(1, 2), S)[:, 0]
    out += torch.bmm(coeff_y.transpose(1, 2), Y)[:, 0]
    return out


def default_device() -> torch.device:
    """The GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LogisticSolution:
    """Weights of ``P`` fitted problems: ``coef (P, d, K)``, ``intercept (P, K)`` and
    ``present (P, K)`` (classes seen in each problem's training rows; others are never
    predicted, as scikit-learn fits only the classes it sees); ``n_iter``, the L-BFGS
    iterations run."""

    def __init__(
        self, coef: torch.Tensor, intercept: torch.Tensor, present: torch.Tensor, n_iter: int
    ) -> None:
        self.coef = coef
        self.intercept = intercept
        self.present = present
        self.n_iter = n_iter

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """``(P, n, K)`` decision values of ``X (n, d)`` under every problem."""
        z = torch.einsum("nd,pdk->pnk", X, self.coef) + self.intercept[:, None, :]
        return z.masked_fill(~self.present[:, None, :], float("-inf"))


def fit_logistic(
    X: torch.Tensor,
    y: torch.Tensor,
    train: torch.Tensor,
    C: torch.Tensor,
    n_classes: int,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    ftol: float | None = None,
    history: int = HISTORY,
) -> LogisticSolution:
    """Fit ``P`` multinomial logistic regressions on shared features.

    ``X`` is ``(n, d)`` float; ``y`` ``(P, n)`` int class indices in ``[0, n_classes)``;
    ``train`` ``(P, n)`` bool, the rows each problem learns from; ``C`` ``(P,)`` inverse
    penalties. Problem ``p`` minimises ``sum_train CE + ||W_p||^2 / (2 C_p)`` (scikit-
    learn's objective), scaled by ``1 / n_train``. scikit-learn fits two classes with one
    weight vector ``w = w1 - w0``; at the softmax optimum ``w0 = -w1``, so its penalty is
    half of ``||w||^2 / (2 C)``: problems with two classes present are solved at ``C / 2``
    to give scikit-learn's solution.

    Solved by a batched L-BFGS: each problem keeps its own curvature history, step length
    and stopping point (largest gradient entry below ``tol``, or a step that lowers the
    objective by less than ``ftol`` of it: by default 1e-8 in float32, about a tenth of
    its resolution, scaled to other dtypes), so an easy problem does
    not wait on a hard one's line search.
    Problems that have stopped leave the working set, so the tail of slow problems runs
    on small tensors.
    """
    n, d = X.shape
    P = y.shape[0]
    device, dtype = X.device, X.dtype
    if ftol is None:  # 1e-8 in float32, scaled to the dtype's resolution otherwise
        ftol = 1e-8 * torch.finfo(dtype).eps / torch.finfo(torch.float32).eps
    # Layout: problems sit in the middle axis, so that every product with the features
    # is one matrix multiplication over all of them: w (d + 1, p, K), z (n, p, K).
    weight = train.to(device, dtype).T  # (n, P)
    n_train = weight.sum(0).clamp(min=1)  # (P,)
    onehot = torch.nn.functional.one_hot(y.to(device).T, n_classes).to(dtype)  # (n, P, K)
    present = (onehot * weight[..., None]).sum(0) > 0  # (P, K)
    C = C.to(device, dtype) * torch.where(present.sum(1) == 2, 0.5, 1.0).to(dtype)
    # Per-problem constants, sliced down to the unfinished problems as they finish.
    const = {
        "onehot": onehot,
        "penalty": (1.0 / (2 * C * n_train))[None, :, None],  # (1, P, 1)
        "row_weight": (weight / n_train)[..., None],  # (n, P, 1)
        # Absent classes: a huge negative offset, so probability 0, no gradient, no NaN.
        "blocked": torch.where(present, 0.0, -1e9).to(dtype)[None],  # (1, P, K)
    }
    Xb = torch.cat([X, torch.ones(n, 1, device=device, dtype=dtype)], 1)  # (n, d + 1)
    unpenalised = torch.ones(d + 1, 1, 1, device=device, dtype=dtype)
    unpenalised[d] = 0  # the intercept row
    m = (d + 1) * n_classes

    def loss_and_grad(flat: torch.Tensor, c: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective ``(p,)`` and its gradient ``(p, m)`` at ``flat (p, m)``, in closed
        form. The optimiser sees each problem's weights as one contiguous row."""
        p = flat.shape[0]
        w = flat.view(p, d + 1, n_classes).transpose(0, 1)  # (d + 1, p, K)
        z = (Xb @ w.reshape(d + 1, -1)).view(n, p, n_classes) + c["blocked"]  # (n, p, K)
        top = z.amax(-1, keepdim=True)  # (n, p, 1)
        e = (z - top).exp_()  # the one exponential of the step
        total = e.sum(-1, keepdim=True)  # (n, p, 1)
        # cross-entropy = log-sum-exp - true logit
        ce = total.log() + top - (z * c["onehot"]).sum(-1, keepdim=True)  # (n, p, 1)
        ridge = w * unpenalised
        f = (ce * c["row_weight"]).sum((0, 2)) + (c["penalty"] * ridge.pow(2)).sum((0, 2))
        residual = e.div_(total).sub_(c["onehot"]).mul_(c["row_weight"])  # (n, p, K)
        g = (Xb.T @ residual.view(n, -1)).view(d + 1, p, n_classes) + 2 * c["penalty"] * ridge
        return f, g.transpose(0, 1).reshape(p, m)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(a, b)  # (p,)

    def column(v: torch.Tensor) -> torch.Tensor:
        return v[:, None]

    out = torch.zeros(P, m, device=device, dtype=dtype)
    index = torch.arange(P, device=device)  # problems in the working set
    w = out.clone()
    f, g = loss_and_grad(w, const)
    # The newest ``history`` steps and gradient changes in a ring buffer, (p, h, m) each.
    S = torch.zeros(P, history, m, device=device, dtype=dtype)
    Y = torch.zeros(P, history, m, device=device, dtype=dtype)
    gamma = 1.0 / g.abs().sum(1).clamp(min=1.0)  # (p,) scale of the initial inverse Hessian
    running = torch.ones(P, dtype=torch.bool, device=device)
    n_iter = 0
    for it in range(max_iter):
        running &= g.abs().amax(1) > tol  # (p,)
        n_running = int(running.sum())
        if n_running == 0:
            break
        if n_running < 0.75 * len(index):  # shrink the working set to what still runs
            out[index[~running]] = w[~running]
            index, w, f, g = index[running], w[running], f[running], g[running]
            S, Y, gamma = S[running], Y[running], gamma[running]
            const = {k: v[:, running] for k, v in const.items()}
            running = running[running]
        n_iter = it + 1
        q = g * column(running)  # finished problems stay where they are
        order = [(it - k) % history for k in range(min(it, history), 0, -1)]  # oldest first
        r = _inverse_hessian_times(S, Y, order, gamma, q)
        direction = -r
        slope = dot(g, direction)  # (p,) negative along a descent direction
        bad = (slope >= 0) & running  # lost curvature: fall back to steepest descent
        direction = torch.where(column(bad), -g, direction)
        slope = torch.where(bad, -dot(g, g), slope)
        # backtracking (Armijo) line search per problem; a unit step is usually taken.
        # ``noise`` lets a step through that float rounding alone makes look uphill.
        step = torch.ones(len(index), device=device, dtype=dtype)
        accepted = ~running
        noise = 4 * torch.finfo(dtype).eps * f.abs()
        w_new, f_new, g_new = w, f, g
        for _ in range(_MAX_HALVINGS):
            trial_w = w + column(step) * direction
            trial_f, trial_g = loss_and_grad(trial_w, const)
            ok = (trial_f <= f + 1e-4 * step * slope + noise) & ~accepted
            w_new = torch.where(column(ok), trial_w, w_new)
            f_new = torch.where(ok, trial_f, f_new)
            g_new = torch.where(column(ok), trial_g, g_new)
            accepted |= ok
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, step / 2)
        s_k, y_k = w_new - w, g_new - g
        valid = dot(s_k, y_k) > 1e-12  # curvature seen: keep the pair, else store zeros
        s_k, y_k = s_k * column(valid), y_k * column(valid)
        S[:, it % history], Y[:, it % history] = s_k, y_k
        gamma = torch.where(valid, dot(s_k, y_k) / dot(y_k, y_k).clamp(min=1e-30), gamma)
        running &= accepted & (f - f_new > ftol * f.abs().clamp(min=1.0))
        w, f, g = w_new, f_new, g_new
    out[index] = w
    W = out.view(P, d + 1, n_classes)
    return LogisticSolution(W[:, :d].contiguous(), W[:, d].contiguous(), present, n_iter)


def predict_logistic(solution: LogisticSolution, X: torch.Tensor) -> torch.Tensor:
    """``(P, n)`` predicted class index of every row under every problem."""
    with torch.no_grad():
        return solution.logits(X).argmax(-1)


@dataclass
class Moments:
    """Sufficient statistics of a ridge regression of ``Y (n, t)`` on ``X (n, d)``.

    They add up over disjoint sets of rows (and subtract), so the fit of any union of
    row blocks (folds, images) comes from per-block moments without revisiting the rows.
    """

    n: float
    sum_x: torch.Tensor  # (d,)
    sum_y: torch.Tensor  # (t,)
    xx: torch.Tensor  # (d, d)
    xy: torch.Tensor  # (d, t)

    @classmethod
    def of(cls, X: torch.Tensor, Y: torch.Tensor) -> Moments:
        X, Y = X.double(), Y.double()
        return cls(len(X), X.sum(0), Y.sum(0), X.T @ X, X.T @ Y)

    def _fields(self) -> tuple:
        return (self.n, self.sum_x, self.sum_y, self.xx, self.xy)

    def __add__(self, other: Moments) -> Moments:
        return Moments(*(a + b for a, b in zip(self._fields(), other._fields(), strict=True)))

    def __sub__(self, other: Moments) -> Moments:
        return Moments(*(a - b for a, b in zip(self._fields(), other._fields(), strict=True)))

    def standardized(self, mean: torch.Tensor, scale: torch.Tensor) -> Moments:
        """The moments of ``(X - mean) / scale`` and the same ``Y``."""
        inv = 1.0 / scale
        xx = self.xx - torch.outer(mean, self.sum_x) - torch.outer(self.sum_x, mean)
        xx = xx + self.n * torch.outer(mean, mean)
        return Moments(
            self.n,
            (self.sum_x - self.n * mean) * inv,
            self.sum_y,
            inv[:, None] * xx * inv[None, :],
            inv[:, None] * (self.xy - torch.outer(mean, self.sum_y)),
        )


def solve_ridge(m: Moments, alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression from moments for every penalty in ``alphas (A,)``.

    Minimises ``||Y - X W - b||^2 + alpha ||W||^2`` (scikit-learn's ``Ridge``: intercept
    not penalised) with one eigen-decomposition for all penalties. Returns ``coef
    (A, d, t)`` and ``intercept (A, t)`` in float64.
    """
    x_mean, y_mean = m.sum_x / m.n, m.sum_y / m.n
    gram = m.xx - m.n * torch.outer(x_mean, x_mean)  # centred X^T X
    cross = m.xy - m.n * torch.outer(x_mean, y_mean)  # centred X^T Y
    values, vectors = torch.linalg.eigh(gram)  # gram = V diag(values) V^T
    projected = vectors.T @ cross  # (d, t)
    scale = 1.0 / (values.clamp(min=0)[None, :] + alphas.to(gram)[:, None])  # (A, d)
    coef = torch.einsum("ij,aj,jt->ait", vectors, scale, projected)  # (A, d, t)
    intercept = y_mean[None, :] - torch.einsum("d,adt->at", x_mean, coef)  # (A, t)
    return coef, intercept


def fit_ridge(
    X: torch.Tensor, Y: torch.Tensor, alphas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression of ``Y (n, t)`` on ``X (n, d)`` for every penalty in ``alphas``;
    see :func:`solve_ridge`. Returns ``coef (A, d, t)``, ``intercept (A, t)`` in X's dtype."""
    coef, intercept = solve_ridge(Moments.of(X, Y), alphas)
    return coef.to(X.dtype), intercept.to(X.dtype)
