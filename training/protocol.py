"""The verification protocol: denoise, cut windows, embed, enroll, probe, score.

Windows are cut every second from the start of each recording. Per person and
state of their corpus (:class:`~neuroauth.training.data.StateSpec`):

- **enrollment**: the windows that end within the state's first ``enroll_seconds``
  (several states, as ``neuroauth enroll`` records them), or, with
  ``states=False``, within the first 60 s of the first state only;
- **probes**: the windows that start one window length after the state's
  enrollment part, so that no probe overlaps an enrollment window; a state enrolled
  from nothing is probe from its start. The probe windows are the same whichever
  enrollment is used, so the two can be compared.

EEGMAT: enroll 60 s at rest + the first 20 s of the arithmetic task, probe the
task from 24 s on (and the rest from 64 s on); Mumtaz: 60 s of eyes closed + 60 s
of eyes open, probe from 64 s on. A plain directory (enrollment and probe
recordings): the first 60 s of the enrollment recording, the whole probe
recording. Each person is the genuine user for their own probes and an impostor
for everyone else's; people with one recording are impostors only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.checkpoint import NeuroAuthModel
from ..models.preprocess import sliding_windows

ENROLL_SECONDS = 60.0
HOP_SECONDS = 1.0


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def denoise(model: NeuroAuthModel, x: np.ndarray, chunk: int = 4000) -> np.ndarray:
    """Run the causal denoiser over a whole recording ``(C, N)`` in model units.

    The recording goes through in chunks with carried state, which equals one
    pass over the whole of it and keeps memory bounded.
    """
    net = model.denoiser
    p = next(net.parameters())
    xt = torch.as_tensor(x, dtype=torch.float32, device=p.device)[None]  # (1, C, N)
    state = net.allocate_state(1, x.shape[0])
    out = []
    for start in range(0, x.shape[1], chunk):
        y, state = net.step(xt[..., start : start + chunk], state)
        out.append(y[0].cpu().numpy())
    return np.concatenate(out, axis=1).astype(np.float64) if out else x.copy()


@torch.no_grad()
def embed(
    embedder: Callable[[torch.Tensor], torch.Tensor], windows: np.ndarray, batch: int = 256
) -> np.ndarray:
    """Embed windows ``(W, C, L)`` -> ``(W, D)`` in batches."""
    outs = []
    for i in range(0, len(windows), batch):
        chunk = torch.as_tensor(np.ascontiguousarray(windows[i : i + batch]), dtype=torch.float32)
        outs.append(embedder(chunk).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0))


def windows_of(x: np.ndarray, sfreq: float, window: int, seconds: float | None = None) -> np.ndarray:
    """Windows at a 1 s hop from the start; only those ending within ``seconds`` when given."""
    stop = None if seconds is None else round(seconds * sfreq)
    return sliding_windows(x, window, round(HOP_SECONDS * sfreq), stop=stop)


@dataclass(frozen=True)
class StatePlan:
    """Which of a recording's windows (1 s hop from its start) enroll and which probe."""

    enroll: slice
    probe: slice


def state_plans(
    state_enroll_seconds: Sequence[float], window_seconds: float, states: bool = True
) -> list[StatePlan]:
    """Per state of a corpus: its enrollment and probe windows, as window indices.

    ``state_enroll_seconds`` are the states' ``enroll_seconds``; the probe cut follows
    them whatever ``states`` says, so single- and several-state enrollment share probes.
    """
    plans = []
    for i, seconds in enumerate(state_enroll_seconds):
        enrolled = seconds if states or i == 0 else 0.0
        last = int(np.floor((enrolled - window_seconds) / HOP_SECONDS + 1e-9)) + 1 if enrolled > 0 else 0
        first_probe = int(np.ceil((seconds + window_seconds) / HOP_SECONDS - 1e-9)) if seconds > 0 else 0
        plans.append(StatePlan(enroll=slice(0, max(last, 0)), probe=slice(first_probe, None)))
    return plans
