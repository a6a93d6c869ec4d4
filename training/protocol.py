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

from ..metrics import auroc, eer, moving_average, precision_at_k
from ..models.checkpoint import NeuroAuthModel
from ..models.preprocess import sliding_windows

ENROLL_SECONDS = 60.0
HOP_SECONDS = 1.0
SMOOTHING = (5, 10, 30)


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


@dataclass
class Scores:
    """Cosine scores of each subject's probe windows against every template."""

    subjects: list[str]
    per_probe: list[np.ndarray]  # per probe subject: (n_windows, n_subjects), in time order

    def genuine_impostor(self, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Scores averaged over ``k`` consecutive windows, split by genuine/impostor."""
        genuine, impostor = [], []
        for i, scores in enumerate(self.per_probe):
            smoothed = moving_average(scores, k)
            genuine.append(smoothed[:, i])
            impostor.append(np.delete(smoothed, i, axis=1).ravel())
        return np.concatenate(genuine), np.concatenate(impostor)


def score(enrollments: Sequence[np.ndarray], probes: Sequence[np.ndarray], subjects: Sequence[str]) -> Scores:
    """Cosine of every probe vector to every subject's normalised mean enrollment vector."""
    templates = np.stack([e.mean(axis=0) for e in enrollments])
    templates /= np.maximum(np.linalg.norm(templates, axis=1, keepdims=True), 1e-12)
    per_probe = []
    for p in probes:
        unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        per_probe.append(unit @ templates.T)
    return Scores(list(subjects), per_probe)


def verification_metrics(scores: Scores, smoothing: Sequence[int] = SMOOTHING) -> dict:
    """``window_eer``, ``auroc``, ``p_at_1``, ``p_at_5`` and ``eer_at`` (k -> EER)."""
    genuine, impostor = scores.genuine_impostor()
    all_scores = np.concatenate(scores.per_probe)
    truth = np.concatenate([np.full(len(p), i) for i, p in enumerate(scores.per_probe)])
    eer_at = {}
    for k in smoothing:
        g, i = scores.genuine_impostor(k)
        eer_at[str(k)] = eer(g, i) if len(g) and len(i) else None
    return {
        "window_eer": eer(genuine, impostor),
        "auroc": auroc(genuine, impostor),
        "p_at_1": precision_at_k(all_scores, truth, 1),
        "p_at_5": precision_at_k(all_scores, truth, 5),
        "eer_at": eer_at,
        "n_genuine": len(genuine),
        "n_impostor": len(impostor),
    }
