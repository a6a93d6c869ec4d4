"""Tests of the Mamba block: layout of mamba_ssm / mambapy, scan, streaming, causality."""

from __future__ import annotations

import math

import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig
from neuroauth.models import ssm
from neuroauth.models.ssm import (
    KERNELS_AVAILABLE,
    Mamba,
    MambaState,
    selective_scan,
    selective_scan_reference,
    selective_scan_sequential,
)

ATOL = 1e-5

# (d_model, d_state, d_conv, expand): dt_rank is the default ceil(d_model / 16) in both.
CONFIGS = [(16, 16, 4, 2), (40, 8, 3, 2), (8, 4, 1, 1)]


def make_pair(
    d_model: int, d_state: int, d_conv: int, expand: int, pscan: bool = True
) -> tuple[Mamba, MambaBlock]:
    """Our block with random weights and mambapy's block holding the same weights."""
    torch.manual_seed(0)
    ours = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    with torch.no_grad():  # move away from the init so that every parameter matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    cfg = MambaConfig(
        d_model=d_model,
        n_layers=1,
        d_state=d_state,
        d_conv=d_conv,
        expand_factor=expand,
        pscan=pscan,
    )
    theirs = MambaBlock(cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def random_scan_inputs(
    batch: int, length: int, d_inner: int, d_state: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, length, d_inner, generator=g),
        "delta": torch.nn.functional.softplus(torch.randn(batch, length, d_inner, generator=g)),
        "A": -torch.exp(torch.randn(d_inner, d_state, generator=g)),
        "B": torch.randn(batch, length, d_state, generator=g),
        "C": torch.randn(batch, length, d_state, generator=g),
        "D": torch.randn(d_inner, generator=g),
        "z": torch.randn(batch, length, d_inner, generator=g),
        "initial_state": torch.randn(batch, d_inner, d_state, generator=g),
    }


def run_in_chunks(model: Mamba, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    state = model.allocate_state(x.shape[0])
    outputs, start = [], 0
    for size in sizes:
        y, state = model.step(x[:, start : start + size], state)
        outputs.append(y)
        start += size
    assert start == x.shape[1]
    return torch.cat(outputs, dim=1)


# ----------------------------------------------------------------------- layout


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_matches_mambapy(config: tuple[int, int, int, int]) -> None:
    d_model, d_state, d_conv, expand = config
    ours = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand).state_dict()
    cfg = MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, d_conv=d_conv, expand_factor=expand)
    theirs = MambaBlock(cfg).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert set(ours) == {
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
        "out_proj.weight",
    }


def test_initialisation() -> None:
    torch.manual_seed(0)
    m = Mamba(32, d_state=16, dt_min=0.001, dt_max=0.1)
    assert m.dt_rank == math.ceil(32 / 16) and m.d_inner == 64
    a = torch.arange(1, 17, dtype=torch.float32).repeat(64, 1)
    torch.testing.assert_close(m.A_log.detach(), torch.log(a))
    torch.testing.assert_close(m.D.detach(), torch.ones(64))
    dt = torch.nn.functional.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= m.dt_rank**-0.5


@pytest.mark.skipif(
    not (KERNELS_AVAILABLE and torch.cuda.is_available()),
    reason="needs CUDA with mamba-ssm and causal-conv1d",
)
def test_cuda_kernels_match_the_pytorch_path_with_one_state_dict() -> None:
    ours, _ = make_pair(16, 16, 4, 2)
    x = torch.randn(2, 300, 16)
    with torch.no_grad():
        reference = ours(x)  # CPU: the pure-PyTorch scan
        on_gpu = ours.cuda()
        kernels = on_gpu(x.cuda()).cpu()  # CUDA: mamba_ssm's kernels, same parameters
    torch.testing.assert_close(kernels, reference, atol=1e-3, rtol=1e-3)


