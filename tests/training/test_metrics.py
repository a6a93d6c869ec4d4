from __future__ import annotations

import numpy as np
import pytest
from neuroauth.training.metrics import auroc, eer, moving_average, precision_at_k


def test_eer_of_separated_and_identical_distributions():
    assert eer(np.array([0.9, 0.8, 0.95]), np.array([0.1, 0.2, 0.3])) == 0.0
    rng = np.random.default_rng(0)
    same = rng.standard_normal(20000)
    assert abs(eer(same[:10000], same[10000:]) - 0.5) < 0.02


def test_eer_of_gaussians_matches_theory():
    # genuine N(2,1), impostor N(0,1): EER = Phi(-1) = 0.1587
    rng = np.random.default_rng(1)
    value = eer(rng.normal(2, 1, 200000), rng.normal(0, 1, 200000))
    assert abs(value - 0.1587) < 0.005


def test_auroc_and_precision_at_k():
    assert auroc(np.array([1.0, 2.0]), np.array([0.0, 3.0])) == 0.5
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1], [0.3, 0.2, 0.1]])
    truth = np.array([0, 1, 2])
    assert precision_at_k(scores, truth, 1) == pytest.approx(1 / 3)
    assert precision_at_k(scores, truth, 2) == pytest.approx(2 / 3)
    assert precision_at_k(scores, truth, 5) == 1.0


def test_moving_average():
    x = np.arange(6.0)[:, None]
    np.testing.assert_allclose(moving_average(x, 3)[:, 0], [1, 2, 3, 4])
    assert len(moving_average(x, 10)) == 0
