"""Per-window scores of an owner template: cosine, one-class SVM, and their fusion.

For one embedding window ``x`` (a unit vector) and a template:

- **cosine** ``c(x) = max_k <x, centroid_k> / |x|``: similarity to the nearest of
  the owner's states, each the normalised mean of that state's enrollment windows
  (eyes open, eyes closed, a mental task): a window is judged against the state
  the owner is most like at that moment, not against an average of states the
  owner is never in at once. Measured against the mean of the per-state cosines
  and one centroid of every window, on people never seen (docs/results.md);
- **svm** ``s(x)``: the one-class SVM decision (positive inside the owner's support);
- **fused** ``f(x) = ( (c(x) - mu_c) / sd_c + (s(x) - mu_s) / sd_s ) / 2``.

``mu`` and ``sd`` are the mean and standard deviation of that score over the
background cohort's (impostor) windows, measured for this template at enrollment
and stored in it. Each score is thus put in units of "standard deviations above a
typical impostor" before the two are averaged, so neither dominates by its scale.
Higher means more like the owner; an impostor window scores about 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import TemplateError
from .ocsvm import OneClassSvm

if TYPE_CHECKING:
    from .template import Template

_MIN_STD = 1e-6  # a score that is constant over the cohort still gets a finite scale


@dataclass(frozen=True)
class FusionStats:
    """Mean and standard deviation of each score over the cohort's windows, for one template."""

    cosine_mean: float
    cosine_std: float
    svm_mean: float
    svm_std: float

    def __post_init__(self) -> None:
        values = (self.cosine_mean, self.cosine_std, self.svm_mean, self.svm_std)
        if not all(np.isfinite(values)) or min(self.cosine_std, self.svm_std) < _MIN_STD:
            raise ValueError(
                f"fusion statistics must be finite with deviations of at least {_MIN_STD:g} (what "
                f"enrollment keeps), got {values}"
            )

    @classmethod
    def measure(cls, cosine: np.ndarray, svm: np.ndarray) -> FusionStats:
        """The statistics of impostor scores ``cosine (M,)`` and ``svm (M,)``."""
        return cls(
            cosine_mean=float(np.mean(cosine)),
            cosine_std=max(float(np.std(cosine)), _MIN_STD),
            svm_mean=float(np.mean(svm)),
            svm_std=max(float(np.std(svm)), _MIN_STD),
        )

    def fuse(self, cosine: np.ndarray, svm: np.ndarray) -> np.ndarray:
        """The fused score: the mean of the two z-normalised scores."""
        z_cos = (np.asarray(cosine) - self.cosine_mean) / self.cosine_std
        z_svm = (np.asarray(svm) - self.svm_mean) / self.svm_std
        return 0.5 * (z_cos + z_svm)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class WindowScores:
    """Scores of ``n`` windows, each ``(n,)`` float64."""

    cosine: np.ndarray
    svm: np.ndarray
    fused: np.ndarray

    def __len__(self) -> int:
        return len(self.fused)


def cosine_scores(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``x (n, D)`` to the nearest unit row of ``centroids (K, D)``."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(x, axis=1), 1e-12)  # (n,)
    return (x @ np.atleast_2d(centroids).T).max(axis=1) / norms  # (n, K) -> (n,)


def raw_scores(x: np.ndarray, centroids: np.ndarray, svm: OneClassSvm) -> tuple[np.ndarray, np.ndarray]:
    """``(cosine (n,), svm (n,))`` of the windows ``x (n, D)``, before fusion."""
    return cosine_scores(x, centroids), svm.decision_function(x)


def score_windows(template: Template, x: np.ndarray) -> WindowScores:
    """Cosine, SVM and fused scores of the embedding windows ``x (n, D)`` (or one window ``(D,)``)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != template.dim:
        raise TemplateError(
            f"the template of {template.user!r} holds {template.dim}-d embeddings but the windows to "
            f"score have shape {x.shape}; they come from another embedder. Enroll {template.user!r} "
            f"again with this checkpoint (`neuroauth enroll --user {template.user}`)."
        )
    cosine, svm = raw_scores(x, template.centroids, template.svm)
    return WindowScores(cosine=cosine, svm=svm, fused=template.fusion.fuse(cosine, svm))
