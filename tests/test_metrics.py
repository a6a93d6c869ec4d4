from __future__ import annotations

import numpy as np
import pytest

from neuroauth.metrics import auroc, eer, moving_average, precision_at_k


def test_eer_of_separated_and_identical_distributions():
    assert eer(np.array([0.9, 0.8, 0.95]), np.array([0.1, 0.2, 0.3])) == 0.0
    rng = np.random.default_rng(0)
    same = rng.standard_normal(20000)
    assert abs(eer(same[:10000], same[10000:]) - 0.5) < 0.02


def test_eer_on_a_small_sample_with_a_known_crossing():
    # at threshold 0.6 one impostor (0.8) is accepted and one genuine (0.2) rejected: 1/4 each
    assert eer(np.array([0.2, 0.6, 0.7, 0.9]), np.array([0.1, 0.3, 0.5, 0.8])) == pytest.approx(0.25)


def test_eer_lies_between_the_rates_at_the_thresholds_around_the_crossing():
    rng = np.random.default_rng(3)
    for _ in range(50):
        genuine, impostor = rng.normal(1, 1, rng.integers(3, 15)), rng.normal(0, 1, rng.integers(3, 40))
        thresholds = np.sort(np.concatenate([genuine, impostor]))
        far = np.array([(impostor >= t).mean() for t in thresholds])
        frr = np.array([(genuine < t).mean() for t in thresholds])
        k = int(np.argmax(far - frr <= 0))  # first threshold where FAR <= FRR
        lo = min(far[k], frr[k], far[k - 1], frr[k - 1]) if k else 0.0
        hi = max(far[k], frr[k], far[k - 1], frr[k - 1]) if k else 1.0
        assert lo - 1e-12 <= eer(genuine, impostor) <= hi + 1e-12


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
    assert precision_at_k(scores, truth, 3) is None  # 3 templates: top 3 always holds the truth


def test_moving_average():
    x = np.arange(6.0)[:, None]
    np.testing.assert_allclose(moving_average(x, 3)[:, 0], [1, 2, 3, 4])
    assert len(moving_average(x, 10)) == 0
