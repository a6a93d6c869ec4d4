from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from neuroauth.models.embedders.spectral import SpectralConfig, SpectralEmbedder, SpectralFeatures


def test_feature_count_and_embedding_is_unit_length():
    emb = SpectralEmbedder(SpectralConfig(n_channels=4, pca_dim=16))
    assert emb.features.n_features == 4 * 40 + 2 * 4 * 5 + 2 * 5 * 6
    out = emb(torch.randn(3, 4, 800))
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_wrong_window_shape_names_the_expected_shape():
    emb = SpectralEmbedder(SpectralConfig(n_channels=4))
    with pytest.raises(ValueError, match=r"\(batch, 4, 800\)"):
        emb(torch.randn(2, 19, 800))


def test_psd_peaks_at_the_sine_frequency_and_coherence_sees_shared_signal():
    cfg = SpectralConfig(n_channels=2)
    feats = SpectralFeatures(cfg)
    t = torch.arange(800) / 200.0
    rng = np.random.default_rng(0)
    shared = torch.sin(2 * math.pi * 10 * t)
    x = torch.stack(
        [
            shared + 0.1 * torch.as_tensor(rng.standard_normal(800)).float(),
            torch.as_tensor(rng.standard_normal(800)).float(),
        ]
    )[None]
    out = feats(x)[0]
    psd0 = out[:40]  # channel 0, 1..40 Hz
    assert int(psd0.argmax()) + 1 == 10
    coh = out[-10:-5]  # |coherency| per band for the one pair
    # independent noise on channel 1: coherence is low everywhere
    assert coh.max() < 0.6
    y = torch.stack([shared, torch.roll(shared, 5)])[None]  # lagged copy: strong, imaginary coupling
    out_y = feats(y)[0]
    assert out_y[-10:-5][2] > 0.95  # alpha band magnitude
    assert abs(out_y[-5:][2]) > 0.5  # alpha band imaginary part
