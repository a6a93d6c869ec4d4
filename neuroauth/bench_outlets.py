"""Many LSL outlets in one process, each a bundled recording replayed in real time.

    python -m neuroauth.bench_outlets --count N --source-prefix P [--channels T7,F8,Cz,P4]

The load generator of ``neuroauth bench --daemon`` (:mod:`neuroauth.bench_daemon`): N
headsets on this machine. Outlet ``i`` has source id ``<P>-<i>`` and streams the given
channels of a bundled recording (the subjects' 182 s rest recordings in turn, outlet ``i``
starting ``i * STAGGER_S`` seconds into its recording, looped), resampled once to
:data:`RATE` Hz before streaming starts, as float32 microvolts.

Every :data:`CHUNK_S` seconds each outlet pushes the samples that came due since its last
push (sample ``k`` is due ``k / RATE`` seconds after streaming starts), with the LSL clock
at the moment of the push as the timestamp of the chunk's last sample; liblsl stamps the
samples before it ``1 / RATE`` apart. That is how a headset stamps what it sends, so a
consumer's delay from a sample's timestamp is its delay from the moment the sample left.

Once every outlet is up, one JSON line goes to stdout: ``hostname`` (as LSL reports it),
``source_ids``, ``rate``, ``channels``, ``recordings``. Then it streams until SIGTERM or
SIGINT. LSL is configured loopback-only before any other LSL call.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from fractions import Fraction
from pathlib import Path
from types import FrameType

import numpy as np

from .daemon.lslconfig import configure_lsl
from .errors import DataError, MontageError, NeuroAuthError
from .models.montage import DEFAULT_MONTAGE, resolve_montage
from .paths import BUNDLED_DATA
from .recordings import read_raw

RATE = 256.0  # Hz, a common headset rate (the model resamples it to its own)
CHUNK_S = 0.020  # seconds between two pushes of an outlet
STAGGER_S = 7.0  # outlets replaying the same recording start this far apart
OUTLET_BUFFER_S = 30  # seconds an outlet keeps for a slow reader


def recordings() -> list[Path]:
    """The bundled rest recordings, one per subject, in subject order."""
    found = sorted(BUNDLED_DATA.glob("Subject*_1.edf"))
    if not found:
        raise DataError(f"no bundled recording Subject*_1.edf in {BUNDLED_DATA}; reinstall the package")
    return found


def load_microvolts(path: Path, channels: tuple[str, ...], rate: float) -> np.ndarray:
    """``channels`` of ``path`` resampled to ``rate``, float32 microvolts ``(N, C)``."""
    from scipy.signal import resample_poly

    raw = read_raw(path)
    picks = resolve_montage(channels, raw.ch_names)
    if picks and isinstance(picks[0], str):
        raise MontageError(f"recording {path}", list(picks), list(raw.ch_names))
    volts = raw.get_data(picks=picks)  # (C, N)
    ratio = Fraction(rate / raw.info["sfreq"]).limit_denominator(1000)
    resampled = resample_poly(volts, ratio.numerator, ratio.denominator, axis=1)  # (C, M)
    return np.ascontiguousarray((resampled * 1e6).T, dtype=np.float32)


def open_outlets(count: int, source_prefix: str, channels: tuple[str, ...], rate: float):
    """``count`` outlets named after their source ids, channels described in microvolts."""
    import pylsl

    from .daemon.replay import eeg_stream_info

    outlets = []
    for i in range(count):
        source_id = f"{source_prefix}-{i}"
        info = eeg_stream_info(source_id, source_id, channels, rate)
        outlets.append(pylsl.StreamOutlet(info, max_buffered=OUTLET_BUFFER_S))
    return outlets


def stream(outlets, signals: list[np.ndarray], offsets: list[int], rate: float, stopped) -> None:
    """Push every outlet's due samples every CHUNK_S seconds until ``stopped()``."""
    import pylsl

    t0 = pylsl.local_clock()
    sent, tick = 0, 0
    while not stopped():
        due = int((pylsl.local_clock() - t0) * rate) + 1  # samples 0 .. due-1 are due
        if due > sent:
            k = np.arange(sent, due)
            for outlet, signal_, offset in zip(outlets, signals, offsets, strict=True):
                outlet.push_chunk(signal_[(offset + k) % len(signal_)], pylsl.local_clock())
            sent = due
        # the next tick on the grid; after a stall, the next one still ahead (no burst of ticks)
        tick = max(tick + 1, int((pylsl.local_clock() - t0) / CHUNK_S) + 1)
        time.sleep(max(0.0, t0 + tick * CHUNK_S - pylsl.local_clock()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neuroauth.bench_outlets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, required=True, help="number of outlets")
    parser.add_argument("--source-prefix", required=True, help="source id of outlet i: <prefix>-<i>")
    parser.add_argument(
        "--channels", default=",".join(DEFAULT_MONTAGE), help="channels to stream (default T7,F8,Cz,P4)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")

    # The handler only records the signal; the loop checks it at every tick.
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    configure_lsl(loopback_only=True)  # before any other LSL call
    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
    try:
        files = recordings()
        loaded = [load_microvolts(path, channels, RATE) for path in files]
    except NeuroAuthError as exc:
        print(f"neuroauth bench outlets: {exc}", file=sys.stderr)
        return 2
    signals = [loaded[i % len(loaded)] for i in range(args.count)]
    offsets = [round(i * STAGGER_S * RATE) for i in range(args.count)]
    outlets = open_outlets(args.count, args.source_prefix, channels, RATE)
    ready = {
        "hostname": outlets[0].get_info().hostname(),
        "source_ids": [f"{args.source_prefix}-{i}" for i in range(args.count)],
        "rate": RATE,
        "channels": list(channels),
        "recordings": [files[i % len(files)].name for i in range(args.count)],
    }
    print(json.dumps(ready), flush=True)
    stream(outlets, signals, offsets, RATE, lambda: bool(received))
    return 0


if __name__ == "__main__":
    sys.exit(main())
