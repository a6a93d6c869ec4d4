"""``neuroauth replay``: a recording served as a live LSL stream.

The recording is read with MNE (any format NeuroAuth reads), and its channels
measured in volts are pushed as float32 microvolts, the unit EEG streams usually
carry, with their names, types and unit in ``desc/channels/channel``. The
stream's nominal rate is the recording's.

Pacing and timestamps: sample ``k`` (counted from the start, across loops) is
pushed once the LSL clock reaches ``t0 + k / (rate * speed)`` and carries that
time as its timestamp, where ``t0`` is the LSL clock when pushing starts. The
timestamps therefore say when each sample was sent, as a headset's would: at
``--speed 1`` they advance at the nominal rate; at other speeds their spacing is
``1 / (rate * speed)`` while the nominal rate stays the recording's, so that
consumers process the signal at its true rate. Samples go out in chunks of about
``--chunk-ms`` of wall-clock time. With ``--loop`` the recording starts over
after its last sample (the signal jumps there; the timestamps do not).

Discovery stays on 127.0.0.1 unless ``--lan`` is given
(:mod:`neuroauth.daemon.lslconfig`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import numpy as np
import pylsl
from mne.io.constants import FIFF

from ..cli_options import positive
from ..errors import DataError, NeuroAuthError
from ..recordings import read_raw
from .lslconfig import configure_lsl

log = logging.getLogger(__name__)

__all__ = ["Replayer", "cmd_replay", "main", "register"]

#: Seconds of samples the outlet keeps for a slow reader before dropping the oldest.
OUTLET_BUFFER_SECONDS = 30
#: How often the command checks for SIGINT / SIGTERM while the replay runs.
SIGNAL_POLL_SECONDS = 0.1


def eeg_stream_info(
    name: str,
    source_id: str,
    labels: tuple[str, ...],
    sfreq: float,
    channel_types: tuple[str, ...] | None = None,
    stream_type: str = "EEG",
) -> pylsl.StreamInfo:
    """An LSL description of float samples in microvolts, with every channel's label, unit and type
    (EEG unless given): what the daemon reads a headset's channels and their scale from."""
    info = pylsl.StreamInfo(name, stream_type, len(labels), sfreq, pylsl.cf_float32, source_id)
    channels = info.desc().append_child("channels")
    for label, kind in zip(labels, channel_types or ("EEG",) * len(labels), strict=True):
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        channel.append_child_value("unit", "microvolts")
        channel.append_child_value("type", kind)
    return info


