"""Reading one EEG stream over LSL: find it, open it, pull samples in volts.

A thin layer over pylsl for the daemon. A :class:`~neuroauth.config.StreamSelector`
says which stream a headset publishes, :func:`resolve` finds it without blocking the event
loop, :class:`EegInlet` reads it, and :func:`connect_with_backoff` waits for it
to appear. Reconnecting after a loss is the caller's decision: :meth:`EegInlet.pull`
raises :class:`StreamLost` when the outlet is gone, and
:meth:`EegInlet.seconds_since_last_sample` shows a stream that went silent while
its connection stayed open.

Timestamps are on this machine's LSL clock (``pylsl.local_clock``): liblsl adds
the clock offset it measures to the outlet's host (``proc_clocksync``) and keeps
them ascending (``proc_monotonize``). They are not dejittered: liblsl's
dejittering fits a straight line through sample index and time, so samples
dropped on the way (a headset losing radio packets, an inlet buffer overflowing)
would be spread over the following samples instead of showing as a jump, and
the gap check downstream needs to see that jump. Processing itself runs on the
nominal rate, so jitter in the timestamps costs nothing there.

Configure liblsl first (:func:`neuroauth.daemon.lslconfig.configure_lsl`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from ..config import StreamSelector
from ..errors import StreamError

log = logging.getLogger(__name__)

__all__ = [
    "AmbiguousStream",
    "EegInlet",
    "StreamDirectory",
    "StreamLost",
    "backoff_delays",
    "connect_with_backoff",
    "resolve_one",
    "unit_scale",
]

MAX_CHANNELS = 512  # far beyond any headset: a stream claiming more is not one (and would cost memory)
MAX_RATE = 20_000.0  # Hz

#: Post-processing of timestamps: see the module docstring for why not dejitter.
PROCESSING = pylsl.proc_clocksync | pylsl.proc_monotonize | pylsl.proc_threadsafe

#: Unit of a channel -> factor to volts. Symbols are case-sensitive (mV is not MV).
_UNIT_SYMBOLS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "μV": 1e-6, "nV": 1e-9}
_UNIT_WORDS = {
    "volt": 1.0,
    "volts": 1.0,
    "millivolt": 1e-3,
    "millivolts": 1e-3,
    "microvolt": 1e-6,
    "microvolts": 1e-6,
    "nanovolt": 1e-9,
    "nanovolts": 1e-9,
}
ASSUMED_UNIT = "microvolts"

_NUMPY_DTYPES = {
    pylsl.cf_float32: np.float32,
    pylsl.cf_double64: np.float64,
    pylsl.cf_int8: np.int8,
    pylsl.cf_int16: np.int16,
    pylsl.cf_int32: np.int32,
    pylsl.cf_int64: np.int64,
}

# Streams whose missing unit has been reported, so that reconnections stay quiet.
_assumed_unit_reported: set[str] = set()


class StreamLost(StreamError):  # noqa: N818 (the name says what happened)
    """The outlet of a stream is gone (closed, crashed, or not answering); it may come back."""

    def __init__(
        self, name: str, source_id: str, reason: str = "its outlet closed or its program stopped"
    ) -> None:
        self.name = name
        self.source_id = source_id
        self.reason = reason
        super().__init__(
            f"LSL stream {name!r} (source_id {source_id!r}) is gone: {reason}. Check the headset and "
            "the program streaming it; the stream is picked up again when it comes back."
        )


UNIQUE_WITHIN_S = 1.0  # seconds every stream on this machine has to answer a second lookup


class AmbiguousStream(StreamError):  # noqa: N818 (named for what it is, as StreamLost)
    """More than one stream matches a headset's selector: reading either would be a guess."""

    def __init__(self, selector: StreamSelector, infos: list[pylsl.StreamInfo]) -> None:
        self.infos = infos
        found = "; ".join(f"{i.name()!r} (source_id {i.source_id()!r}, host {i.hostname()!r})" for i in infos)
        super().__init__(
            f"{len(infos)} LSL streams match {selector}: {found}. Reading one of them would be a guess "
            "(another program may be imitating the headset); pin the headset's stream by source_id and "
            "host in the configuration, and stop the stream that is not the headset's"
        )


