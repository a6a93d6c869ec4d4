"""``neuroauthd`` against faulty streams: it keeps working, fails secure, says why, and recovers.

The daemon runs as a process against a real broker; the owner's stream comes from
``fault_outlet.py``, which streams Subject03's second recording (the owner enrolled
from the first) and injects faults at given seconds of signal. Each test runs
several faults in one stream and follows the state the daemon publishes through
each of them: OWNER before the fault, NO_SIGNAL with a reason that names it, OWNER
again once it is over. The per-window scores are checked against the outlet's
timeline of the faults (the LSL times of their samples, in wall-clock time, as the
daemon's messages carry them):

- a window the quality gate refused is never scored, and its state is NO_SIGNAL;
- a window made only of faulty samples is refused, or does not exist at all where
  the stream restarts (bad sample values, broken timestamps): then no window holds
  samples from before and after the break, the first one after it needs a full
  window of new samples, and it is never OWNER (the evidence starts again from zero).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_service
from conftest import ReplayProcess
from neuroauth.models.montage import DEFAULT_MONTAGE, canonical
from neuroauth.models.preprocess import SignalSpec
from test_service import (
    DEVICE,
    OWNER_STREAM,
    TIMEOUT,
    Arrivals,
    Daemon,
    Message,
    Setup,
    retained,
    state_is,
    stop_with_sigterm,
    subscriber,
    until,
    write_config,
)

# fixtures: the owner's template (enrolled once per module) and neuroauthd as a process
templates = test_service.templates
neuroauthd = test_service.neuroauthd

pytestmark = pytest.mark.slow  # a real broker or fault stream each: seconds per test

FAULT_OUTLET = Path(__file__).with_name("fault_outlet.py")
SPEED = 4.0  # the outlet's pace, times real time, where the fault allows it
WINDOW_S = SignalSpec().window_seconds  # seconds of signal in one window of the shipped model
MARGIN_S = 0.02  # wall-clock slack between the outlet's and the daemon's reading of the clocks
NAN_INF_HUGE = "NaN, infinite or beyond +-0.2 V"


# -- the faulty outlet ---------------------------------------------------------------------------------


class FaultOutlet(ReplayProcess):
    """``fault_outlet.py`` as a subprocess; its fault timeline goes to a JSON-lines file."""

    def __init__(self, recording: Path, name: str, source_id: str, options: Sequence[str], log: Path) -> None:
        self.timeline_path = log.with_suffix(".timeline.jsonl")
        super().__init__(recording, name, source_id, [*options, "--timeline", str(self.timeline_path)], log)

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            str(FAULT_OUTLET),
            str(self.recording),
            "--name",
            self.name,
            "--source-id",
            self.source_id,
            *self.options,
        ]

    def timeline(self) -> list[FaultRecord]:
        if not self.timeline_path.exists():
            return []
        lines = self.timeline_path.read_text().splitlines()
        return [FaultRecord.of(json.loads(line)) for line in lines if line.strip()]


@dataclass(frozen=True)
class FaultRecord:
    """One fault as the outlet sent it; times are wall-clock equivalents of LSL timestamps."""

    kind: str
    channel: str | None
    before: float  # the last sample before the fault
    first: float  # the fault's first sample (for a timestamp step, the first sample after it)
    last: float  # the fault's last sample
    clear: float  # the end of the first full window of samples after the fault

    @classmethod
    def of(cls, entry: dict) -> FaultRecord:
        return cls(
            entry["fault"], entry["channel"], entry["before"], entry["first"], entry["last"], entry["clear"]
        )

    @property
    def refused(self) -> bool:
        """Whether the fault shows in the windows (refused), rather than restarting the stream."""
        return self.kind in ("flat", "clip")

    @property
    def over(self) -> float:
        """From when the state may be OWNER again: a full window of new samples after a restart
        (after a burst, the newest of its samples may start that window), else the fault's end."""
        return self.last if self.refused or self.kind == "burst" else self.clear

    def __str__(self) -> str:
        where = f" on {self.channel}" if self.channel else ""
        return (
            f"{self.kind}{where}: before {self.before:.3f} first {self.first:.3f} last {self.last:.3f} "
            f"clear {self.clear:.3f}"
        )


