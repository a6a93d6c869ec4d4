from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from neuroauth.models.checkpoint import load_checkpoint, save_checkpoint
from neuroauth.models.embedders.resnet import ResNetConfig, ResNetEmbedder
from neuroauth.models.embedders.spectral import SpectralConfig, SpectralEmbedder
from neuroauth.models.embedders.spectral_metric import SpectralMetricConfig, SpectralMetricEmbedder


def test_resnet_gives_unit_vectors_and_reads_channels_as_planes():
    net = ResNetEmbedder(ResNetConfig(n_channels=4, depth=18, dim=32)).eval()
    assert net.backbone.conv1.kernel_size == (3, 3) and net.backbone.conv1.stride == (1, 1)
    assert isinstance(net.backbone.maxpool, torch.nn.Identity)
    with torch.no_grad():
        out = net(torch.randn(3, 4, 800))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_resnet_refuses_other_shapes_and_settings():
    net = ResNetEmbedder(ResNetConfig(n_channels=4)).eval()
    with pytest.raises(ValueError, match=r"\(batch, 4, 800\)"):
        net(torch.randn(2, 3, 800))
    with pytest.raises(ValueError, match="depth"):
        ResNetConfig(n_channels=4, depth=50)
    with pytest.raises(ValueError, match="800-sample"):
        ResNetConfig(n_channels=4, window=1000)


def _spectral(n_channels: int = 4) -> SpectralEmbedder:
    embedder = SpectralEmbedder(SpectralConfig(n_channels=n_channels, pca_dim=16))
    torch.manual_seed(0)
    embedder.projection.copy_(torch.randn_like(embedder.projection))
    return embedder.eval()


@pytest.mark.parametrize("fuse", [0.0, 0.3, 1.0])
def test_spectral_metric_cosine_is_the_weighted_sum_of_both_cosines(fuse):
    spectral = _spectral()
    config = SpectralMetricConfig(spectral=spectral.config, hidden=32, dim=8, fuse=fuse)
    net = SpectralMetricEmbedder(config, spectral).eval()
    a, b = torch.randn(5, 4, 800), torch.randn(5, 4, 800)
    with torch.no_grad():
        fused = (net(a) * net(b)).sum(1)
        s_a, s_b = spectral(a), spectral(b)
        learned = (net.learned(s_a) * net.learned(s_b)).sum(1)
    expected = fuse * (s_a * s_b).sum(1) + (1 - fuse) * learned
    assert torch.allclose(fused, expected, atol=1e-5)
    assert torch.allclose(net(a).norm(dim=1), torch.ones(5), atol=1e-5)


def test_spectral_metric_refuses_a_mismatched_spectral_part_and_weight():
    spectral = _spectral()
    other = dataclasses.replace(spectral.config, shrinkage=0.1)
    with pytest.raises(ValueError, match="does not match"):
        SpectralMetricEmbedder(SpectralMetricConfig(spectral=other), spectral)
    with pytest.raises(ValueError, match="fuse"):
        SpectralMetricConfig(spectral=spectral.config, fuse=1.5)


@pytest.mark.parametrize("kind", ["resnet", "spectral-metric"])
def test_learned_embedders_travel_in_the_checkpoint(kind, tiny_checkpoint, tmp_path):
    model = load_checkpoint(tiny_checkpoint)
    if kind == "resnet":
        embedder = ResNetEmbedder(ResNetConfig(n_channels=4, dim=16))
        embedder.input_scale.fill_(2.0)
    else:
        embedder = SpectralMetricEmbedder(
            SpectralMetricConfig(spectral=model.embedder.config, dim=8), model.embedder
        )
    with torch.no_grad():
        for p in embedder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model = dataclasses.replace(model, embedder=embedder.eval(), cohort=None)
    path = tmp_path / f"{kind}.pt"
    save_checkpoint(model, path)
    reloaded = load_checkpoint(path)
    assert reloaded.embedder_name == kind
    x = torch.randn(2, 4, 800)
    with torch.no_grad():
        assert torch.equal(F.normalize(model.embedder(x)), F.normalize(reloaded.embedder(x)))


