from __future__ import annotations

import math

import pytest
import torch
from neuroauth.models.denoiser import CausalDenoiser, DenoiserConfig, DenoiserState, si_snr


def _trained_looking(config: DenoiserConfig) -> CausalDenoiser:
    """A denoiser with random (non-identity) weights, so tests see real computation."""
    torch.manual_seed(0)
    net = CausalDenoiser(config)
    for p in net.head[-1].parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


@pytest.mark.parametrize("use_mamba", [True, False])
def test_shapes_and_initial_identity(use_mamba):
    net = CausalDenoiser(DenoiserConfig(use_mamba=use_mamba))
    x = torch.randn(2, 4, 300)
    assert torch.equal(net(x), x)  # the head's last layer starts at zero
    assert _trained_looking(DenoiserConfig(use_mamba=use_mamba))(x).shape == (2, 4, 300)


def test_wrong_input_rank_is_refused():
    with pytest.raises(ValueError, match="batch, channels, time"):
        CausalDenoiser()(torch.randn(4, 300))


@pytest.mark.parametrize("use_mamba", [True, False])
def test_output_at_t_ignores_input_after_t(use_mamba):
    net = _trained_looking(DenoiserConfig(use_mamba=use_mamba))
    x = torch.randn(1, 3, 400)
    y = net(x)
    x2 = x.clone()
    x2[..., 250:] = torch.randn(1, 3, 150) * 10
    y2 = net(x2)
    assert torch.allclose(y[..., :250], y2[..., :250], atol=1e-6)
    assert not torch.allclose(y[..., 250:], y2[..., 250:])


@pytest.mark.parametrize("use_mamba", [True, False])
def test_streaming_step_equals_forward(use_mamba):
    net = _trained_looking(DenoiserConfig(use_mamba=use_mamba))
    x = torch.randn(2, 4, 900)
    with torch.no_grad():
        whole = net(x)
        drawn = torch.randint(1, 60, (200,), generator=torch.Generator().manual_seed(1)).tolist()
        random_sizes = _partition(900, drawn)
        for sizes in ([1] * 30 + [870], [7] * 128 + [4], [100] * 9, [800, 100], random_sizes):
            assert sum(sizes) == 900
            state = net.allocate_state(2, 4)
            parts, i = [], 0
            for n in sizes:
                y, state = net.step(x[..., i : i + n], state)
                parts.append(y)
                i += n
            assert (torch.cat(parts, -1) - whole).abs().max().item() <= 1e-5


def _partition(total: int, sizes: list[int]) -> list[int]:
    """``sizes`` cut short or topped up so that they sum to ``total``."""
    out, left = [], total
    for n in sizes:
        if left <= 0:
            break
        out.append(min(n, left))
        left -= out[-1]
    return out + ([left] if left > 0 else [])


@pytest.mark.parametrize("use_mamba", [True, False])
def test_batched_step_of_joined_states_equals_separate_steps(use_mamba):
    """Streams stepped together (states joined with ``cat``) give what each gives alone."""
    net = _trained_looking(DenoiserConfig(use_mamba=use_mamba))
    torch.manual_seed(2)
    streams = [torch.randn(1, 3, 250) for _ in range(3)]
    offsets = (10, 50, 90)  # each stream is first advanced on its own by a different amount
    with torch.no_grad():
        alone = [net(s) for s in streams]
        states = [
            net.step(s[..., :n], net.allocate_state(1, 3))[1] for s, n in zip(streams, offsets, strict=True)
        ]
        tails = torch.cat([s[..., n : n + 100] for s, n in zip(streams, offsets, strict=True)])
        joint, state = net.step(tails, DenoiserState.cat(states))
        parts = state.split(3)
    assert len(parts) == 3
    for i, n in enumerate(offsets):
        assert (joint[i : i + 1] - alone[i][..., n : n + 100]).abs().max().item() <= 1e-5
        with torch.no_grad():
            rest, _ = net.step(streams[i][..., n + 100 :], parts[i])
        assert (rest - alone[i][..., n + 100 :]).abs().max().item() <= 1e-5


def test_channels_are_denoised_independently():
    net = _trained_looking(DenoiserConfig())
    x = torch.randn(1, 4, 200)
    alone = net(x[:, 2:3])
    assert torch.allclose(net(x)[:, 2:3], alone, atol=1e-6)


def test_si_snr_hand_computed_values():
    ref = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert si_snr(3 * ref, ref).item() > 70  # scaling is not an error
    noise = torch.tensor([1.0, 1.0, -1.0, -1.0])  # orthogonal to ref, zero mean, same energy
    assert math.isclose(si_snr(ref + noise, ref).item(), 0.0, abs_tol=1e-4)
    assert math.isclose(si_snr(ref + 0.1 * noise, ref).item(), 20.0, abs_tol=1e-4)
    # an offset is removed before comparing
    assert math.isclose(si_snr(ref + 0.5 * noise + 7.0, ref).item(), 20 * math.log10(2), abs_tol=1e-4)