def test_the_cuda_kernels_are_chosen_only_when_both_import_and_the_model_is_on_a_cuda_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def given(kernels_error: str | None, cuda: bool) -> None:
        monkeypatch.setattr(ssm, "kernels_import_error", lambda: kernels_error)
        monkeypatch.setattr(ssm, "cuda_available", lambda: cuda)

    given(None, cuda=True)  # mamba-ssm and causal-conv1d import, torch sees a GPU
    path = ssm.scan_path("cuda:0")
    assert (
        path.kernels and str(path) == "Mamba: the fused CUDA kernels of mamba-ssm and causal-conv1d on cuda:0"
    )
    path = ssm.scan_path("cpu")
    assert not path.kernels and path.reason == "the model is on cpu, not on a CUDA device", path

    given(None, cuda=False)
    path = ssm.scan_path("cuda")
    assert not path.kernels and path.reason == "the model is on cuda but torch sees no CUDA device", path

    missing = "ModuleNotFoundError: No module named 'mamba_ssm'"
    given(missing, cuda=True)
    path = ssm.scan_path("cuda:0")
    assert not path.kernels, path
    assert str(path) == (
        f"Mamba: the pure-PyTorch scan on cuda:0 (mamba-ssm and causal-conv1d, the gpu extra, do not "
        f"import: {missing})"
    )
    given(missing, cuda=False)
    path = ssm.scan_path("cpu")  # the daemon's case on a machine without the extra: both reasons
    assert not path.kernels and path.reason.endswith("; the model is on cpu, not on a CUDA device"), path


def test_forward_runs_the_path_chosen_and_the_pytorch_one_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    block, _ = make_pair(16, 8, 4, 2)
    x = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        default = block(x)
        streamed, _ = block.step(x, block.allocate_state(2))
    assert torch.equal(default, streamed)  # the PyTorch path: forward is step from the zero state
    assert not ssm.scan_path(x.device).kernels

    sentinel = torch.full_like(x, 7.0)
    monkeypatch.setattr(ssm.Mamba, "_forward_kernels", lambda self, x: sentinel)
    monkeypatch.setattr(ssm, "scan_path", lambda device: ssm.ScanPath(True, str(device), "chosen"))
    assert block(x) is sentinel


# ----------------------------------------------------------------------- against mambapy