class StreamDirectory:
    """Every stream that answers a lookup within :data:`UNIQUE_WITHIN_S`, shared by all who ask.

    However many headsets are waiting for their streams, one lookup at a time goes out and
    all of them match their selectors against its answer (liblsl lookups running side by side
    by the dozen miss streams). An answer is reused for ``fresh_s`` seconds. Use it from one
    event loop.
    """

    def __init__(self, wait_s: float = UNIQUE_WITHIN_S, fresh_s: float = 0.5) -> None:
        self.wait_s = wait_s
        self.fresh_s = fresh_s
        self._infos: list[pylsl.StreamInfo] = []
        self._at = -math.inf
        self._lookup: asyncio.Task[list[pylsl.StreamInfo]] | None = None

    async def streams(self) -> list[pylsl.StreamInfo]:
        """The streams of the latest lookup, looking again unless it is fresh."""
        if time.monotonic() - self._at < self.fresh_s:
            return self._infos
        if self._lookup is None:
            self._lookup = asyncio.ensure_future(asyncio.to_thread(pylsl.resolve_streams, self.wait_s))
            self._lookup.add_done_callback(self._done)
        return await asyncio.shield(self._lookup)

    def _done(self, lookup: asyncio.Task[list[pylsl.StreamInfo]]) -> None:
        self._lookup = None
        if not lookup.cancelled() and lookup.exception() is None:
            self._infos, self._at = lookup.result(), time.monotonic()


async def resolve_one(
    selector: StreamSelector, timeout: float, directory: StreamDirectory | None = None
) -> pylsl.StreamInfo | None:
    """The one stream matching ``selector`` (None when none answers within ``timeout``).

    Each lookup gives every stream :data:`UNIQUE_WITHIN_S` to answer: two matches raise
    :class:`AmbiguousStream`, never a silent choice. ``directory`` shares lookups among callers.
    """
    directory = directory or StreamDirectory()
    deadline = time.monotonic() + timeout
    while True:
        infos = [i for i in await directory.streams() if selector.matches(i)]
        unique = {(i.uid(), i.source_id(), i.hostname()): i for i in infos}
        if len(unique) > 1:
            raise AmbiguousStream(selector, list(unique.values()))
        if unique:
            return next(iter(unique.values()))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(remaining, directory.fresh_s))


def unit_scale(unit: str) -> float | None:
    """Factor from ``unit`` to volts, or None for a unit that is not a voltage."""
    unit = unit.strip()
    if unit in _UNIT_SYMBOLS:
        return _UNIT_SYMBOLS[unit]
    return _UNIT_WORDS.get(unit.lower())


def _channel_fields(info: pylsl.StreamInfo, field: str) -> list[str] | None:
    """``desc/channels/channel/<field>`` of every channel ('' where absent), None without channels."""
    channels = info.desc().child("channels")
    if channels.empty():
        return None
    values = []
    channel = channels.child("channel")
    while not channel.empty():
        values.append(channel.child_value(field).strip())
        channel = channel.next_sibling("channel")
    return values


