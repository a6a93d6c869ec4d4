"""Where an enrolment's EEG comes from: a recording read chunk by chunk, or a live LSL stream.

Both give the same thing: the stream's channel names, its rate, and an iterator
of ``(volts (C, N), timestamps (N,))`` chunks, which
:func:`neuroauth.enroll.collect.collect_windows` runs through the engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

CHUNK_SECONDS = 0.1


@dataclass
class Source:
    """One stream of EEG for enrolment."""

    description: str
    channel_names: list[str]
    sfreq: float
    chunks: Iterator[tuple[np.ndarray, np.ndarray]]
    seconds: float  # how long it runs
    exact_timestamps: bool  # made from the sample index (a file), not measured (a live stream)


def file_source(path: Path, seconds: float) -> Source:
    """The first ``seconds`` of a recording, as chunks with timestamps from 0."""
    from .recordings import read_raw

    raw = read_raw(path)
    sfreq = float(raw.info["sfreq"])
    n = min(raw.n_times, round(seconds * sfreq))  # a shorter recording enrols with what it has
    volts = raw.get_data(stop=n).astype(np.float64)  # (C, N) volts; mne filters want float64
    step = max(1, round(CHUNK_SECONDS * sfreq))

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, n, step):
            stop = min(n, i + step)
            yield volts[:, i:stop], np.arange(i, stop) / sfreq

    return Source(f"recording {path}", list(raw.ch_names), sfreq, chunks(), n / sfreq, True)


def lsl_source(
    name: str | None, stream_type: str | None, source_id: str | None, seconds: float, timeout: float = 10.0
) -> Source:
    """``seconds`` of a live LSL stream, pulled as it arrives. Configure LSL before calling."""
    import asyncio

    from .daemon.inlet import EegInlet, StreamSelector, resolve

    selector = StreamSelector(name=name, type=stream_type, source_id=source_id)
    infos = asyncio.run(resolve(selector, timeout))
    if not infos:
        raise DataError(
            f"no LSL stream matches {selector} within {timeout:g} s; start the headset's LSL app "
            "(or `neuroauth replay REC.edf`) and check --stream-name / --stream-type / --source-id"
        )
    inlet = EegInlet(max(infos, key=lambda info: info.created_at()))
    labels = list(inlet.require_labels())

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                volts, timestamps = inlet.pull()
                if timestamps.size:
                    yield volts, timestamps
                time.sleep(CHUNK_SECONDS / 2)
        finally:
            inlet.close()

    description = f"LSL stream {inlet.name!r} (source_id {inlet.source_id!r})"
    return Source(description, labels, inlet.sfreq, chunks(), seconds, False)