@pytest.mark.parametrize("pscan", [True, False])
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_mambapy(config: tuple[int, int, int, int], pscan: bool) -> None:
    ours, theirs = make_pair(*config, pscan=pscan)
    x = torch.randn(3, 50, config[0], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_step_matches_mambapy_step(config: tuple[int, int, int, int]) -> None:
    ours, theirs = make_pair(*config)
    d_model, _, d_conv, _ = config
    x = torch.randn(2, 30, d_model, generator=torch.Generator().manual_seed(2))
    state = ours.allocate_state(2)
    # mambapy's cache: (h, last d_conv - 1 conv inputs); h=None means zeros.
    cache = (None, torch.zeros(2, ours.d_inner, d_conv - 1))
    with torch.no_grad():
        for t in range(x.shape[1]):
            expected, cache = theirs.step(x[:, t], cache)  # (B, D)
            got, state = ours.step(x[:, t : t + 1], state)  # (B, 1, D)
            torch.testing.assert_close(got[:, 0], expected, atol=ATOL, rtol=0)
            torch.testing.assert_close(state.ssm_state, cache[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(state.conv_state, cache[1], atol=ATOL, rtol=0)


# ----------------------------------------------------------------------- scan


@pytest.mark.parametrize("scan", [selective_scan, selective_scan_sequential])
@pytest.mark.parametrize("length", [1, 2, 5, 64, 257])
@pytest.mark.parametrize("with_initial_state", [True, False])
def test_scans_match_reference(scan, length: int, with_initial_state: bool) -> None:
    inputs = random_scan_inputs(3, length, 6, 5, seed=length)
    if not with_initial_state:
        inputs["initial_state"] = None
    y, last = scan(**inputs)
    y_ref, last_ref = selective_scan_reference(**inputs)
    assert y.shape == (3, length, 6) and last.shape == (3, 6, 5)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=ATOL, rtol=0)


def test_parallel_scan_gradients_match_reference() -> None:
    inputs = random_scan_inputs(2, 45, 4, 3, seed=3)
    grads = []
    for fn in (selective_scan, selective_scan_reference):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        y, last = fn(**leaves)
        (y.square().sum() + last.sum()).backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for name in inputs:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-5)


def test_parallel_scan_gradcheck_float64() -> None:
    inputs = random_scan_inputs(2, 11, 3, 2, seed=4)
    args = tuple(v.double().requires_grad_() for v in inputs.values())
    assert torch.autograd.gradcheck(selective_scan, args)


@pytest.mark.parametrize("scan", [selective_scan, selective_scan_sequential])
def test_scans_stable_for_long_strongly_decaying_sequences(scan) -> None:
    inputs = random_scan_inputs(1, 3000, 4, 4, seed=5)
    inputs["A"] = inputs["A"] * 50.0  # exp(delta * A) underflows towards 0: must stay finite
    y, last = scan(**inputs)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    y_ref, _ = selective_scan_reference(**{k: v for k, v in inputs.items()})
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------- streaming, causality


@pytest.mark.parametrize("chunk", ["1", "7", "100", "random"])
def test_chunked_step_equals_forward(chunk: str) -> None:
    ours, _ = make_pair(16, 16, 4, 2)
    length = 800
    x = torch.randn(2, length, 16, generator=torch.Generator().manual_seed(6))
    if chunk == "random":
        g = torch.Generator().manual_seed(7)
        sizes: list[int] = []
        while sum(sizes) < length:
            sizes.append(min(int(torch.randint(1, 60, (1,), generator=g)), length - sum(sizes)))
    else:
        n = int(chunk)
        sizes = [n] * (length // n) + ([length % n] if length % n else [])
    with torch.no_grad():
        whole = ours(x)
        chunked = run_in_chunks(ours, x, sizes)
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=0)


def test_step_returns_new_state_and_leaves_old_one() -> None:
    ours, _ = make_pair(16, 16, 4, 2)
    x = torch.randn(2, 10, 16)
    state = ours.allocate_state(2)
    with torch.no_grad():
        _, new = ours.step(x, state)
    assert isinstance(new, MambaState)
    assert new.conv_state.shape == (2, ours.d_inner, 3)
    assert new.ssm_state.shape == (2, ours.d_inner, 16)
    assert state.conv_state.abs().sum() == 0 and state.ssm_state.abs().sum() == 0
    assert new.ssm_state.abs().sum() > 0


@pytest.mark.parametrize("t", [1, 17, 63])
def test_causal(t: int) -> None:
    ours, _ = make_pair(16, 16, 4, 2)
    x = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(8))
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    x2[:, t] += 1.0  # changes from t on: outputs before t must not move
    with torch.no_grad():
        y, y2 = ours(x), ours(x2)
    assert torch.equal(y[:, :t], y2[:, :t])
    assert not torch.allclose(y[:, t:], y2[:, t:])


def test_gradients_flow_to_all_parameters() -> None:
    ours, _ = make_pair(16, 16, 4, 2)
    ours.train()
    x = torch.randn(2, 40, 16, requires_grad=True)
    y, state = ours.step(x, ours.allocate_state(2))
    (y.square().mean() + state.ssm_state.square().mean()).backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_inference_steps_the_recurrence_and_training_differentiates_the_parallel_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    block, x = Mamba(8, d_state=4, d_conv=3, expand=2), torch.randn(2, 30, 8)
    used = []
    for name in ("selective_scan", "selective_scan_sequential"):
        original = getattr(ssm, name)
        monkeypatch.setattr(ssm, name, lambda *a, _f=original, _n=name, **k: used.append(_n) or _f(*a, **k))
    block(x).sum().backward()
    with torch.no_grad():
        block(x)
    assert used == ["selective_scan", "selective_scan_sequential"]