class EegInlet:
    """An open inlet on one EEG stream; :meth:`pull` gives volts, (C, N), and LSL timestamps.

    Opening blocks for up to ``open_timeout`` seconds (fetching the full
    description, connecting, measuring the clock offset): run it in a thread
    from async code, as :func:`connect_with_backoff` does. The inlet buffers at
    most ``max_buflen`` seconds; older samples are dropped by liblsl when the
    reader falls behind, which shows as a gap in the timestamps.
    """

    def __init__(self, info: pylsl.StreamInfo, *, max_buflen: int = 2, open_timeout: float = 5.0) -> None:
        """Open ``info`` (from :func:`resolve`); ``max_buflen`` in whole seconds, as liblsl takes it."""
        self.name = info.name()
        self.source_id = info.source_id()
        if max_buflen < 1:
            raise ValueError(f"max_buflen must be at least 1 second, got {max_buflen}")
        fmt = info.channel_format()
        if fmt not in _NUMPY_DTYPES:
            raise StreamError(
                f"LSL stream {self.name!r} (source_id {self.source_id!r}) carries text, not numbers; "
                "select the headset's EEG stream instead"
            )
        if info.nominal_srate() <= 0:
            raise StreamError(
                f"LSL stream {self.name!r} (source_id {self.source_id!r}) has no regular sampling rate; "
                "NeuroAuth needs EEG sampled at a fixed rate, so select the headset's EEG stream"
            )
        if not 1 <= info.channel_count() <= MAX_CHANNELS or info.nominal_srate() > MAX_RATE:
            raise StreamError(
                f"LSL stream {self.name!r} (source_id {self.source_id!r}) announces "
                f"{info.channel_count()} channels at {info.nominal_srate():g} Hz; an EEG headset has 1 to "
                f"{MAX_CHANNELS} channels at most {MAX_RATE:g} Hz. Select the headset's EEG stream"
            )
        self._dtype = _NUMPY_DTYPES[fmt]
        inlet = pylsl.StreamInlet(
            info, max_buflen=int(max_buflen), recover=False, processing_flags=PROCESSING
        )
        try:
            full = inlet.info(timeout=open_timeout)  # the full description, with desc/channels
            self.type: str = full.type()
            self.hostname: str = full.hostname()
            self.sfreq: float = float(full.nominal_srate())
            self.channel_count: int = full.channel_count()
            self.labels, self.labels_problem = self._read_labels(full)
            self.units, self.scale = self._read_units(full)
            inlet.open_stream(timeout=open_timeout)
            inlet.time_correction(timeout=open_timeout)  # first estimate now, so pulls do not wait
        except LostError:
            inlet.close_stream()
            raise StreamLost(self.name, self.source_id) from None
        except LslTimeoutError:
            inlet.close_stream()
            raise StreamLost(
                self.name, self.source_id, f"it did not answer within {open_timeout:g} s"
            ) from None
        except BaseException:
            inlet.close_stream()
            raise
        self._inlet: pylsl.StreamInlet | None = inlet
        self._lock = threading.Lock()
        self._buffer = np.empty((0, self.channel_count), dtype=self._dtype)
        self._last_sample_at = time.monotonic()
        self.samples_received = 0
        log.info(
            "opened LSL stream %r (source_id %r, %s) type %s: %d channels at %g Hz",
            self.name,
            self.source_id,
            self.hostname,
            self.type,
            self.channel_count,
            self.sfreq,
        )

    def identity(self) -> dict:
        """What tells this headset's stream from another: source id, host and channel labels, as
        enrollment records them in the template (see ``Template.stream_mismatch``)."""
        return {"source_id": self.source_id, "host": self.hostname, "channels": list(self.labels or ())}

    def _describe(self) -> str:
        return f"LSL stream {self.name!r} (source_id {self.source_id!r})"

    def _read_labels(self, info: pylsl.StreamInfo) -> tuple[tuple[str, ...] | None, str | None]:
        labels = _channel_fields(info, "label")
        if labels is None or not any(labels):
            problem = "describes no channel labels"
        elif len(labels) != self.channel_count:
            problem = f"describes {len(labels)}"
        elif not all(labels):
            missing = [str(i + 1) for i, label in enumerate(labels) if not label]
            problem = f"gives no label for channel(s) {', '.join(missing)}"
        else:
            seen: dict[str, int] = {}
            for label in labels:
                seen[label] = seen.get(label, 0) + 1
            twice = sorted(label for label, n in seen.items() if n > 1)
            if not twice:
                return tuple(labels), None
            problem = (
                f"labels {', '.join(repr(t) for t in twice)} more than once, so which is which is a guess;"
            )
        return None, (
            f"{self._describe()} has {self.channel_count} channels but {problem} "
            "(desc/channels/channel/label). NeuroAuth picks the model's channels by name: configure "
            "the program streaming the headset to publish channel labels."
        )

    def _read_units(self, info: pylsl.StreamInfo) -> tuple[tuple[str, ...], np.ndarray]:
        units = _channel_fields(info, "unit")
        if units is None or len(units) != self.channel_count:
            units = [""] * self.channel_count
        scale = np.empty(self.channel_count)  # (C,)
        unknown = []
        for i, unit in enumerate(units):
            factor = unit_scale(unit) if unit else _UNIT_WORDS[ASSUMED_UNIT]
            if factor is None:
                unknown.append(f"{i + 1} ({unit!r})")
            else:
                scale[i] = factor
        if unknown:
            raise StreamError(
                f"{self._describe()} gives channel(s) {', '.join(unknown)} in a unit that is not a "
                "voltage; NeuroAuth reads volts, millivolts, microvolts or nanovolts "
                "(desc/channels/channel/unit)"
            )
        if not all(units):
            key = self.source_id or self.name
            if key not in _assumed_unit_reported:
                _assumed_unit_reported.add(key)
                log.warning(
                    "%s gives no unit for %d of its %d channels; assuming %s, as EEG streams usually carry",
                    self._describe(),
                    sum(1 for unit in units if not unit),
                    self.channel_count,
                    ASSUMED_UNIT,
                )
        return tuple(unit or ASSUMED_UNIT for unit in units), scale

    def require_labels(self) -> tuple[str, ...]:
        """The channel labels, or a :class:`StreamError` saying why the stream has none."""
        if self.labels is None:
            raise StreamError(self.labels_problem)
        return self.labels

    def seconds_since_last_sample(self) -> float:
        """Seconds since a pull last returned a sample (since opening, before the first)."""
        return time.monotonic() - self._last_sample_at

    def pull(self, max_samples: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The samples ready now, at most ``max_samples``: volts (C, N) float64, timestamps (N,).

        Never blocks; N is 0 when nothing has arrived. Raises :class:`StreamLost`
        when the outlet is gone.
        """
        return self._pull(max_samples, 0.0)

    async def pull_async(
        self, max_samples: int = 1024, timeout: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`pull`, but waits up to ``timeout`` seconds (in a thread) for a first sample."""
        return await asyncio.to_thread(self._pull, max_samples, timeout)

    def _pull(self, max_samples: int, timeout: float) -> tuple[np.ndarray, np.ndarray]:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        with self._lock:
            if self._inlet is None:
                raise StreamError(f"the inlet of {self._describe()} is closed; open a new one")
            if self._buffer.shape[0] < max_samples:
                self._buffer = np.empty((max_samples, self.channel_count), dtype=self._dtype)
            buf = self._buffer[:max_samples]  # (N, C), liblsl writes into it
            try:
                if timeout > 0:
                    _, first = self._inlet.pull_chunk(timeout=timeout, max_samples=1, dest_obj=buf[:1])
                    stamps = list(first)
                    if stamps and max_samples > 1:
                        _, rest = self._inlet.pull_chunk(
                            timeout=0.0, max_samples=max_samples - 1, dest_obj=buf[1:]
                        )
                        stamps.extend(rest)
                else:
                    _, stamps = self._inlet.pull_chunk(timeout=0.0, max_samples=max_samples, dest_obj=buf)
            except LostError:
                raise StreamLost(self.name, self.source_id) from None
            n = len(stamps)
            volts = buf[:n].T.astype(np.float64) * self.scale[:, None]  # (C, N)
        timestamps = np.asarray(stamps, dtype=np.float64)  # (N,)
        if n:
            self._last_sample_at = time.monotonic()
            self.samples_received += n
        return volts, timestamps

    def close(self) -> None:
        """Disconnect from the stream (idempotent)."""
        with self._lock:
            inlet, self._inlet = self._inlet, None
        if inlet is not None:
            inlet.close_stream()
            log.info("closed LSL stream %r (source_id %r)", self.name, self.source_id)

    @property
    def closed(self) -> bool:
        return self._inlet is None

    def __enter__(self) -> EegInlet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def backoff_delays(
    min_delay: float = 0.5, max_delay: float = 10.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Pauses between attempts: a bound doubling from ``min_delay`` to ``max_delay``, jittered.

    Each pause is drawn between half the bound and the bound (never below
    ``min_delay``), so that several waiters do not retry in step.
    """
    if not 0 < min_delay <= max_delay:
        raise ValueError(f"need 0 < min_delay <= max_delay, got {min_delay} and {max_delay}")
    rng = rng or random.Random()
    bound = min_delay
    while True:
        yield max(min_delay, rng.uniform(bound / 2.0, bound))
        bound = min(max_delay, bound * 2.0)


async def connect_with_backoff(
    selector: StreamSelector,
    on_retry: Callable[[str, float], None] | None = None,
    *,
    resolve_timeout: float = 2.0,
    directory: StreamDirectory | None = None,
    min_delay: float = 0.5,
    max_delay: float = 10.0,
    max_buflen: int = 2,
    open_timeout: float = 5.0,
    rng: random.Random | None = None,
) -> EegInlet:
    """Wait until a stream matching ``selector`` can be opened and return its inlet.

    ``directory`` (one per event loop) shares the stream lookups of every headset waiting.
    Retries for ever: each failed attempt (no stream found within
    ``resolve_timeout``, or the stream vanished or stayed silent while opening)
    is followed by a pause from :func:`backoff_delays`. ``on_retry`` receives, per
    failed attempt, a sentence saying what is wrong and the pause in seconds (it runs
    on the event loop and must not block).
    Cancelling the task stops the wait. A stream that is found but cannot be
    used (text samples, no regular rate, a unit that is not a voltage) raises
    :class:`StreamError`: waiting would not change it.
    """
    delays = backoff_delays(min_delay, max_delay, rng)
    attempt = 0
    while True:
        try:
            info = await resolve_one(selector, resolve_timeout, directory)
        except AmbiguousStream as exc:
            info, problem = None, str(exc)
        else:
            problem = f"no LSL stream with {selector} found within {resolve_timeout:g} s"
        if info is not None:
            try:
                return await asyncio.to_thread(
                    EegInlet, info, max_buflen=max_buflen, open_timeout=open_timeout
                )
            except StreamLost as exc:
                problem = f"LSL stream {exc.name!r} (source_id {exc.source_id!r}) was found but {exc.reason}"
        delay = next(delays)
        attempt += 1
        message = f"{problem}; trying again in {delay:.1f} s (attempt {attempt})"
        if attempt == 1:
            log.warning("%s", message)
        else:
            log.debug("%s", message)
        if on_retry is not None:
            on_retry(problem, delay)
        await asyncio.sleep(delay)