def fault(kind: str, at: float, duration: float = 1.0, channel: str | None = None) -> list[str]:
    """Command-line options of one fault, at and for seconds of signal."""
    options = ["--fault", kind, "--at", str(at), "--for", str(duration)]
    return [*options, "--channel", channel] if channel else options


@pytest.fixture
def fault_outlet(replay, tmp_path):
    """``fault_outlet(*options, source_id=..., speed=SPEED, loop=True)`` -> a running outlet."""
    count = 0

    def start(
        *options: str, source_id: str | None = None, speed: float = SPEED, loop: bool = True
    ) -> FaultOutlet:
        nonlocal count
        count += 1
        outlet = FaultOutlet(
            OWNER_STREAM,
            replay.unique("name"),
            source_id or replay.unique("src"),
            [
                *("--speed", str(speed), "--window", str(WINDOW_S), "--wait-for-consumer"),
                *(["--loop"] if loop else []),
                *options,
            ],
            tmp_path / f"fault-outlet-{count}.log",
        )
        replay.started.append(outlet)  # killed with the test's replays
        return outlet.start()

    return start


def configure(setup: Setup, *, check_rate: bool) -> None:
    """Set ``[model] check_rate`` in the daemon's configuration (write_config turns it off)."""
    text = setup.config.read_text()
    changed, n = re.subn(r"(?m)^check_rate = \w+.*$", f"check_rate = {str(check_rate).lower()}", text)
    assert n == 1, text
    setup.config.write_text(changed)


@dataclass(frozen=True)
class FaultRun:
    broker: object
    outlet: FaultOutlet
    setup: Setup
    daemon: Daemon


@pytest.fixture
def on_faulty_stream(mosquitto, fault_outlet, neuroauthd, templates, tmp_path):
    """``on_faulty_stream(*options, speed=SPEED, check_rate=False)``: a broker, a faulty outlet
    started with ``options``, and neuroauthd reading it for the owner."""

    def start(*options: str, speed: float = SPEED, check_rate: bool = False) -> FaultRun:
        broker = mosquitto()
        outlet = fault_outlet(*options, speed=speed)
        setup = write_config(tmp_path, broker, templates, {DEVICE: outlet.source_id})
        if check_rate:
            configure(setup, check_rate=True)
        return FaultRun(broker, outlet, setup, neuroauthd(setup.config))

    return start


# -- reading what the daemon said --------------------------------------------------------------------


def states(live: Arrivals, setup: Setup, after: int = 0) -> list[Message]:
    return [m for m in live.items[after:] if m.topic == setup.state and m.payload]


def scores(live: Arrivals, setup: Setup) -> list[Message]:
    return [m for m in live.items if m.topic == setup.score]


def montage_name(label: str) -> str:
    """The model's name of a stream channel, as the quality gate reports it (EEG T3 -> T7)."""
    return {canonical(name): name for name in DEFAULT_MONTAGE}[canonical(label)]


def window_report(windows: list[Message], timeline: list[FaultRecord], headline: str) -> str:
    lines = [headline, "faults:", *(f"  {f}" for f in timeline), "windows (end, state, score, problems):"]
    for m in windows:
        body = m.body
        lines.append(f"  {body['timestamp']:.3f} {body['state']} {body['score']} {body['problems']}")
    return "\n".join(lines)


