from __future__ import annotations

import numpy as np
import pytest
from neuroauth.enroll import ocsvm
from neuroauth.enroll.ocsvm import fit_kernel, fit_ocsvm, squared_distances
from sklearn.svm import OneClassSVM


@pytest.mark.parametrize("nu", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("gamma", [0.05, 0.5, 3.0])
def test_numpy_decision_equals_scikit_learn(nu, gamma):
    rng = np.random.default_rng(int(nu * 1000 + gamma * 10))
    train = rng.normal(size=(120, 16))
    probes = np.concatenate([rng.normal(size=(150, 16)), rng.normal(3.0, 1.0, size=(50, 16))])
    reference = OneClassSVM(kernel="rbf", nu=nu, gamma=gamma).fit(train)
    model = fit_ocsvm(train, nu, gamma)
    np.testing.assert_array_equal(model.support_vectors, reference.support_vectors_)
    np.testing.assert_allclose(
        model.decision_function(probes), reference.decision_function(probes), atol=1e-9
    )
    assert model.decision_function(probes).shape == (200,)


def test_blocked_evaluation_equals_one_block(monkeypatch):
    rng = np.random.default_rng(7)
    model = fit_ocsvm(rng.normal(size=(60, 10)), 0.2, 0.3)
    probes = rng.normal(size=(97, 10)).astype(np.float32)
    whole = model.decision_function(probes)
    monkeypatch.setattr(ocsvm, "_BLOCK_ELEMENTS", 5 * model.dim)  # 5 rows per block
    np.testing.assert_allclose(model.decision_function(probes), whole, atol=1e-12)


def test_sign_convention_inside_positive_outside_negative():
    rng = np.random.default_rng(1)
    model = fit_ocsvm(rng.normal(size=(200, 4)), 0.1, 0.5)
    inside, outside = (
        model.decision_function(np.zeros((1, 4)))[0],
        model.decision_function(np.full((1, 4), 6.0))[0],
    )
    assert inside > 0 > outside


def test_fit_on_a_precomputed_kernel_gives_the_same_model():
    rng = np.random.default_rng(2)
    train, probes, gamma = rng.normal(size=(80, 12)), rng.normal(size=(40, 12)), 0.2
    direct = fit_ocsvm(train, 0.1, gamma)
    fit = fit_kernel(np.exp(-gamma * squared_distances(train, train)), 0.1)
    via_kernel = fit.decision(np.exp(-gamma * squared_distances(probes, train)))
    np.testing.assert_allclose(via_kernel, direct.decision_function(probes), atol=1e-9)
    np.testing.assert_array_equal(train[fit.support], direct.support_vectors)


def test_wrong_dimension_is_refused():
    model = fit_ocsvm(np.random.default_rng(3).normal(size=(30, 5)), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        model.decision_function(np.zeros((3, 6)))
