"""A one-class SVM with an RBF kernel, kept as plain arrays and evaluated in numpy.

scikit-learn (libsvm) fits the model; the fitted model is reduced to its support
vectors, dual coefficients and intercept, so a template stores numbers only and
scoring needs neither scikit-learn nor unpickling. The decision function is
scikit-learn's own convention::

    f(x) = sum_i alpha_i * exp(-gamma * ||x - sv_i||^2) + intercept

where ``alpha = OneClassSVM.dual_coef_[0]`` and ``intercept = OneClassSVM.intercept_[0]``
(which is ``-rho`` of libsvm, i.e. ``-offset_``). Positive values lie inside the
learnt support of the owner's windows, negative values outside.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# Bound on the elements of one (rows, support vectors) kernel block held in memory at a time.
_BLOCK_ELEMENTS = 1 << 22  # 4 Mi float64 = 32 MiB


@dataclass(frozen=True, eq=False)
class OneClassSvm:
    """A fitted RBF one-class SVM: ``f(x) = dual_coef . exp(-gamma |x - sv|^2) + intercept``."""

    support_vectors: np.ndarray  # (S, D) float64
    dual_coef: np.ndarray  # (S,) float64
    intercept: float
    gamma: float
    nu: float

    def __post_init__(self) -> None:
        sv, coef = self.support_vectors, self.dual_coef
        if sv.ndim != 2 or len(sv) == 0 or coef.shape != (len(sv),):
            raise ValueError(
                f"one-class SVM arrays disagree: support vectors {sv.shape}, dual coefficients {coef.shape}"
            )
        if not (self.gamma > 0 and 0 < self.nu <= 1):
            raise ValueError(f"one-class SVM needs gamma > 0 and 0 < nu <= 1 (got {self.gamma}, {self.nu})")

    @property
    def dim(self) -> int:
        return self.support_vectors.shape[1]

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Signed distance to the boundary for each row of ``x (n, D)``; ``(n,)`` float64.

        Evaluated in blocks of rows so memory stays bounded whatever ``n``.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected windows of shape (n, {self.dim}), got {x.shape}")
        sv = self.support_vectors
        sv_sq = np.einsum("ij,ij->i", sv, sv)  # (S,)
        rows = max(1, _BLOCK_ELEMENTS // max(len(sv), self.dim))
        out = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), rows):
            block = np.asarray(x[start : start + rows], dtype=np.float64)  # (b, D)
            d2 = (
                np.einsum("ij,ij->i", block, block)[:, None] + sv_sq[None, :] - 2.0 * (block @ sv.T)
            )  # (b, S)
            np.maximum(d2, 0.0, out=d2)
            out[start : start + rows] = np.exp(-self.gamma * d2) @ self.dual_coef + self.intercept
        return out


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))`` between rows, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def fit_ocsvm(x: np.ndarray, nu: float, gamma: float) -> OneClassSvm:
    """Fit an RBF one-class SVM on the rows of ``x (n, D)`` and keep its arrays."""
    from sklearn.svm import OneClassSVM

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"a one-class SVM needs at least two windows of shape (n, D), got {x.shape}")
    model = OneClassSVM(kernel="rbf", nu=nu, gamma=gamma).fit(x)
    return OneClassSvm(
        support_vectors=np.ascontiguousarray(x[model.support_]),
        dual_coef=np.asarray(model.dual_coef_[0], dtype=np.float64).copy(),
        intercept=float(model.intercept_[0]),
        gamma=float(gamma),
        nu=float(nu),
    )


@dataclass(frozen=True, eq=False)
class KernelFit:
    """A one-class SVM fitted on a precomputed kernel matrix, as indices into its training rows."""

    support: np.ndarray  # (S,) int: rows of the training set that are support vectors
    dual_coef: np.ndarray  # (S,) float64
    intercept: float

    def decision(self, kernel: np.ndarray) -> np.ndarray:
        """Decision values from a kernel block ``(rows, n_train)`` against the training rows, ``(rows,)``."""
        return kernel[:, self.support] @ self.dual_coef + self.intercept


def fit_kernel(kernel: np.ndarray, nu: float) -> KernelFit:
    """Fit on a precomputed kernel matrix ``(n, n)``: the same model as :func:`fit_ocsvm` when
    ``kernel = exp(-gamma |x_i - x_j|^2)``, without recomputing distances for each setting."""
    from sklearn.svm import OneClassSVM

    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or len(kernel) < 2:
        raise ValueError(f"expected a square kernel matrix of at least two windows, got {kernel.shape}")
    model = OneClassSVM(kernel="precomputed", nu=nu).fit(kernel)
    return KernelFit(
        support=np.asarray(model.support_, dtype=np.int64),
        dual_coef=np.asarray(model.dual_coef_[0], dtype=np.float64).copy(),
        intercept=float(model.intercept_[0]),
    )
