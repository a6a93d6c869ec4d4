"""Mamba-1 block (selective state space model) for the causal denoiser.

Every channel ``e`` of the expanded input ``u`` drives its own diagonal state space
model with ``N = d_state`` states::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      (zero-order hold on A,
    y_t = <C_t, h_t> + D * u_t                                   Euler step on B)

``A`` (negative, per channel and state) is a learned parameter; the step size ``delta``
and the projections ``B`` and ``C`` are computed from the input ("selective"), so the
recurrence is linear but time-varying.  Around it sit an input projection to two
branches ``x`` and ``z``, a short causal depthwise convolution and SiLU on ``x``, the
gate ``y * silu(z)`` and an output projection (Gu & Dao, 2023, figure 3).

The recurrence ``h_t = a_t * h_{t-1} + b_t`` is evaluated with a Hillis-Steele parallel
scan over the associative operator ``(a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2)``:
``ceil(log2(T))`` vectorised steps, only products of factors in ``(0, 1]`` (no
exponential of a positive cumulative sum), and a backward pass that is itself one
reverse scan.  Inference, which needs no gradient, steps the recurrence itself instead
(:func:`selective_scan_sequential`): one pass over the state per step, where the parallel
scan's ``log2(T)`` passes over every step's state cost more as soon as a batch of streams
outgrows the caches.  All computation lives in :meth:`Mamba.step`, which continues from a
:class:`MambaState`; :meth:`Mamba.forward` is ``step`` from the zero state, so chunked
streaming and whole-sequence processing give the same result.

Parameter names equal those of ``mamba_ssm.modules.mamba_simple.Mamba``, so a state
dict loads here and there.  The pure-PyTorch scan is the default.  :meth:`Mamba.forward`
uses the fused kernels of ``mamba_ssm`` and ``causal_conv1d`` (the ``gpu`` extra) only
when both import and the input is on a CUDA device (:func:`scan_path` says which and
why); :meth:`Mamba.step`, the streaming path, is always the PyTorch recurrence, since the
kernels take no initial state.
"""

# ruff: noqa: N803, N806  (A, B, C, D, dA, dBu: the names of the SSM papers)
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

logger = logging.getLogger(__name__)

try:  # the gpu extra; a wheel built for another torch or CUDA fails here too (ImportError, OSError)
    from causal_conv1d import causal_conv1d_fn
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    KERNELS_IMPORT_ERROR: str | None = None
except (ImportError, OSError) as _error:
    causal_conv1d_fn = None
    selective_scan_fn = None
    KERNELS_IMPORT_ERROR = f"{type(_error).__name__}: {_error}"
KERNELS_AVAILABLE: bool = KERNELS_IMPORT_ERROR is None

__all__ = [
    "KERNELS_AVAILABLE",
    "KERNELS_IMPORT_ERROR",
    "Mamba",
    "MambaState",
    "ScanPath",
    "scan_path",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_sequential",
]


# --------------------------------------------------------------------------- which path


def kernels_import_error() -> str | None:
    """Why the CUDA kernels of the ``gpu`` extra did not import, or None when both did."""
    return KERNELS_IMPORT_ERROR


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    return torch.cuda.is_available()


@dataclass(frozen=True)
class ScanPath:
    """Which implementation :meth:`Mamba.forward` runs on a device, and why."""

    kernels: bool  # True: mamba_ssm's and causal_conv1d's fused CUDA kernels; False: the PyTorch scan
    device: str
    reason: str

    def __str__(self) -> str:
        if self.kernels:
            return f"Mamba: the fused CUDA kernels of mamba-ssm and causal-conv1d on {self.device}"
        return f"Mamba: the pure-PyTorch scan on {self.device} ({self.reason})"


def scan_path(device: torch.device | str) -> ScanPath:
    """The CUDA kernels only when both import, ``device`` is a CUDA device and torch sees one;
    otherwise the pure-PyTorch scan, with every condition that is not met."""
    device = torch.device(device)
    missing = []
    error = kernels_import_error()
    if error is not None:
        missing.append(f"mamba-ssm and causal-conv1d, the gpu extra, do not import: {error}")
    if device.type != "cuda":
        missing.append(f"the model is on {device}, not on a CUDA device")
    elif not cuda_available():
        missing.append(f"the model is on {device} but torch sees no CUDA device")
    if missing:
        return ScanPath(False, str(device), "; ".join(missing))
    return ScanPath(True, str(device), "both kernels import and the model is on a CUDA device")