def check_windows(windows: list[Message], timeline: list[FaultRecord], span: float) -> None:
    """What the design promises of every window around the faults (see the module docstring).

    ``span``: LSL seconds from a window's first sample to its last (the window over the pace).
    """
    report = lambda headline: window_report(windows, timeline, headline)  # noqa: E731
    ends = [m.body["timestamp"] for m in windows]
    for m in windows:
        body = m.body
        if body["problems"]:
            assert body["state"] == "NO_SIGNAL" and body["score"] is None, report(f"refused but scored: {m}")
        else:
            assert body["score"] is not None, report(f"a window without problems was not scored: {m}")
    for f in timeline:
        if f.refused:
            inside = [m for m, end in zip(windows, ends, strict=True) if f.first - MARGIN_S <= end - span]
            inside = [m for m in inside if m.body["timestamp"] <= f.last + MARGIN_S]
            assert inside, report(f"no window lies within the {f.kind} fault")
            label = f"channel {montage_name(f.channel)} {'flat' if f.kind == 'flat' else 'clipped'}"
            for m in inside:
                assert any(p.startswith(label) for p in m.body["problems"]), report(
                    f"a window within the {f.kind} fault was not refused for {label}: {m}"
                )
        elif f.kind != "burst":  # a burst with its own timestamps is continuous signal, only late
            straddling = [m for m, end in zip(windows, ends, strict=True) if f.before + MARGIN_S < end]
            straddling = [m for m in straddling if m.body["timestamp"] < f.clear - MARGIN_S]
            assert not straddling, report(f"windows hold samples of the {f.kind} fault: {straddling}")
        # the evidence starts again from zero: the first window scored after the fault is not OWNER
        if f.refused:
            refused = [end for m, end in zip(windows, ends, strict=True) if m.body["problems"]]
            refused = [end for end in refused if f.first - MARGIN_S <= end <= f.last + span + MARGIN_S]
            start = max(refused)
        else:
            start = f.over - MARGIN_S
        after = [m for m, end in zip(windows, ends, strict=True) if end > start and m.body["score"]]
        assert after, report(f"no window scored after the {f.kind} fault")
        assert after[0].body["state"] != "OWNER", report(
            f"the first window scored after the {f.kind} fault is OWNER (evidence not reset): {after[0]}"
        )


async def follow_faults(
    live: Arrivals, setup: Setup, outlet: FaultOutlet, expected: list[tuple[str, str]]
) -> list[FaultRecord]:
    """For each ``(kind, reason)`` in order: OWNER before the fault, NO_SIGNAL with ``reason`` because
    of it, then UNKNOWN and OWNER again, that recovery before the next fault. Returns the timeline.

    The states are placed by their ``timestamp``: the time of the window, restart or clock tick that
    decided them, on the same clock as the outlet's timeline.
    """
    mark = 0
    passages = []
    for kind, reason in expected:
        owner = await live.wait_for(state_is(setup, "OWNER"), f"OWNER before the {kind} fault", after=mark)
        mark = live.items.index(owner) + 1
        no_signal = await live.wait_for(
            lambda m, reason=reason: state_is(setup, "NO_SIGNAL")(m) and reason in (m.body["reason"] or ""),
            f"NO_SIGNAL with {reason!r} for the {kind} fault",
            after=mark,
        )
        mark = live.items.index(no_signal) + 1
        passages.append((owner, no_signal))
    recovered = await live.wait_for(state_is(setup, "OWNER"), "OWNER after the last fault", after=mark)

    timeline = await wait_timeline(outlet, len(expected))
    kinds = [f.kind for f in timeline]
    assert kinds == [kind for kind, _ in expected], f"the outlet's faults: {kinds}"
    for i, ((owner, no_signal), f) in enumerate(zip(passages, timeline, strict=True)):
        when = owner.body["timestamp"]
        assert when <= f.before + MARGIN_S, live.report(f"OWNER was not reached before the {f}")
        if i:
            previous = timeline[i - 1]
            assert when >= previous.over - MARGIN_S, live.report(f"OWNER before {previous} was over")
        when = no_signal.body["timestamp"]
        assert when >= f.before - MARGIN_S, live.report(f"NO_SIGNAL came before the {f}")
        # from OWNER: locked at once, no other state in between; then back through UNKNOWN
        sequence = [m.body["state"] for m in states(live, setup, live.items.index(owner))]
        assert sequence[:4] == ["OWNER", "NO_SIGNAL", "UNKNOWN", "OWNER"], live.report(
            f"states from OWNER through the {f}: {sequence}"
        )
    last = timeline[-1]
    assert recovered.body["timestamp"] >= last.over - MARGIN_S, live.report(f"OWNER before {last} was over")
    return timeline


async def wait_timeline(outlet: FaultOutlet, count: int) -> list[FaultRecord]:
    deadline = time.monotonic() + TIMEOUT
    while len(outlet.timeline()) < count:
        assert time.monotonic() < deadline, f"the outlet reported {outlet.timeline()}\n{outlet.stderr()}"
        await asyncio.sleep(0.1)
    return outlet.timeline()