def test_temporal_gives_unit_vectors_and_ignores_where_a_rhythm_falls():
    from neuroauth.models.embedders.temporal import TemporalConfig, TemporalEmbedder

    torch.manual_seed(0)
    net = TemporalEmbedder(TemporalConfig(n_channels=4)).eval()
    t = torch.arange(1600) / 200.0
    rhythm = torch.sin(2 * torch.pi * 10 * t).repeat(4, 1)  # 10 Hz on every channel
    chirp = torch.sin(2 * torch.pi * (4 + 3 * t) * t).repeat(4, 1)  # sweeping 4 -> 28 Hz
    with torch.no_grad():
        early, late = net(torch.stack([rhythm[:, :800], rhythm[:, 405:1205]]))
        other = net(chirp[None, :, :800])[0]
    assert torch.allclose(torch.stack([early.norm(), late.norm()]), torch.ones(2), atol=1e-5)
    # statistics pooling: the same rhythm a phase apart embeds alike, a different signal does not
    assert (early @ late) > 0.99 and (early @ late) > (early @ other) + 0.01
    with pytest.raises(ValueError, match=r"\(batch, 4, 800\)"):
        net(torch.randn(2, 4, 600))
    with pytest.raises(ValueError, match="positive"):
        TemporalConfig(n_channels=0)


def _temporal(n_channels: int = 4):
    from neuroauth.models.embedders.temporal import TemporalConfig, TemporalEmbedder

    torch.manual_seed(1)
    return TemporalEmbedder(TemporalConfig(n_channels=n_channels, dim=16)).eval()


@pytest.mark.parametrize("fuse", [0.0, 0.6, 1.0])
def test_fused_cosine_is_the_weighted_sum_of_the_spectral_and_learned_cosines(fuse):
    from neuroauth.models.embedders.fused import FusedConfig, FusedEmbedder

    spectral, learned = _spectral(), _temporal()
    net = FusedEmbedder(FusedConfig(spectral.config, "temporal", learned.config, fuse), spectral, learned)
    a, b = torch.randn(5, 4, 800), torch.randn(5, 4, 800)
    with torch.no_grad():
        fused = (net(a) * net(b)).sum(1)
        expected = fuse * (spectral(a) * spectral(b)).sum(1) + (1 - fuse) * (learned(a) * learned(b)).sum(1)
    assert torch.allclose(fused, expected, atol=1e-5)


def test_fused_refuses_parts_that_do_not_fit_together():
    from neuroauth.models.embedders.fused import FusedConfig

    spectral, learned = _spectral(), _temporal()
    with pytest.raises(ValueError, match="not one of"):
        FusedConfig(spectral.config, "eegnet", learned.config)
    with pytest.raises(ValueError, match="does not belong to a resnet"):
        FusedConfig(spectral.config, "resnet", learned.config)
    with pytest.raises(ValueError, match="same channels"):
        FusedConfig(spectral.config, "temporal", _temporal(3).config)


@pytest.mark.parametrize("kind", ["temporal", "fused"])
def test_temporal_and_fused_embedders_travel_in_the_checkpoint(kind, tiny_checkpoint, tmp_path):
    from neuroauth.models.embedders.fused import FusedConfig, FusedEmbedder

    model = load_checkpoint(tiny_checkpoint)
    learned = _temporal()
    learned.input_scale.fill_(3.0)
    with torch.no_grad():
        for p in learned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    embedder = learned
    if kind == "fused":
        config = FusedConfig(model.embedder.config, "temporal", learned.config, fuse=0.7)
        embedder = FusedEmbedder(config, model.embedder, learned)
    model = dataclasses.replace(model, embedder=embedder.eval(), cohort=None)
    save_checkpoint(model, tmp_path / "m.pt")
    reloaded = load_checkpoint(tmp_path / "m.pt")
    assert reloaded.embedder_name == kind
    assert reloaded.embedder.config == embedder.config
    x = torch.randn(2, 4, 800)
    with torch.no_grad():
        assert torch.equal(model.embedder(x), reloaded.embedder(x))
