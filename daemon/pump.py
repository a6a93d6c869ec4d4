"""The pump: one thread that reads every headset's inlet, feeds the engine and scores its windows.

Reading, pushing, stepping the model and scoring all happen in this one thread, in
cycles of :data:`CYCLE_S`, so that the event loop never waits for the engine (nor the
engine for the event loop) and the number of headsets costs no tasks, timers or
threads. Each cycle pulls what the inlets hold (never blocking), queues it in the
engine, advances the engine (which steps only the streams that have a hop's worth of
samples), and scores the windows that came due against their owner's template. What
a cycle produced, and any stream that was lost, is handed to the event loop with
:meth:`asyncio.AbstractEventLoop.call_soon_threadsafe`.

An inlet is read in every cycle only from :data:`LEAD_S` before its stream's next
window is expected to be complete (from the samples the engine still needs and the
pace of the stream's timestamps) until the window is in; otherwise it rests for up
to :data:`MAX_REST_S`, and liblsl keeps its samples meanwhile. A window is still read
in the cycle after its last sample arrives, but a headset costs a few reads a hop
instead of one a cycle (each read and queueing costs tens of microseconds of this
one thread, whatever the chunk). Faults, silence and samples from the future are seen
at the next read, at most :data:`MAX_REST_S` later.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from ..errors import NeuroAuthError
from ..models.streaming import Advance, StreamingEngine
from .inlet import EegInlet, StreamLost

log = logging.getLogger(__name__)

CYCLE_S = 0.02  # how often every inlet is read: a window is scored at most this long after it is in
FUTURE_TOLERANCE_S = 5.0  # samples stamped further ahead of the local LSL clock are refused
LEAD_S = 0.05  # an inlet is read every cycle from this long before its next window is expected
MAX_REST_S = 0.25  # and never left unread for longer (liblsl's buffer holds seconds)


@dataclass
class _Feed:
    inlet: EegInlet
    score: Callable[[np.ndarray], float]  # embedding (D,) -> fused score
    next_read: float = 0.0  # time.monotonic() from which the inlet is read again
    last_timestamp: float | None = None  # of the last sample read


class Pump:
    """Serves the inlets :meth:`attach` ed to it from :meth:`run` (in its own thread) until stopped.

    ``on_cycle(advance, scores)`` receives, on the event loop, each cycle's windows with
    the fused score of each window that could be scored (by window index); ``on_lost(device,
    inlet, reason)`` a stream that was detached because it broke, fell silent for
    ``silent_after_s`` or sent samples stamped in the future.
    """

    def __init__(
        self,
        engine: StreamingEngine,
        loop: asyncio.AbstractEventLoop,
        on_cycle: Callable[[Advance, dict[int, float]], None],
        on_lost: Callable[[str, EegInlet, str], None],
        silent_after_s: float,
        cycle_s: float = CYCLE_S,
    ) -> None:
        self.engine = engine
        self.loop = loop
        self.on_cycle = on_cycle
        self.on_lost = on_lost
        self.silent_after_s = silent_after_s
        self.cycle_s = cycle_s
        self._feeds: dict[str, _Feed] = {}
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.last_cycle = time.monotonic()  # when the latest cycle ended (the watchdog's evidence)
        self._busy_s = 0.0  # seconds spent working (not sleeping) since the start
        self._started = time.monotonic()
        self.cycles = 0  # cycles run
        self.reads = 0  # inlet reads in all

    def attach(self, device: str, inlet: EegInlet, score: Callable[[np.ndarray], float]) -> None:
        """Read ``inlet`` for ``device`` from the next cycle on (its engine stream must exist)."""
        with self._lock:
            self._feeds[device] = _Feed(inlet, score)

    def detach(self, device: str) -> None:
        """Stop reading ``device`` from the next cycle on. A cycle under way may still pull from its
        inlet or push to its engine stream: closing or removing them then shows there as a loss of
        that inlet, which :attr:`on_lost` receives and ignores for an inlet no longer served."""
        with self._lock:
            self._feeds.pop(device, None)

    def busy_share(self) -> float:
        """The share of the time since the start that cycles spent working: 1 means no slack left."""
        return round(self._busy_s / max(1e-9, time.monotonic() - self._started), 3)

    def reads_per_cycle(self) -> float:
        """Inlets read per cycle since the start: at most the headsets, a few a hop each when at rest."""
        return round(self.reads / max(1, self.cycles), 2)

    def run(self) -> None:
        """Cycle until :attr:`stop` is set; an error of the engine itself ends it (and the service)."""
        while not self.stop.is_set():
            started = time.monotonic()
            with self._lock:
                feeds = dict(self._feeds)
            for device, feed in feeds.items():
                if started >= feed.next_read:
                    self._read(device, feed)
            advance = self.engine.advance()
            scores = self._score(advance, feeds)
            if advance.windows or advance.restarts:
                self.loop.call_soon_threadsafe(self.on_cycle, advance, scores)
            self.last_cycle = time.monotonic()
            self.cycles += 1
            self._busy_s += self.last_cycle - started
            self.stop.wait(max(0.0, self.cycle_s - (self.last_cycle - started)))

    def _read(self, device: str, feed: _Feed) -> None:
        """Pull one inlet into the engine; a stream that cannot go on is detached and reported."""
        inlet = feed.inlet
        self.reads += 1
        try:
            volts, timestamps = inlet.pull()
            if timestamps.size:
                now = pylsl.local_clock()
                ahead = float(timestamps[-1]) - now
                if ahead > FUTURE_TOLERANCE_S:  # a decision stamped in the future would outlive its cause
                    raise _Refused(
                        f"timestamps {ahead:.1f} s ahead of this machine's clock; fix the clock of the "
                        "program streaming the headset"
                    )
                self.engine.push(device, volts, timestamps)
                feed.next_read = time.monotonic() + self._rest(device, feed, timestamps, now)
            elif inlet.seconds_since_last_sample() > self.silent_after_s:
                raise _Refused(f"no samples for {self.silent_after_s:g} s; reconnecting")
        except (StreamLost, _Refused, NeuroAuthError) as exc:
            with self._lock:
                if self._feeds.get(device) is feed:
                    del self._feeds[device]
            self.loop.call_soon_threadsafe(self.on_lost, device, inlet, str(exc))

    def _rest(self, device: str, feed: _Feed, timestamps: np.ndarray, now: float) -> float:
        """Seconds the inlet may go unread after a read that ended at LSL time ``now``: until
        :data:`LEAD_S` before its next window's last sample is expected, at most :data:`MAX_REST_S`;
        0 (read again next cycle) while the stream's pace is unknown or the window is near."""
        if feed.last_timestamp is not None:  # samples since the previous read's last one
            first, count = feed.last_timestamp, timestamps.size
        else:
            first, count = float(timestamps[0]), timestamps.size - 1
        feed.last_timestamp = last = float(timestamps[-1])
        needed = self.engine.samples_until_window(device)
        if needed == 0 or count < 1 or not last > first:
            return 0.0
        # the pace of the timestamps since the previous read, never slower than the announced rate (a
        # replay may run faster than real time; a stream slower than announced is refused by the engine)
        period = min((last - first) / count, 1.0 / feed.inlet.sfreq)
        expected = last + needed * period  # LSL time of the window's last sample
        return min(max(0.0, expected - now - LEAD_S), MAX_REST_S)

    def _score(self, advance: Advance, feeds: dict[str, _Feed]) -> dict[int, float]:
        """The fused score of each window that passed the quality gate, by window index; a window that
        cannot be scored gets the reason among its problems (no window ends the service)."""
        scores: dict[int, float] = {}
        for i, w in enumerate(advance.windows):
            feed = feeds.get(w.stream)
            if not w.ok or feed is None:
                continue
            try:
                score = feed.score(w.embedding)
            except (ValueError, ArithmeticError, NeuroAuthError) as exc:
                log.error("%s: a window could not be scored (%s); no signal", w.stream, exc)
                w.problems = (*w.problems, f"the window could not be scored: {exc}")
                continue
            if math.isfinite(score):
                scores[i] = score
            else:  # never expected; a window that cannot be scored is no signal, not a crash
                w.problems = (*w.problems, f"the window's score is {score}")
        return scores


class _Refused(Exception):  # noqa: N818 (a reason to stop reading, reported as the stream's loss)
    """A stream the pump stops reading: its samples cannot be used as they come."""
