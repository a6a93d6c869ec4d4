"""Where an enrollment phase's EEG comes from: a :class:`Source`, and one read from a recording.

A source gives the stream's channel names, its rate, and an iterator of
``(volts (C, N), timestamps (N,))`` chunks, which
:func:`neuroauth.enroll.collect.collect_windows` runs through the engine. The
live source, an LSL stream, is the daemon's (``neuroauth.daemon.enroll_command``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_SECONDS = 0.1


@dataclass
class Source:
    """One stream of EEG for enrollment."""

    description: str
    channel_names: list[str]
    sfreq: float
    chunks: Iterator[tuple[np.ndarray, np.ndarray]]
    seconds: float  # how long it runs
    exact_timestamps: bool  # made from the sample index (a file), not measured (a live stream)
    stream: dict | None = None  # a live stream's identity (source_id, host, channels); None for a file


def file_source(path: Path, seconds: float) -> Source:
    """The first ``seconds`` of a recording, as chunks with timestamps from 0."""
    from ..recordings import read_raw

    raw = read_raw(path)
    sfreq = float(raw.info["sfreq"])
    n = min(raw.n_times, round(seconds * sfreq))  # a shorter recording enrolls with what it has
    volts = raw.get_data(stop=n).astype(np.float64)  # (C, N) volts; mne filters want float64
    step = max(1, round(CHUNK_SECONDS * sfreq))

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, n, step):
            stop = min(n, i + step)
            yield volts[:, i:stop], np.arange(i, stop) / sfreq

    return Source(f"recording {path}", list(raw.ch_names), sfreq, chunks(), n / sfreq, True)