# --------------------------------------------------------------------------- scan


def _scan(a: Tensor, b: Tensor, reverse: bool = False) -> Tensor:
    """Inclusive scan of ``h_t = a_t * h_{t-1} + b_t`` along dim 1, ``h_{-1} = 0``.

    Hillis-Steele doubling: the step with offset ``k`` combines every element with the one
    ``k`` before it, so that afterwards ``b[t]`` is the recurrence over the window
    ``(t-2k, t]`` and ``a[t]`` the product of its factors.  ``reverse`` runs the recurrence
    from the end, ``h_t = a_t * h_{t+1} + b_t``.  Double-buffered: ``a`` is only read,
    ``b`` is overwritten.  Returns ``h``, shaped like ``b``.
    """
    length = b.shape[1]
    a_next, b_next = torch.empty_like(a), torch.empty_like(b)
    k = 1
    while k < length:
        if reverse:
            dst, src, keep = slice(None, -k), slice(k, None), slice(-k, None)
        else:
            dst, src, keep = slice(k, None), slice(None, -k), slice(None, k)
        b_next[:, keep] = b[:, keep]  # no partner k steps away: unchanged
        torch.addcmul(b[:, dst], a[:, dst], b[:, src], out=b_next[:, dst])
        b, b_next = b_next, b
        if 2 * k < length:  # the last step needs no more products
            a_next[:, keep] = a[:, keep]
            torch.mul(a[:, dst], a[:, src], out=a_next[:, dst])
            a, a_next = a_next, (torch.empty_like(a) if k == 1 else a)  # never write the input
        k *= 2
    return b


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, b, h0)`` with ``h_t = a_t * h_{t-1} + b_t`` and ``h_{-1} = h0``.

    Saves only ``a`` and ``h``.  Backward: ``g_t = dL/dh_t`` (total) follows the reverse
    recurrence ``g_t = grad_t + a_{t+1} * g_{t+1}``; then ``dL/db_t = g_t``,
    ``dL/da_t = g_t * h_{t-1}`` and ``dL/dh0 = a_0 * g_0``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        # a, b: (B, T, E, N); h0: (B, E, N)
        b = b.clone(memory_format=torch.contiguous_format)  # (B, T, E, N)
        b[:, 0].add_(a[:, 0] * h0)  # h0 is the element before the first
        h = _scan(a, b)  # (B, T, E, N)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        a, h, h0 = ctx.saved_tensors
        coef = torch.zeros_like(a)  # (B, T, E, N)
        coef[:, :-1] = a[:, 1:]  # g_t depends on g_{t+1} through a_{t+1}
        g = _scan(coef, grad_h.clone(memory_format=torch.contiguous_format), reverse=True)
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = coef  # reuse the buffer: (B, T, E, N)
            grad_a[:, 0] = g[:, 0] * h0
            grad_a[:, 1:] = g[:, 1:] * h[:, :-1]
        if ctx.needs_input_grad[2]:
            grad_h0 = a[:, 0] * g[:, 0]  # (B, E, N)
        return grad_a, g, grad_h0


