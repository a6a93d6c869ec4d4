from __future__ import annotations

import numpy as np
import pytest
import torch
from neuroauth.models.embedders.fused import FusedConfig, FusedEmbedder
from neuroauth.models.embedders.resnet import ResNetConfig, ResNetEmbedder
from neuroauth.models.embedders.spectral import SpectralConfig, SpectralEmbedder
from neuroauth.models.embedders.spectral_metric import SpectralMetricConfig, SpectralMetricEmbedder
from neuroauth.models.embedders.temporal import TemporalConfig, TemporalEmbedder
from neuroauth.training.study.quantization import int8_copy, stored_bytes


def _resnet() -> ResNetEmbedder:
    torch.manual_seed(0)
    return ResNetEmbedder(ResNetConfig(n_channels=4, dim=32)).eval()


def _spectral_metric() -> SpectralMetricEmbedder:
    torch.manual_seed(0)
    spectral = SpectralEmbedder(SpectralConfig(n_channels=4, pca_dim=16))
    spectral.projection.copy_(torch.randn_like(spectral.projection))
    return SpectralMetricEmbedder(SpectralMetricConfig(spectral=spectral.config, fuse=0.0), spectral).eval()


def _temporal() -> TemporalEmbedder:
    torch.manual_seed(0)
    return TemporalEmbedder(TemporalConfig(n_channels=4)).eval()


def _fused_resnet() -> FusedEmbedder:
    spectral, learned = _spectral_metric().spectral, _resnet()
    config = FusedConfig(spectral.config, "resnet", learned.config, 0.2)
    return FusedEmbedder(config, spectral, learned).eval()


@pytest.mark.parametrize("make", [_resnet, _spectral_metric, _temporal, _fused_resnet])
def test_an_int8_copy_is_smaller_and_points_the_same_way(make):
    embedder = make()
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((64, 4, 800))
    x = torch.as_tensor(rng.standard_normal((8, 4, 800)), dtype=torch.float32)
    with torch.no_grad():
        original = embedder(x)
    quantised = int8_copy(embedder, calibration)
    with torch.no_grad():
        cosine = (quantised(x) * original).sum(1)
    assert cosine.min() > 0.98
    assert stored_bytes(quantised) < 0.5 * stored_bytes(embedder)
    with torch.no_grad():
        assert torch.equal(embedder(x), original)  # the float model is left untouched


def test_an_int8_resnet_needs_calibration_windows():
    with pytest.raises(ValueError, match="calibration windows"):
        int8_copy(_resnet(), None)


def test_the_learned_part_of_a_fused_embedder_needs_calibration_windows_too():
    with pytest.raises(ValueError, match="int8 resnet embedder needs calibration windows"):
        int8_copy(_fused_resnet(), np.zeros((0, 4, 800)))