class Replayer:
    """Replays a recording as an LSL outlet, in the calling thread (:meth:`run`) or a background one.

    Configure liblsl before opening (:func:`~neuroauth.daemon.lslconfig.configure_lsl`).
    As a context manager, entering opens the outlet (the stream becomes
    discoverable) and leaving stops the background thread and destroys the outlet.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        stream_type: str = "EEG",
        source_id: str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        chunk_ms: float = 40.0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if not chunk_ms > 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        self.path = Path(path)
        raw = read_raw(self.path)
        picks = [i for i, ch in enumerate(raw.info["chs"]) if ch["unit"] == FIFF.FIFF_UNIT_V]
        if not picks:
            raise DataError(f"{self.path} has no channel measured in volts; replay an EEG recording")
        skipped = [raw.ch_names[i] for i in range(len(raw.ch_names)) if i not in set(picks)]
        if skipped:
            log.info("%s: not replaying channels that are not voltages: %s", self.path, ", ".join(skipped))
        volts = raw.get_data(picks=picks)  # (C, N)
        if volts.shape[1] == 0:
            raise DataError(f"{self.path} holds no samples")
        if not np.isfinite(volts).all():
            raise DataError(f"{self.path} contains NaN or infinite samples; clean or crop the recording")
        self.microvolts = np.ascontiguousarray((volts * 1e6).T, dtype=np.float32)  # (N, C)
        self.labels: tuple[str, ...] = tuple(raw.ch_names[i] for i in picks)
        self.channel_types: tuple[str, ...] = tuple(
            kind.upper() for kind in raw.get_channel_types(picks=picks)
        )
        self.sfreq = float(raw.info["sfreq"])
        self.name = name or self.path.stem
        self.stream_type = stream_type
        self.source_id = source_id or f"neuroauth-replay-{self.path.stem}"
        self.speed = float(speed)
        self.loop = loop
        self.chunk_ms = float(chunk_ms)
        self.samples_pushed = 0
        self._outlet: pylsl.StreamOutlet | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def channel_count(self) -> int:
        return len(self.labels)

    def stream_info(self) -> pylsl.StreamInfo:
        """The description the outlet publishes: names, types and unit of every channel."""
        info = eeg_stream_info(
            self.name, self.source_id, self.labels, self.sfreq, self.channel_types, self.stream_type
        )
        info.desc().append_child("acquisition").append_child_value("replay_of", self.path.name)
        return info

    def open(self) -> None:
        """Create the outlet: from here on the stream can be resolved."""
        if self._outlet is None:
            self._outlet = pylsl.StreamOutlet(self.stream_info(), max_buffered=OUTLET_BUFFER_SECONDS)
            log.info(
                "LSL outlet %r (source_id %r) up: %d channels at %g Hz from %s",
                self.name,
                self.source_id,
                self.channel_count,
                self.sfreq,
                self.path,
            )

    def close(self) -> None:
        """Destroy the outlet; connected inlets see the stream end."""
        if self._outlet is not None:
            self._outlet = None  # the last reference: pylsl destroys the outlet now
            log.info("LSL outlet %r (source_id %r) closed", self.name, self.source_id)

    def run(self, stop: threading.Event) -> None:
        """Push samples in real time until ``stop`` is set or, without looping, the recording ends."""
        self.open()
        outlet = self._outlet
        total = self.microvolts.shape[0]
        period = 1.0 / (self.sfreq * self.speed)  # wall-clock seconds per sample
        chunk = max(1, round(self.chunk_ms * 1e-3 / period))
        sent = 0
        t0 = pylsl.local_clock()
        while not stop.is_set():
            due = int((pylsl.local_clock() - t0) / period) + 1  # samples 0 .. due-1 are due
            if not self.loop:
                due = min(due, total)
            if due > sent:
                k = np.arange(sent, due)
                outlet.push_chunk(self.microvolts[k % total], t0 + k * period)
                sent = due
                self.samples_pushed = sent
            if not self.loop and sent >= total:
                log.info("end of %s after %d samples", self.path, sent)
                break
            next_push = t0 + (sent + chunk - 1) * period
            stop.wait(max(0.0, next_push - pylsl.local_clock()))

    def _run_in_thread(self) -> None:
        try:
            self.run(self._stop)
        except Exception as exc:
            self._error = exc
            log.error("replay of %s stopped: %s", self.path, exc)

    def start(self) -> Replayer:
        """Open the outlet and push from a background thread."""
        if self._thread is not None:
            raise RuntimeError("this replay is already started")
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run_in_thread, name=f"replay {self.source_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread, destroy the outlet, and re-raise what stopped the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the replay thread of {self.path} did not stop within {timeout:g} s")
            self._thread = None
        self.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the background thread to finish; True once it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Replayer:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


DESCRIPTION = (
    "Serve a recording as a live LSL stream, in microvolts, paced in real time (times --speed), "
    "as a stand-in for a headset. Discovery stays on 127.0.0.1 unless --lan is given."
)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", type=Path, help="EEG recording to replay (EDF, BDF, FIF, ...)")
    p.add_argument("--name", help="LSL stream name (default: the file name without extension)")
    p.add_argument("--type", default="EEG", help="LSL stream type (default EEG)")
    p.add_argument(
        "--source-id", help="LSL source id (default: neuroauth-replay-<file name without extension>)"
    )
    p.add_argument(
        "--speed", type=positive, default=1.0, help="replay speed, 2 = twice real time (default 1)"
    )
    p.add_argument("--loop", action="store_true", help="start over at the end of the recording")
    p.add_argument(
        "--chunk-ms", type=positive, default=40.0, help="milliseconds of wall clock per chunk (default 40)"
    )
    p.add_argument(
        "--lan",
        action="store_true",
        help="let liblsl use its own configuration, which may publish the stream on the local network "
        "(default: 127.0.0.1 only)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay`` command to ``neuroauth``'s sub-commands."""
    p = subparsers.add_parser(
        "replay",
        help="serve a recording as a live LSL stream (a stand-in for a headset)",
        description=DESCRIPTION,
    )
    _add_arguments(p)
    p.set_defaults(run=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay until SIGINT or SIGTERM (or the end of the recording without ``--loop``); 0 on both."""
    # The handler only records the signal: it runs between two bytecodes of the main thread,
    # where taking a lock (as setting an Event does) could deadlock against the interrupted code.
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
    try:
        configure_lsl(loopback_only=not args.lan)
        replayer = Replayer(
            args.recording,
            name=args.name,
            stream_type=args.type,
            source_id=args.source_id,
            speed=args.speed,
            loop=args.loop,
            chunk_ms=args.chunk_ms,
        )
        with replayer:
            print(
                f"replaying {args.recording} as stream {replayer.name} (source_id {replayer.source_id}), "
                f"{replayer.channel_count} channels at {replayer.sfreq:g} Hz",
                flush=True,
            )
            replayer.start()
            while not received and not replayer.wait(SIGNAL_POLL_SECONDS):
                pass
        if received:
            log.info("%s received: replay stopped", signal.Signals(received[0]).name)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m neuroauth.daemon.replay``: the ``neuroauth replay`` command on its own."""
    parser = argparse.ArgumentParser(prog="python -m neuroauth.daemon.replay", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return cmd_replay(args)
    except (NeuroAuthError, ValueError, OSError) as exc:
        print(f"neuroauth replay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