def _discretise(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``dA = exp(delta * A)``, ``dBu = delta * B * u`` ``(B, T, E, N)`` and ``h0 (B, E, N)``.

    Computed in ``u``'s dtype promoted to at least float32.
    """
    dtype = torch.promote_types(u.dtype, torch.float32)
    delta = delta.to(dtype)
    dA = torch.exp(delta.unsqueeze(-1) * A.to(dtype))  # (B, T, E, N)
    dBu = (delta * u.to(dtype)).unsqueeze(-1) * B.to(dtype).unsqueeze(2)  # (B, T, E, N)
    batch, _, d_inner, d_state = dA.shape
    return dA, dBu, _initial_state(initial_state, (batch, d_inner, d_state), dA)


def _initial_state(initial_state: Tensor | None, shape: tuple[int, int, int], like: Tensor) -> Tensor:
    """``h`` before the first step ``(B, E, N)`` in ``like``'s dtype: zeros when None."""
    if initial_state is None:
        return like.new_zeros(shape)
    if initial_state.shape != shape:
        raise ValueError(f"initial_state must be {shape}, got {tuple(initial_state.shape)}")
    return initial_state.to(like.dtype)


def _output(h: Tensor, u: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """``y = (<C, h> + D * u) * silu(z)`` ``(B, T, E)``, in ``u``'s dtype."""
    return _gate(torch.einsum("bten,btn->bte", h, C.to(h.dtype)), u, D, z)  # (B, T, E)


def _gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """``(y + D * u) * silu(z)`` ``(B, T, E)`` from ``y = <C, h>``, in ``u``'s dtype."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)  # (B, T, E)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))  # (B, T, E)
    return y.to(u.dtype)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Selective scan with a log-depth parallel scan; differentiable.

    Layout is time-major (unlike ``selective_scan_fn``, which takes ``(B, E, T)``):

    Args:
        u: input ``(B, T, E)``.
        delta: step sizes, already positive (softplus applied) ``(B, T, E)``.
        A: state matrix diagonal ``(E, N)``, negative.
        B, C: input and output projections ``(B, T, N)``.
        D: skip ``(E,)``; z: gate ``(B, T, E)``, applied as ``y * silu(z)``.
        initial_state: ``h`` before the first step ``(B, E, N)``; zeros if None.

    Returns:
        ``y (B, T, E)`` in ``u``'s dtype and the last state ``(B, E, N)`` in at least
        float32 (the scan's precision).
    """
    dA, dBu, h0 = _discretise(u, delta, A, B, initial_state)  # (B, T, E, N) x2, (B, E, N)
    h = _LinearScan.apply(dA, dBu, h0)  # (B, T, E, N)
    return _output(h, u, C, D, z), h[:, -1].clone()  # clone: do not keep all of h alive


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Same as :func:`selective_scan`, one Python iteration per step (for tests only)."""
    dA, dBu, h = _discretise(u, delta, A, B, initial_state)  # (B, T, E, N) x2, (B, E, N)
    states = []
    for t in range(u.shape[1]):
        h = dA[:, t] * h + dBu[:, t]  # (B, E, N)
        states.append(h)
    return _output(torch.stack(states, dim=1), u, C, D, z), h


def selective_scan_sequential(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Same as :func:`selective_scan`, not differentiable: the recurrence one step at a time, in place.

    Inference runs this one. The parallel scan makes ``log2(T)`` passes, each reading and
    writing every ``(B, T, E, N)`` element, and allocates a buffer for each; over many streams
    those tensors outgrow the caches, so its cost per stream grows with the batch. Here
    ``exp(delta * A)`` and ``delta * B * u`` are built time-major, ``(T, B, E, N)``, so that
    each step reads and updates one contiguous slice, and ``h_t`` overwrites ``delta * B * u``
    in place: a handful of passes over the big tensors whatever ``T``, for ``T`` small operations.
    """
    dtype = torch.promote_types(u.dtype, torch.float32)
    batch, _, d_inner = u.shape
    d_state = A.shape[1]
    # the small inputs made time-major first: an elementwise result takes its inputs' memory layout
    delta_t = delta.to(dtype).transpose(0, 1).contiguous()  # (T, B, E)
    du = delta_t * u.to(dtype).transpose(0, 1)  # (T, B, E)
    dA = torch.mul(delta_t.unsqueeze(-1), A.to(dtype)).exp_()  # (T, B, E, N)
    B_t = B.to(dtype).transpose(0, 1).contiguous()  # (T, B, N)
    h_all = du.unsqueeze(-1) * B_t.unsqueeze(2)  # delta * u * B, then overwritten by h: (T, B, E, N)
    h = _initial_state(initial_state, (batch, d_inner, d_state), dA)  # (B, E, N)
    for t in range(h_all.shape[0]):
        h = torch.addcmul(h_all[t], dA[t], h, out=h_all[t])  # (B, E, N)
    y = torch.matmul(h_all, C.to(dtype).transpose(0, 1).unsqueeze(-1)).squeeze(-1)  # (T, B, E)
    return _gate(y.transpose(0, 1), u, D, z), h.clone()  # clone: do not keep all of h alive


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` in its stable form; equals ``F.softplus`` and costs a third of it on CPU."""
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


# --------------------------------------------------------------------------- block


@dataclass
class MambaState:
    """Streaming state of one :class:`Mamba` block."""

    conv_state: Tensor  # (B, E, d_conv - 1): the last conv inputs, oldest first
    ssm_state: Tensor  # (B, E, N)

    def detach(self) -> MambaState:
        """The same state cut from the autograd graph (truncated backpropagation)."""
        return MambaState(self.conv_state.detach(), self.ssm_state.detach())


class Mamba(nn.Module):
    """Mamba-1 mixer: ``(B, L, d_model) -> (B, L, d_model)``, causal.

    Parameter names and shapes follow ``mamba_ssm.modules.mamba_simple.Mamba``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=True,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # delta = softplus(dt_proj(.)) starts log-uniform in [dt_min, dt_max].
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
        dt = torch.exp(log_dt + math.log(dt_min)).clamp(min=dt_init_floor)  # (E,)
        inv_softplus_dt = dt + torch.log(-torch.expm1(-dt))  # log(exp(dt) - 1), stably
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_softplus_dt)
        self.dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]

        # S4D-real: A[e, n] = -(n + 1), stored as its log so that A stays negative.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (E, N)
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(self.d_inner))  # (E,)
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

    def allocate_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> MambaState:
        """Zero state for ``batch`` streams (defaults: the parameters' device and dtype)."""
        device = self.A_log.device if device is None else device
        dtype = self.A_log.dtype if dtype is None else dtype
        return MambaState(
            conv_state=torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, L, d_model) -> (B, L, d_model)``, each output seeing only the past."""
        if scan_path(x.device).kernels:
            return self._forward_kernels(x)
        y, _ = self.step(x, self.allocate_state(x.shape[0], device=x.device, dtype=x.dtype))
        return y

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Process a chunk ``x (B, T, d_model)``, ``T >= 1``, continuing from ``state``.

        Returns the output ``(B, T, d_model)`` and the state after the chunk.
        """
        if x.dim() != 3 or x.shape[1] < 1:
            raise ValueError(f"x must be (B, T >= 1, d_model), got {tuple(x.shape)}")
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each

        # Causal depthwise conv: the previous d_conv - 1 inputs stand in for the padding.
        length = xi.shape[1]
        xi = torch.cat([state.conv_state.to(xi.dtype).transpose(1, 2), xi], dim=1)  # (B, K-1+T, E)
        conv_state = xi[:, length:].transpose(1, 2)  # (B, E, K-1)
        # A sum of d_conv shifted products (F.conv1d's grouped backward is very slow on CPU).
        weight = self.conv1d.weight[:, 0]  # (E, K)
        xi = sum(
            (xi[:, k : k + length] * weight[:, k] for k in range(self.d_conv)),
            self.conv1d.bias,
        )  # (B, T, E)
        xi = F.silu(xi)  # (B, T, E)

        dt, B, C = self.x_proj(xi).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = _softplus(self.dt_proj(dt))  # (B, T, E)
        A = -torch.exp(self.A_log.float())  # (E, N)
        # training differentiates through the parallel scan; inference steps the recurrence
        differentiable = torch.is_grad_enabled() and (x.requires_grad or self.A_log.requires_grad)
        scan = selective_scan if differentiable else selective_scan_sequential
        y, ssm_state = scan(
            xi, delta, A, B, C, self.D, z=z, initial_state=state.ssm_state
        )  # (B, T, E), (B, E, N)
        return self.out_proj(y), MambaState(conv_state, ssm_state.to(state.ssm_state.dtype))

    def _forward_kernels(self, x: Tensor) -> Tensor:
        """Fused CUDA path (mamba_ssm / causal_conv1d), channels-first ``(B, E, L)``."""
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2E, L)
        xi, z = (t.contiguous() for t in xz.chunk(2, dim=1))  # (B, E, L) each
        xi = causal_conv1d_fn(
            xi, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu"
        )  # (B, E, L)
        dt, B, C = self.x_proj(xi.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )  # (B, L, R), (B, L, N), (B, L, N)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2).contiguous()  # (B, E, L)
        y = selective_scan_fn(
            xi,
            delta,
            -torch.exp(self.A_log.float()),  # (E, N)
            B.transpose(1, 2).contiguous(),  # (B, N, L)
            C.transpose(1, 2).contiguous(),  # (B, N, L)
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),  # softplus(delta + bias) inside the kernel
            delta_softplus=True,
        )  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_model)
