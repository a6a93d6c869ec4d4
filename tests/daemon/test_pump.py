"""The pump reads inlets into the engine and scores windows in its own thread; what goes wrong with one
stream is that stream's loss, handed to the event loop, never the end of the pump."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import numpy as np
import pylsl
import pytest
from neuroauth.daemon.inlet import StreamLost
from neuroauth.daemon.pump import Pump
from neuroauth.daemon.service import window_offset
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.streaming import EngineConfig, StreamingEngine

from neuroauth.paths import BUNDLED_DATA, SHIPPED_CHECKPOINT
from neuroauth.recordings import read_raw


class FakeInlet:
    """Hands out a recording in 40 ms chunks stamped on the LSL clock, then whatever ``then`` says."""

    def __init__(self, volts: np.ndarray, rate: float, then: str = "lost") -> None:
        self.volts, self.rate, self.sfreq, self.then, self.name = volts, rate, rate, then, "fake"
        self.i, self.t0 = 0, pylsl.local_clock() - volts.shape[1] / rate

    def pull(self):
        if self.i >= self.volts.shape[1]:
            if self.then == "lost":
                raise StreamLost("fake", "src-1")
            if self.then == "future":
                return self.volts[:, :5], pylsl.local_clock() + 60 + np.arange(5) / self.rate
            return self.volts[:, :0], np.zeros(0)
        stop = min(self.i + round(0.04 * self.rate) * 25, self.volts.shape[1])  # a second at a time
        chunk = self.volts[:, self.i : stop], self.t0 + np.arange(self.i, stop) / self.rate
        self.i = stop
        return chunk

    def seconds_since_last_sample(self) -> float:
        return 0.0 if self.i < self.volts.shape[1] else 100.0


@pytest.fixture(scope="module")
def recording():
    raw = read_raw(BUNDLED_DATA / "Subject03_2.edf")
    return raw.get_data()[:, : 500 * 12].astype(np.float64), list(raw.ch_names), 500.0


@pytest.mark.parametrize(
    ("then", "reason"),
    [("lost", "is gone"), ("future", "ahead of this machine's clock"), ("silent", "no samples for 9 s")],
)
def test_windows_are_scored_then_the_stream_is_handed_back_with_its_reason(recording, then, reason):
    volts, names, rate = recording
    engine = StreamingEngine(load_checkpoint(SHIPPED_CHECKPOINT), EngineConfig(rate_tolerance=None))
    engine.add_stream("eeg1", names, rate)
    cycles, lost = [], []
    done = threading.Event()

    async def scenario():
        loop = asyncio.get_running_loop()

        def on_lost(device, inlet, why):
            lost.append((device, why))
            done.set()

        pump = Pump(
            engine, loop, lambda a, s: cycles.append((a, s)), on_lost, silent_after_s=9.0, cycle_s=0.005
        )
        calls = Counter()

        def score(embedding):
            calls["score"] += 1
            if calls["score"] == 2:
                raise ValueError("a template of another dimension")
            return float(embedding.sum())

        pump.attach("eeg1", FakeInlet(volts, rate, then), score)
        worker = threading.Thread(target=pump.run)
        worker.start()
        try:
            while not done.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
        finally:
            pump.stop.set()
            worker.join(10)
        assert not worker.is_alive()

    asyncio.run(scenario())
    windows = [(w, scores.get(i)) for a, scores in cycles for i, w in enumerate(a.windows)]
    assert len(windows) == 9  # 12 s: windows ending at 4, 5, ..., 12 s
    assert [score is None for _, score in windows] == [False, True] + [False] * 7
    assert "the window could not be scored: a template of another dimension" in windows[1][0].problems
    ((device, why),) = lost
    assert device == "eeg1" and reason in why


def test_headsets_are_dealt_into_slots_of_the_hop_a_batch_each():
    assert {window_offset(i, 8, 1.0) for i in range(8)} == {0.0}  # too few to split: one batch
    offsets = Counter(window_offset(i, 64, 1.0) for i in range(64))
    assert sorted(offsets) == [k / 8 for k in range(8)] and set(offsets.values()) == {8}
    # never more slots than pump cycles in a hop, and within the hop whatever it is
    assert len({window_offset(i, 1024, 1.0) for i in range(1024)}) == 50
    assert all(0 <= window_offset(i, 300, 2.5) < 2.5 for i in range(300))


class LiveInlet:
    """A recording as a live stream: each sample is there from the LSL time it is stamped with."""

    def __init__(self, volts: np.ndarray, rate: float) -> None:
        self.volts, self.rate, self.sfreq, self.name = volts, rate, rate, "live"
        self.t0, self.sent = pylsl.local_clock(), 0
        self.pulls: list[float] = []  # LSL time of each pull

    def pull(self):
        now = pylsl.local_clock()
        self.pulls.append(now)
        there = min(int((now - self.t0) * self.rate) + 1, self.volts.shape[1])
        chunk = self.volts[:, self.sent : there], self.t0 + np.arange(self.sent, there) / self.rate
        self.sent = there
        return chunk

    def seconds_since_last_sample(self) -> float:
        return 0.0


@pytest.mark.slow  # seconds of a stream in real time
def test_an_inlet_rests_between_windows_and_is_read_in_the_cycle_after_each_window_is_in(recording):
    volts, names, rate = recording
    engine = StreamingEngine(load_checkpoint(SHIPPED_CHECKPOINT), EngineConfig(rate_tolerance=None))
    engine.add_stream("eeg1", names, rate)
    advances: list[float] = []  # LSL time of each cycle's advance, after that cycle's reads
    advance = engine.advance

    def timed_advance():
        advances.append(pylsl.local_clock())
        return advance()

    engine.advance = timed_advance
    windows = []
    inlet = LiveInlet(volts, rate)

    async def scenario():
        loop = asyncio.get_running_loop()
        on_cycle = lambda a, s: windows.extend(a.windows)  # noqa: E731
        pump = Pump(engine, loop, on_cycle, lambda *lost: None, silent_after_s=9.0)
        pump.attach("eeg1", inlet, lambda e: 1.0)
        worker = threading.Thread(target=pump.run)
        worker.start()
        try:
            await asyncio.sleep(6.6)  # windows end at 4, 5 and 6 s
        finally:
            pump.stop.set()
            worker.join(10)
        assert not worker.is_alive()
        return pump

    pump = asyncio.run(scenario())
    pushed_s = inlet.sent / rate
    assert len(windows) == int(pushed_s - 4.0) + 1 >= 3, (pushed_s, windows)
    # read a few times a hop, not every cycle
    assert pump.reads == len(inlet.pulls) and pump.reads <= pump.cycles / 3, (pump.reads, pump.cycles)
    # yet never resting through a window: the inlet was read in the cycle after its last sample came
    for w in windows:
        later = [t for t in advances if t > w.timestamp]
        assert any(w.timestamp < t < later[1] for t in inlet.pulls), (w.timestamp, later[:2], inlet.pulls)
