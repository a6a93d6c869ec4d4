"""An LSL outlet for the daemon's fault tests: a bundled recording with faults injected.

    python tests/daemon/fault_outlet.py RECORDING --name NAME --source-id ID [--speed 4] [--loop]
        [--fault KIND --at SECONDS [--for SECONDS] [--channel LABEL]] ...
        [--announce HZ] [--actual HZ] [--channels N] [--rename OLD=NEW] [--timeline FILE]
        [--wait-for-consumer]

The recording's voltage channels go out as float32 microvolts with their labels,
as ``neuroauth replay`` sends them. Sample ``k`` is due at ``t0 + k / (actual * speed)``
on the LSL clock and carries that time as its timestamp, unless a fault says otherwise;
``t0`` is when the outlet is up, or with ``--wait-for-consumer`` when an inlet has connected.

Each ``--fault`` starts a fault; the ``--at``, ``--for`` and ``--channel`` after it
belong to it. Times are seconds of signal (sample index / actual rate), counted
across loops:

``nan``, ``inf``, ``huge``
    the channel's samples are NaN, +infinity or 1e12 microvolts for ``--for`` seconds;
``flat``
    the channel holds its value at ``--at`` for ``--for`` seconds (an electrode off);
``clip``
    the channel is clipped at the 80th percentile of its magnitude, so that a fifth of
    its samples sit on the two rails (an amplifier in saturation);
``backwards``, ``jump``
    from ``--at`` on, every timestamp is ``--for`` seconds earlier, or later (a clock
    stepping back, a gap);
``burst``
    nothing is sent for ``--for`` seconds, then the samples held back go out at once
    with their own timestamps (a radio link that buffered during a dropout);
``burst-restamped``
    the same, but the samples held back all carry the time the link came back.

``--announce`` is the nominal rate in the stream's description, ``--actual`` the rate
the samples are produced at (the recording is resampled to it); by default both are
the recording's. ``--channels N`` publishes only N channels, the model's default
montage first, so that with fewer than four a montage channel is missing;
``--rename OLD=NEW`` changes a channel's label.

With ``--timeline FILE``, one JSON line per fault is appended once its last sample is
out: the kind, the channel, and LSL times (``*_lsl``) with their wall-clock equivalents:
``before`` the last sample before the fault, ``first`` and ``last`` the fault's own
samples (for ``backwards`` and ``jump``, the first shifted sample), and ``clear`` the
last sample of the first ``--window`` seconds that follow the fault.

LSL is configured loopback-only before the stream is described: the outlet is never
discoverable beyond 127.0.0.1. SIGTERM and SIGINT stop it with status 0.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np
from neuroauth.daemon.lslconfig import configure_lsl
from neuroauth.models.montage import DEFAULT_MONTAGE, canonical

VALUE_FAULTS = ("nan", "inf", "huge", "flat", "clip")
TIMESTAMP_FAULTS = ("backwards", "jump")
BURST_FAULTS = ("burst", "burst-restamped")
KINDS = VALUE_FAULTS + TIMESTAMP_FAULTS + BURST_FAULTS
HUGE_UV = 1e12
CLIP_QUANTILE = 0.8
CHUNK_S = 0.04  # wall-clock seconds between pushes
OUTLET_BUFFER_S = 30


@dataclass
class Fault:
    kind: str
    at: float | None = None
    duration: float = 1.0
    channel: str = "Cz"
    start: int = 0  # first sample index affected
    stop: int = 0  # first sample index after the fault
    column: int = 0  # the channel's index in the stream
    reported: bool = False


class _NewFault(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None) -> None:
        faults = list(getattr(namespace, "faults", None) or [])
        faults.append(Fault(value))
        namespace.faults = faults


class _FaultOption(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None) -> None:
        faults = getattr(namespace, "faults", None)
        if not faults:
            parser.error(f"{option_string} belongs to a fault: give --fault KIND before it")
        setattr(faults[-1], self.dest, value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fault_outlet.py", description=__doc__.splitlines()[0])
    p.add_argument("recording", type=Path)
    p.add_argument("--name", required=True, help="LSL stream name")
    p.add_argument("--source-id", required=True, help="LSL source id")
    p.add_argument("--speed", type=float, default=1.0, help="pace and timestamps, times real time")
    p.add_argument("--loop", action="store_true", help="start over after the last sample")
    p.add_argument("--fault", choices=KINDS, action=_NewFault, dest="faults", default=[])
    p.add_argument("--at", type=float, action=_FaultOption, help="second of signal the fault starts at")
    p.add_argument("--for", type=float, action=_FaultOption, dest="duration", help="seconds (default 1)")
    p.add_argument("--channel", action=_FaultOption, help="channel of a value fault (default Cz)")
    p.add_argument("--announce", type=float, help="nominal rate in the stream's description (Hz)")
    p.add_argument("--actual", type=float, help="rate the samples are produced at (Hz)")
    p.add_argument("--channels", type=int, help="publish only this many channels, the montage's first")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="relabel a channel")
    p.add_argument("--window", type=float, default=4.0, help="seconds of signal after a fault (timeline)")
    p.add_argument("--timeline", type=Path, help="append one JSON line per fault to this file")
    p.add_argument(
        "--wait-for-consumer", action="store_true", help="start the signal once an inlet has connected"
    )
    return p


def _load(args: argparse.Namespace) -> tuple[np.ndarray, list[str], float]:
    """The recording in microvolts ``(N, C)`` at the actual rate, the channel labels, that rate."""
    import mne
    from mne.io.constants import FIFF
    from scipy import signal as sps

    raw = mne.io.read_raw(args.recording, preload=True, verbose="error")
    picks = [i for i, ch in enumerate(raw.info["chs"]) if ch["unit"] == FIFF.FIFF_UNIT_V]
    labels = [raw.ch_names[i] for i in picks]
    uv = raw.get_data(picks=picks) * 1e6  # (C, N)
    rate = float(raw.info["sfreq"])
    actual = args.actual or rate
    if actual != rate:
        ratio = (actual / rate).as_integer_ratio()
        uv = sps.resample_poly(uv, ratio[0], ratio[1], axis=1)
    if args.channels is not None:
        montage = {canonical(name) for name in DEFAULT_MONTAGE}
        order = sorted(range(len(labels)), key=lambda i: canonical(labels[i]) not in montage)
        keep = sorted(order[: args.channels])
        uv, labels = uv[keep], [labels[i] for i in keep]
    for rename in args.rename:
        old, _, new = rename.partition("=")
        if old not in labels or not new:
            raise SystemExit(f"--rename {rename!r}: give OLD=NEW with OLD one of {labels}")
        labels[labels.index(old)] = new
    return np.ascontiguousarray(uv.T, dtype=np.float32), labels, actual


def _prepare(faults: list[Fault], labels: list[str], rate: float) -> None:
    keys = [canonical(label) for label in labels]
    for f in faults:
        if f.at is None:
            raise SystemExit(f"--fault {f.kind} needs --at")
        f.start = round(f.at * rate)
        f.stop = f.start + max(1, round(f.duration * rate))
        if f.kind in VALUE_FAULTS:
            if canonical(f.channel) not in keys:
                raise SystemExit(f"--channel {f.channel!r} is not among the stream's channels {labels}")
            f.column = keys.index(canonical(f.channel))
        if f.kind in TIMESTAMP_FAULTS:
            f.stop = f.start + 1


class FaultyStream:
    """The samples and timestamps of the stream, faults applied, sample index by sample index."""

    def __init__(self, uv: np.ndarray, faults: list[Fault], rate: float, speed: float, t0: float) -> None:
        self.uv = uv
        self.faults = faults
        self.rate = rate
        self.period = 1.0 / (rate * speed)
        self.t0 = t0
        limits = np.quantile(np.abs(uv), CLIP_QUANTILE, axis=0)  # (C,)
        self.rails = limits.astype(np.float32)
        self.restamped: dict[int, float] = {}  # sample index -> timestamp, for restamped bursts

    def timestamp(self, k: int) -> float:
        if k in self.restamped:
            return self.restamped[k]
        return self.clock(k)

    def clock(self, k: int) -> float:
        """The timestamp sample ``k`` would carry if no burst restamped it (timestamp faults applied)."""
        shift = 0.0
        for f in self.faults:
            if f.kind in TIMESTAMP_FAULTS and k >= f.start:
                shift += f.duration if f.kind == "jump" else -f.duration
        return self.t0 + k * self.period + shift

    def samples(self, start: int, stop: int) -> np.ndarray:
        k = np.arange(start, stop)
        x = self.uv[k % len(self.uv)].copy()  # (n, C)
        for f in self.faults:
            if f.kind not in VALUE_FAULTS:
                continue
            rows = (k >= f.start) & (k < f.stop)
            if not rows.any():
                continue
            c = f.column
            if f.kind == "nan":
                x[rows, c] = np.nan
            elif f.kind == "inf":
                x[rows, c] = np.inf
            elif f.kind == "huge":
                x[rows, c] = HUGE_UV
            elif f.kind == "flat":
                x[rows, c] = self.uv[f.start % len(self.uv), c]
            else:
                x[rows, c] = np.clip(x[rows, c], -self.rails[c], self.rails[c])
        return x

    def held_back(self, sent: int, due: int) -> int:
        """How many of the samples ``sent .. due-1`` may go out now (bursts hold samples back)."""
        for f in self.faults:
            if f.kind in BURST_FAULTS and f.start < due and sent < f.stop and due < f.stop:
                return max(0, f.start - sent)
        return due - sent

    def restamp(self, sent: int, due: int) -> None:
        for f in self.faults:
            if f.kind == "burst-restamped" and sent < f.stop and due > f.start:
                stamp = self.clock(f.stop - 1)  # when the link came back, on the stream's own clock
                for k in range(max(sent, f.start), min(due, f.stop)):
                    self.restamped[k] = stamp


def _wall(lsl_time: float, clock) -> float:
    return time.time() - (clock() - lsl_time)


def _report(f: Fault, stream: FaultyStream, labels: list[str], window: float, path: Path, clock) -> None:
    clear = f.stop + math.ceil(window * stream.rate) - 1
    if f.kind in TIMESTAMP_FAULTS:
        clear = f.start + math.ceil(window * stream.rate) - 1
    times = {
        "before": stream.timestamp(f.start - 1),
        "first": stream.timestamp(f.start),
        "last": stream.timestamp(f.stop - 1),
        "clear": stream.timestamp(clear),
    }
    entry = {
        "fault": f.kind,
        "channel": labels[f.column] if f.kind in VALUE_FAULTS else None,
        "at": f.at,
        "for": f.duration,
        **{f"{key}_lsl": value for key, value in times.items()},
        **{key: _wall(value, clock) for key, value in times.items()},
    }
    with path.open("a") as out:
        out.write(json.dumps(entry) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.speed > 0:
        raise SystemExit("--speed must be positive")
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    configure_lsl(loopback_only=True)  # before anything describes a stream
    import pylsl

    uv, labels, rate = _load(args)
    faults: list[Fault] = args.faults
    _prepare(faults, labels, rate)
    announce = args.announce or rate
    info = pylsl.StreamInfo(args.name, "EEG", len(labels), announce, pylsl.cf_float32, args.source_id)
    channels = info.desc().append_child("channels")
    for label in labels:
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        channel.append_child_value("unit", "microvolts")
        channel.append_child_value("type", "EEG")
    outlet = pylsl.StreamOutlet(info, max_buffered=OUTLET_BUFFER_S)
    print(
        f"replaying {args.recording} as stream {args.name} (source_id {args.source_id}), "
        f"{len(labels)} channels at {announce:g} Hz",
        flush=True,
    )
    while args.wait_for_consumer and not received and not outlet.wait_for_consumers(0.1):
        pass

    stream = FaultyStream(uv, faults, rate, args.speed, pylsl.local_clock())
    total = len(uv)
    sent = 0
    wake = threading.Event()
    while not received:
        due = int((pylsl.local_clock() - stream.t0) / stream.period) + 1
        if not args.loop:
            due = min(due, total)
        due = sent + stream.held_back(sent, due)
        if due > sent:
            stream.restamp(sent, due)
            stamps = [stream.timestamp(k) for k in range(sent, due)]
            outlet.push_chunk(stream.samples(sent, due), stamps)
            sent = due
            for f in faults:
                if not f.reported and sent >= f.stop and args.timeline is not None:
                    _report(f, stream, labels, args.window, args.timeline, pylsl.local_clock)
                    f.reported = True
        if not args.loop and sent >= total:
            break
        wake.wait(CHUNK_S)
    del outlet
    return 0


if __name__ == "__main__":
    sys.exit(main())
