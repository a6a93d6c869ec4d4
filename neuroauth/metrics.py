"""Verification and identification metrics on score matrices: shared by training, enrollment and the study."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate: where the false-accept and false-reject rates cross."""
    fpr, fnr, _ = det_curve(genuine, impostor)
    # thresholds descend: fpr - fnr rises from -1 to +1; find where it stops being negative
    diff = fpr - fnr
    k = int(np.argmax(diff >= 0))
    if diff[k] == 0 or k == 0:
        return float((fpr[k] + fnr[k]) / 2)
    # the crossing lies between points k-1 and k: interpolate both rates linearly there
    t = -diff[k - 1] / (diff[k] - diff[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-accept rate, false-reject rate and thresholds, threshold descending."""
    labels, scores = _labelled(genuine, impostor)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return fpr, 1.0 - tpr, thresholds


def auroc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    labels, scores = _labelled(genuine, impostor)
    return float(roc_auc_score(labels, scores))


def _labelled(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    genuine, impostor = np.ravel(genuine), np.ravel(impostor)
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("metrics need at least one genuine and one impostor score")
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    return labels, np.concatenate([genuine, impostor])


def precision_at_k(scores: np.ndarray, truth: np.ndarray, k: int) -> float | None:
    """Share of probes whose own template is among the ``k`` best-scoring ones.

    ``scores`` is ``(n_probes, n_templates)``, ``truth`` the template index of each probe.
    None when there are no more than ``k`` templates (every probe would count).
    """
    if k >= scores.shape[1]:
        return None
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == truth[:, None]).any(axis=1).mean())


def moving_average(scores: np.ndarray, k: int) -> np.ndarray:
    """Means of ``k`` consecutive rows of ``(n_windows, ...)``; empty when too few windows."""
    if len(scores) < k:
        return scores[:0]
    cumulative = np.cumsum(np.concatenate([np.zeros_like(scores[:1]), scores]), axis=0)
    return (cumulative[k:] - cumulative[:-k]) / k