def restart_warnings(daemon: Daemon, reason: str) -> list[str]:
    return [
        line
        for line in daemon.output().splitlines()
        if f"WARNING neuroauth.models.streaming: stream {DEVICE} restarts: " in line and reason in line
    ]


def run_through_faults(
    run: FaultRun, expected: list[tuple[str, str]], also: Callable[[Arrivals], None] = lambda live: None
) -> None:
    """Follow the daemon through ``expected`` (see :func:`follow_faults`), check every window
    around the faults, then ``also(live)``; the daemon is still running and stops cleanly."""

    broker, outlet, setup, daemon = run.broker, run.outlet, run.setup, run.daemon

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            await follow_faults(live, setup, outlet, expected)
            check_windows(scores(live, setup), outlet.timeline(), WINDOW_S / SPEED)
            also(live)
            await stop_with_sigterm(daemon, live, setup)

    asyncio.run(scenario())


# -- the tests -----------------------------------------------------------------------------------------


def test_nan_inf_and_huge_samples_restart_the_stream_and_it_recovers(on_faulty_stream):
    run = on_faulty_stream(
        *fault("nan", at=12, duration=0.5, channel="EEG Cz"),
        *fault("inf", at=26, duration=0.5, channel="EEG P4"),
        *fault("huge", at=40, duration=0.5, channel="EEG T3"),
    )

    def also(live: Arrivals) -> None:
        no_signals = [m for m in states(live, run.setup) if m.body["state"] == "NO_SIGNAL"]
        assert all(m.body["reason"].startswith("stream restarted: ") for m in no_signals), no_signals
        assert len(restart_warnings(run.daemon, NAN_INF_HUGE)) >= 3, run.daemon.context()

    expected = [("nan", NAN_INF_HUGE), ("inf", NAN_INF_HUGE), ("huge", NAN_INF_HUGE)]
    run_through_faults(run, expected, also)


def test_flat_and_clipped_channels_are_refused_and_it_recovers(on_faulty_stream):
    run = on_faulty_stream(
        *fault("flat", at=12, duration=7, channel="EEG T3"),
        *fault("clip", at=30, duration=7, channel="EEG F8"),
    )

    expected = [("flat", "channel T7 flat"), ("clip", "channel F8 clipped")]
    run_through_faults(run, expected)


def test_timestamps_stepping_back_or_forward_and_bursts_restart_the_stream_and_it_recovers(on_faulty_stream):
    run = on_faulty_stream(
        *fault("backwards", at=12, duration=0.5),  # the timestamps step back by 0.5 s
        *fault("jump", at=26, duration=1.0),  # and forward by 1 s: a gap
        *fault("burst", at=40, duration=8),  # 8 s of signal held back, then sent at once
        *fault("burst-restamped", at=60, duration=2),  # the same, stamped when sent
    )

    def also(live: Arrivals) -> None:
        assert restart_warnings(run.daemon, "timestamps stood still"), run.daemon.context()
        assert len(restart_warnings(run.daemon, "in the timestamps")) >= 3, run.daemon.context()

    expected = [
        ("backwards", "stream restarted: timestamps stood still"),
        ("jump", "stream restarted: a gap of 1.0"),
        ("burst", "stream restarted: a gap of "),
        ("burst-restamped", "stream restarted: a gap of 0.5"),
    ]
    run_through_faults(run, expected, also)


def test_a_stream_delivering_half_its_announced_rate_is_never_scored(on_faulty_stream):
    # a headset sampling at 250 Hz that announces 500 Hz, in real time: the rate check is on
    run = on_faulty_stream("--announce", "500", "--actual", "250", speed=1.0, check_rate=True)
    broker, setup, daemon = run.broker, run.setup, run.daemon
    reason = "stream restarted: samples arrive at 250.0 Hz but the stream announces 500 Hz"

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            no_signal = await live.wait_for(
                lambda m: state_is(setup, "NO_SIGNAL")(m) and m.body["reason"].startswith(reason),
                "NO_SIGNAL for the rate",
            )
            assert "fix the headset's rate setting or its LSL app" in no_signal.body["reason"], no_signal
            # the stream keeps restarting, one rate check after another, and no window is ever cut
            await until(
                lambda: len(restart_warnings(daemon, "samples arrive at 250.0 Hz")) >= 3,
                "three restarts for the rate",
                daemon.context,
            )
            assert [m.body["state"] for m in states(live, setup)] == ["UNKNOWN", "NO_SIGNAL"], live.report(
                "states"
            )
            assert not scores(live, setup), live.report("windows of a stream at the wrong rate were cut")
            (state,) = await retained(broker, setup, daemon.context, [setup.state])
            assert state.body["state"] == "NO_SIGNAL" and state.body["reason"].startswith(reason), state
            await stop_with_sigterm(daemon, live, setup)

    asyncio.run(scenario())


