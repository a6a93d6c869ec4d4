from __future__ import annotations

import numpy as np
import pytest
from neuroauth.training.wccn import apply_projection, fit_projection, within_class_covariance

CENTRES = np.random.default_rng(42).standard_normal((8, 12)) * 3


def _people(rng, per=60):
    """Windows of 8 people: a centre each plus anisotropic within-person variability."""
    noise_shape = np.diag(np.linspace(0.2, 5, CENTRES.shape[1]))
    feats = np.concatenate([c + rng.standard_normal((per, CENTRES.shape[1])) @ noise_shape for c in CENTRES])
    return feats, np.repeat(np.arange(len(CENTRES)), per)


def test_full_wccn_whitens_within_person_variability():
    rng = np.random.default_rng(0)
    feats, labels = _people(rng)
    proj = fit_projection(feats, labels, dim=12, shrinkage=0.0)
    projected = ((feats - proj.mean) / proj.scale) @ proj.matrix
    np.testing.assert_allclose(within_class_covariance(projected, labels), np.eye(12), atol=1e-8)


def test_wccn_separates_people_better_than_raw_cosine():
    rng = np.random.default_rng(1)
    feats, labels = _people(rng)
    proj = fit_projection(feats, labels, dim=12, shrinkage=0.1)
    test_feats, test_labels = _people(np.random.default_rng(2))  # same people, fresh windows

    def nn_accuracy(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return (test_labels[sims.argmax(1)] == test_labels).mean()

    z = (test_feats - proj.mean) / proj.scale
    assert nn_accuracy(apply_projection(test_feats, proj)) > nn_accuracy(z)


def test_one_subject_is_refused():
    with pytest.raises(ValueError, match="two subjects"):
        fit_projection(np.ones((5, 3)), np.zeros(5), 2, 0.5)
