"""Enrollment windows: an owner's EEG through the streaming engine, kept where the quality gate passes.

The source is anything that yields ``(volts (C, N), timestamps (N,))`` chunks of
one stream: a live LSL inlet or a recording read chunk by chunk. Going through
the daemon's own engine means the template is made from exactly the windows the
daemon will score: the same pre-processing, the same recurrent denoiser, the
same hop, the same quality gate.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..models.checkpoint import NeuroAuthModel
from ..models.streaming import EngineConfig, StreamingEngine

log = logging.getLogger(__name__)

STREAM = "enroll"


@dataclass
class Collected:
    """The windows an enrollment recording gave, and what the quality gate refused."""

    embeddings: list[np.ndarray] = field(default_factory=list)  # (D,) each, accepted, in time order
    timestamps: list[float] = field(default_factory=list)
    rejected: int = 0
    problems: Counter = field(default_factory=Counter)  # reason -> windows refused for it
    restarts: list[str] = field(default_factory=list)
    seconds: float = 0.0  # signal consumed

    @property
    def accepted(self) -> int:
        return len(self.embeddings)

    def matrix(self) -> np.ndarray:
        """Accepted embeddings ``(n, D)`` in time order."""
        return np.stack(self.embeddings) if self.embeddings else np.zeros((0, 0), dtype=np.float32)

    def summary(self) -> str:
        parts = [f"{self.accepted} windows accepted, {self.rejected} refused"]
        if self.problems:
            parts.append("refused for: " + "; ".join(f"{p} ({n})" for p, n in self.problems.most_common(4)))
        if self.restarts:
            parts.append(f"{len(self.restarts)} stream restart(s): {self.restarts[-1]}")
        return ", ".join(parts)


def _reason(problem: str) -> str:
    """A problem without its measured figure, so that windows can be counted by reason."""
    return problem.split(" (")[0]


def collect_windows(
    model: NeuroAuthModel,
    channel_names: Sequence[str],
    sfreq: float,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    config: EngineConfig | None = None,
    on_window: Callable[[Collected], None] | None = None,
) -> Collected:
    """Run ``chunks`` of one stream through the engine; keep the windows the gate accepts."""
    engine = StreamingEngine(model, config)
    engine.add_stream(STREAM, channel_names, sfreq)
    out = Collected()
    for volts, timestamps in chunks:
        engine.push(STREAM, volts, timestamps)
        out.seconds += volts.shape[1] / sfreq
        result = engine.advance()
        out.restarts += [r.reason for r in result.restarts]
        for w in result.windows:
            if w.ok:
                out.embeddings.append(w.embedding)
                out.timestamps.append(w.timestamp)
            else:
                out.rejected += 1
                out.problems.update({_reason(p) for p in w.problems})
            if on_window is not None:
                on_window(out)
    return out


def require_enough(collected: Collected, minimum: int, source: str) -> np.ndarray:
    """The accepted embeddings, or :class:`DataError` saying why there are too few."""
    if collected.accepted < minimum:
        raise DataError(
            f"{source} gave {collected.accepted} usable windows in {collected.seconds:.0f} s "
            f"({collected.summary()}); a template needs at least {minimum}. Check that every "
            "electrode sits well and the headset is worn, then record longer (--duration)."
        )
    return collected.matrix()