def test_a_stream_without_the_montage_channels_is_reported_and_retried_until_the_right_one_comes(
    mosquitto, replay, fault_outlet, neuroauthd, templates, tmp_path
):
    broker = mosquitto()
    source_id = replay.unique("src")
    three = fault_outlet("--channels", "3", source_id=source_id)  # T3, F8 and P4: Cz is missing
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    daemon = neuroauthd(setup.config)

    def errors(outlet: FaultOutlet) -> list[str]:
        return [
            line
            for line in daemon.output().splitlines()
            if f" ERROR neuroauth.daemon.service: {DEVICE}: " in line
            and f"LSL stream {outlet.name!r} (source_id {source_id!r}) lacks the channel(s) Cz " in line
        ]

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            no_signal = await live.wait_for(state_is(setup, "NO_SIGNAL"), "NO_SIGNAL for the channels")
            assert "lacks the channel(s) Cz that the model's montage needs" in no_signal.body["reason"]
            assert three.name in no_signal.body["reason"], no_signal
            await until(lambda: len(errors(three)) >= 2, "the daemon retries the stream", daemon.context)
            assert "(it has EEG F8, EEG T3, EEG P4)" in errors(three)[0], errors(three)

            # the same source id with Cz renamed: still refused, named as the new stream
            await asyncio.to_thread(three.kill)
            renamed = fault_outlet("--rename", "EEG Cz=EEG Cx", source_id=source_id)
            await until(lambda: errors(renamed), "the renamed stream is refused", daemon.context)
            assert "EEG Cx" in errors(renamed)[0], errors(renamed)
            assert daemon.running, daemon.context()
            (state,) = await retained(broker, setup, daemon.context, [setup.state])
            assert state.body["state"] == "NO_SIGNAL", state
            assert "lacks the channel(s) Cz" in state.body["reason"], state

            # the right stream under the same source id is read
            await asyncio.to_thread(renamed.kill)
            fault_outlet(source_id=source_id)
            owner = await live.wait_for(state_is(setup, "OWNER"), "OWNER once the right stream is there")
            before = {m.body["state"] for m in states(live, setup)[: states(live, setup).index(owner)]}
            assert before == {"UNKNOWN", "NO_SIGNAL"}, live.report(
                f"states before the right stream: {before}"
            )
            await stop_with_sigterm(daemon, live, setup)

    asyncio.run(scenario())


def test_samples_stamped_far_in_the_future_are_no_signal(on_faulty_stream):
    """An hour ahead of this machine's clock: never scored, never a decision stamped in the future."""
    run = on_faulty_stream(*fault("jump", at=12, duration=3600.0))  # from 12 s of signal on, +1 h
    broker, setup, daemon = run.broker, run.setup, run.daemon

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            refused = await live.wait_for(
                lambda m: (
                    m.topic == setup.state
                    and m.payload
                    and "ahead of this machine's clock" in (m.body.get("reason") or "")
                ),
                "NO_SIGNAL for timestamps an hour ahead",
            )
            assert (refused.body["state"], refused.body["locked"]) == ("NO_SIGNAL", True), refused
            assert refused.body["timestamp"] < time.time() + 60, refused  # stamped by this machine
            mark = live.items.index(refused)
            await asyncio.sleep(3.0)
            assert all(m.body["state"] != "OWNER" for m in states(live, setup, mark)), live.report("unlocked")
        assert daemon.running, daemon.context()

    asyncio.run(scenario())
