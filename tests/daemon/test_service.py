"""``neuroauthd`` end to end: the daemon as a process, real LSL outlets, a real broker and subscriber.

The owner is enrolled once with the shipped checkpoint, in two phases as ``neuroauth enroll``
guides a wearer: 60 s at rest (Subject03's first recording) and the first 20 s of mental
arithmetic (their second).
The owner's stream is Subject03's second recording; a takeover is that recording followed
by Subject06's second one in a single file, so the stream never breaks when the wearer
changes. Replays run at ``SPEED`` times real time: one hop (1 s of signal) every 0.25 s
of wall time, and the daemon has to keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from neuroauth.daemon.lslconfig import loopback_env

from neuroauth.paths import BUNDLED_DATA

pytestmark = pytest.mark.slow

OWNER = "owner"
OWNER_ENROLLMENT = BUNDLED_DATA / "Subject03_1.edf"
OWNER_STREAM = BUNDLED_DATA / "Subject03_2.edf"
IMPOSTOR_STREAM = BUNDLED_DATA / "Subject06_2.edf"
DEVICE = "eeg1"
SPEED = 4.0
HOP_S = 1.0  # the daemon's default hop, in seconds of signal
TIMEOUT = 30.0  # seconds to wait for something that should happen; generous, the machine may be busy
NO_SIGNAL_WITHIN_S = 3.0  # from losing the stream to a retained NO_SIGNAL
WATCHDOG_S = 2.0


# -- the owner's template and the takeover recording ---------------------------------------------


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    """A template directory holding the owner's template, enrolled from bundled recordings."""
    import torch
    from threadpoolctl import threadpool_limits

    from neuroauth.cli import main

    directory = tmp_path_factory.mktemp("templates")
    argv = ["enroll", "--user", OWNER, "--phases", "rest,arithmetic", "--duration", "60,20"]
    argv += ["--from-file", str(OWNER_ENROLLMENT), str(OWNER_STREAM), "--templates-dir", str(directory)]
    # One compute thread (torch, OpenMP, BLAS): on a machine whose cores are busy, worker threads
    # waiting for each other make enrollment several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return directory


@dataclass(frozen=True)
class Takeover:
    path: Path
    owner_seconds: float  # seconds of signal before the impostor's recording starts


@pytest.fixture(scope="module")
def takeover(tmp_path_factory) -> Takeover:
    """The owner's second recording, then the impostor's, as one FIF file."""
    import mne
    import numpy as np

    owner = mne.io.read_raw_edf(OWNER_STREAM, preload=True, verbose="error")
    impostor = mne.io.read_raw_edf(IMPOSTOR_STREAM, preload=True, verbose="error")
    assert owner.ch_names == impostor.ch_names
    assert owner.info["sfreq"] == impostor.info["sfreq"] == 500.0
    data = np.concatenate([owner.get_data(), impostor.get_data()], axis=1).astype(np.float64)  # (C, N) volts
    info = mne.create_info(owner.ch_names, owner.info["sfreq"], ch_types=owner.get_channel_types())
    path = tmp_path_factory.mktemp("takeover") / "takeover_raw.fif"
    mne.io.RawArray(data, info, verbose="error").save(path, verbose="error")
    return Takeover(path, owner.n_times / owner.info["sfreq"])


# -- the daemon ------------------------------------------------------------------------------------


def daemon_env(**extra: str) -> dict[str, str]:
    """This test's environment for a child process: loopback-only LSL, no NEUROAUTH_* or systemd variables."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEUROAUTH_") and k not in drop}
    env = loopback_env(env)
    assert env.get("LSLAPICFG"), "the daemon must inherit a loopback-only LSL configuration"
    return {**env, **extra}


@dataclass(frozen=True)
class Setup:
    """A daemon configuration and the topics it publishes on."""

    config: Path
    prefix: str
    client_id: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def state(self) -> str:
        return self.state_of(DEVICE)

    def state_of(self, device: str) -> str:
        return f"{self.prefix}/{device}/state"

    @property
    def event(self) -> str:
        return f"{self.prefix}/{DEVICE}/event"

    @property
    def score(self) -> str:
        return f"{self.prefix}/{DEVICE}/score"


def write_config(directory: Path, broker, templates: Path, streams: dict[str, str]) -> Setup:
    """Headsets of the owner, ``{device: LSL source id}``; MQTT on ``broker``."""
    tag = uuid.uuid4().hex[:8]
    prefix, client_id = f"test-{tag}/neuroauth", f"neuroauthd-test-{tag}"
    config = directory / "neuroauthd.toml"
    config.write_text(
        f"""\
log_level = "INFO"

[lsl]
loopback_only = true

[model]
check_rate = false  # the replays run faster than real time

[templates]
directory = {json.dumps(str(templates))}

[mqtt]
host = "{broker.host}"
port = {broker.port}
prefix = "{prefix}"
client_id = "{client_id}"
keepalive = 5
reconnect_min_s = 0.1
reconnect_max_s = 0.5
"""
    )
    with config.open("a") as toml:
        for device, source_id in streams.items():
            toml.write(
                f"""
[[headsets]]
device = "{device}"
user = "{OWNER}"
stream = {{ source_id = {json.dumps(source_id)} }}
resolve_timeout_s = 1.0
"""
            )
    return Setup(config, prefix, client_id)


class Daemon:
    """One ``neuroauthd`` process; its output (stdout and stderr) goes to ``log``."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.started_at = time.time()
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "neuroauth.daemon.main", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=config.parent,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def context(self) -> str:
        """The daemon's state and the end of its log, for failure messages."""
        code = self.process.poll()
        state = "running" if code is None else f"exited with status {code}"
        tail = "\n".join(self.output().splitlines()[-80:])
        return f"--- neuroauthd ({state}), end of {self.log} ---\n{tail}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"neuroauthd did not exit within {timeout:g} s\n{self.context()}") from None

    def kill(self) -> None:
        if self.running:
            self.process.kill()
        self.process.wait(15)


@pytest.fixture
def neuroauthd(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``neuroauthd(config, **environment)`` starts a daemon; any still running is killed at teardown."""
    started: list[Daemon] = []

    def start(config: Path, **env: str) -> Daemon:
        daemon = Daemon(config, tmp_path / f"neuroauthd-{len(started)}.log", daemon_env(**env))
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


# -- observing it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # time.monotonic() on arrival

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.payload)

    def __str__(self) -> str:
        text = self.payload[:200].decode(errors="replace")
        return f"{self.at:.2f} {self.topic} q{self.qos} r{int(self.retain)} {text}"


@dataclass(frozen=True)
class Notification:
    fields: tuple[str, ...]
    at: float  # time.monotonic() on arrival

    def __str__(self) -> str:
        return f"{self.at:.2f} {' | '.join(self.fields)}"


class Arrivals:
    """What one observer received, in order, and a way to wait for it."""

    def __init__(self, context: Callable[[], str], routine: Callable[[Any], bool], routine_name: str) -> None:
        """``context()`` adds to failure messages; those leave out ``routine`` items (``routine_name``)."""
        self.items: list[Any] = []
        self._new = asyncio.Event()
        self._context = context
        self._routine = routine
        self._routine_name = routine_name

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._new.set()

    def mark(self) -> int:
        """A position in :attr:`items`: pass it as ``after`` to wait for what comes later."""
        return len(self.items)

    async def wait_many(
        self,
        predicate: Callable[[Any], bool],
        count: int,
        what: str,
        *,
        after: int = 0,
        timeout: float = TIMEOUT,
    ) -> list[Any]:
        """The first ``count`` items from ``after`` on that match, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = [item for item in self.items[after:] if predicate(item)]
            if len(found) >= count:
                return found[:count]
            self._new.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self.report(f"no {what} within {timeout:g} s"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    async def wait_for(
        self, predicate: Callable[[Any], bool], what: str, *, after: int = 0, timeout: float = TIMEOUT
    ) -> Any:
        return (await self.wait_many(predicate, 1, what, after=after, timeout=timeout))[0]

    def report(self, headline: str) -> str:
        shown = [item for item in self.items if not self._routine(item)]
        hidden = len(self.items) - len(shown)
        lines = "\n".join(f"  {item}" for item in shown[-60:])
        more = f" ({hidden} {self._routine_name} not shown)" if hidden else ""
        return f"{headline} (now {time.monotonic():.2f}); received{more}:\n{lines}\n{self._context()}"


@contextlib.asynccontextmanager
async def subscriber(broker, setup: Setup, context: Callable[[], str]) -> AsyncIterator[Arrivals]:
    """Everything published under the setup's prefix, from the moment this subscriber has subscribed."""
    arrivals = Arrivals(context, routine=lambda m: m.topic.endswith("/score"), routine_name="scores")

    async def collect(client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker may be stopped under it
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
                arrivals.add(Message(str(m.topic), payload, m.qos, bool(m.retain), time.monotonic()))

    identifier = f"test-subscriber-{uuid.uuid4().hex[:8]}"
    async with aiomqtt.Client(broker.host, broker.port, identifier=identifier) as client:
        await client.subscribe(f"{setup.prefix}/#", qos=1)
        task = asyncio.create_task(collect(client), name=identifier)
        try:
            yield arrivals
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def retained(broker, setup: Setup, context: Callable[[], str], topics: list[str]) -> list[Message]:
    """What a subscriber connecting now is handed: the first message on each of ``topics``."""
    async with subscriber(broker, setup, context) as late:
        return [
            await late.wait_for(lambda m, topic=topic: m.topic == topic, f"{topic} for a late subscriber")
            for topic in topics
        ]


def state_is(setup: Setup, name: str, device: str = DEVICE) -> Callable[[Message], bool]:
    return lambda m: m.topic == setup.state_of(device) and bool(m.payload) and m.body["state"] == name


def event_is(setup: Setup, kind: str) -> Callable[[Message], bool]:
    return lambda m: m.topic == setup.event and m.body["kind"] == kind


def status_is(setup: Setup, value: str) -> Callable[[Message], bool]:
    return lambda m: m.topic == setup.status and m.payload == value.encode()


async def until(condition: Callable[[], bool], what: str, context: Callable[[], str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT:g} s waiting until {what}\n{context()}")
        await asyncio.sleep(0.05)


async def stop_with_sigterm(daemon: Daemon, live: Arrivals, setup: Setup) -> None:
    """The daemon is still running, unharmed; SIGTERM stops it with status 0 after it says offline."""
    assert daemon.running, daemon.context()
    assert "Traceback" not in daemon.output(), daemon.context()
    mark = live.mark()
    daemon.send(signal.SIGTERM)
    await live.wait_for(status_is(setup, "offline"), "offline after SIGTERM", after=mark)
    assert await asyncio.to_thread(daemon.wait) == 0, daemon.context()


def check_event(message: Message, setup: Setup, kind: str, previous: str, state: str) -> dict[str, Any]:
    """An event as documented: QoS 1, not retained, with kind, device, seq and a unique event_id."""
    event = message.body
    assert message.qos == 1 and not message.retain, message
    assert (event["kind"], event["previous"], event["state"]) == (kind, previous, state), event
    assert event["device"] == DEVICE and event["user"] == OWNER, event
    assert isinstance(event["seq"], int) and event["seq"] >= 1, event
    assert re.fullmatch(r"[0-9a-f]{32}", event["event_id"]), event
    return event


def status_publishes(broker, setup: Setup) -> list[str]:
    """The broker's log lines of each status message the daemon itself sent (not its will)."""
    sender = f"Received PUBLISH from {setup.client_id} "
    return [line for line in broker.log().splitlines() if sender in line and f"'{setup.status}'" in line]


def assert_clean_goodbye(broker, setup: Setup, daemon: Daemon) -> None:
    """The daemon said offline itself (7 bytes, after online's 6) and disconnected cleanly."""
    sent = status_publishes(broker, setup)
    assert sent and "(7 bytes)" in sent[-1], f"{sent}\n{daemon.context()}"
    assert f"Client {setup.client_id} disconnected." in broker.log(), broker.log()[-3000:]


# -- the tests ---------------------------------------------------------------------------------------


def test_owner_reaches_owner_and_losing_the_stream_locks_until_it_returns(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    broker = mosquitto()
    source_id = replay.unique("src")
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    stream = replay(OWNER_STREAM, source_id=source_id, speed=SPEED, loop=True)
    daemon = neuroauthd(setup.config, NEUROAUTH_MQTT__STATE_HEARTBEAT_S="1")

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            # The owner's stream unlocks; a subscriber arriving later is handed the same state.
            owner = await live.wait_for(state_is(setup, "OWNER"), "OWNER for the owner's stream")
            unlock = check_event(
                await live.wait_for(event_is(setup, "unlock"), "an unlock event"),
                setup,
                "unlock",
                "UNKNOWN",
                "OWNER",
            )
            status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
            assert status.payload == b"online" and status.retain and status.qos == 1, status
            assert state.retain and state.qos == 1, state
            # the latest published, or a heartbeat of it since (the same state, a later timestamp)
            # (times are converted from the LSL clock at each publication: equal to within a few ms)
            fixed = {k: v for k, v in state.body.items() if k not in ("timestamp", "since")}
            assert fixed == {k: v for k, v in owner.body.items() if k not in ("timestamp", "since")}, (
                state,
                owner,
            )
            assert abs(state.body["since"] - owner.body["since"]) < 0.01, (state, owner)
            assert state.body["timestamp"] >= owner.body["timestamp"], f"retained {state}, published {owner}"
            body = state.body
            assert (body["state"], body["locked"], body["user"]) == ("OWNER", False, OWNER), body
            assert isinstance(body["score"], float) and math.isfinite(body["score"]), body
            # times are seconds since the epoch, not the LSL clock
            assert daemon.started_at <= body["since"] <= body["timestamp"] + 0.01 <= time.time() + 0.01, body

            # The replay runs at SPEED: consecutive windows are one hop of signal apart, none
            # skipped (a daemon falling behind would drop samples and restart the stream).
            scores = await live.wait_many(
                lambda m: m.topic == setup.score, 12, "12 window scores", after=live.mark()
            )
            stamps = [m.body["timestamp"] for m in scores]
            steps = [b - a for a, b in itertools.pairwise(stamps)]
            assert all(abs(step - HOP_S / SPEED) < 0.01 for step in steps), live.report(
                f"window steps {steps}"
            )
            assert all(m.body["problems"] == [] and m.body["state"] == "OWNER" for m in scores), scores

            # Unchanged, the state is still published every heartbeat (1 s here) with a fresh
            # timestamp: a consumer can tell it from one a vanished daemon left behind.
            beats = await live.wait_many(
                lambda m: m.topic == setup.state, 3, "3 heartbeats of the state", after=live.mark()
            )
            assert all(m.body["state"] == "OWNER" for m in beats), beats
            since = [m.body["since"] for m in beats]  # the same moment, up to the clock's conversion
            assert max(since) - min(since) < 0.01, beats
            stamps = [m.body["timestamp"] for m in beats]
            assert all(0.5 < b - a < 2.0 for a, b in itertools.pairwise(stamps)), live.report(f"{stamps}")
            (kept,) = await retained(broker, setup, daemon.context, [setup.state])
            assert kept.retain and kept.body["timestamp"] >= stamps[-1], (kept, stamps)  # the broker keeps it

            # The outlet dies: NO_SIGNAL (locked) within NO_SIGNAL_WITHIN_S, and a lock event.
            mark = live.mark()
            killed_at = time.monotonic()
            await asyncio.to_thread(stream.kill)
            no_signal = await live.wait_for(
                state_is(setup, "NO_SIGNAL"), "NO_SIGNAL after the replay was killed", after=mark
            )
            assert no_signal.at - killed_at <= NO_SIGNAL_WITHIN_S, (
                f"NO_SIGNAL came {no_signal.at - killed_at:.2f} s after the kill\n{live.report('messages')}"
            )
            lock = check_event(
                await live.wait_for(event_is(setup, "lock"), "a lock event", after=mark),
                setup,
                "lock",
                "OWNER",
                "NO_SIGNAL",
            )
            assert lock["seq"] == unlock["seq"] + 1, (unlock, lock)
            assert unlock["event_id"] != lock["event_id"]
            status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
            assert status.payload == b"online"
            body = state.body
            assert (body["state"], body["locked"]) == ("NO_SIGNAL", True), body
            assert source_id in body["reason"], body
            assert daemon.running, daemon.context()

            # The outlet comes back under the same source id: UNKNOWN, then OWNER again.
            mark = live.mark()
            await asyncio.to_thread(stream.start)
            await live.wait_for(state_is(setup, "OWNER"), "OWNER once the stream is back", after=mark)
            published = [m.body["state"] for m in live.items[mark:] if m.topic == setup.state]
            states = [k for k, _ in itertools.groupby(published)]  # heartbeats repeat a state
            if states[0] == "NO_SIGNAL":  # a heartbeat of the state before the stream came back
                states = states[1:]
            assert states == ["UNKNOWN", "OWNER"], live.report(f"states after the restart: {published}")
            unlock_again = check_event(
                await live.wait_for(event_is(setup, "unlock"), "an unlock event", after=mark),
                setup,
                "unlock",
                "UNKNOWN",
                "OWNER",
            )
            assert unlock_again["seq"] == lock["seq"] + 1, (lock, unlock_again)

            # SIGTERM while OWNER: a lock event and a locked retained state, then offline, exit 0.
            mark = live.mark()
            daemon.send(signal.SIGTERM)
            await live.wait_for(status_is(setup, "offline"), "offline after SIGTERM", after=mark)
            stopped = await live.wait_for(event_is(setup, "lock"), "a lock event on stopping", after=mark)
            check_event(stopped, setup, "lock", "OWNER", "NO_SIGNAL")
            assert stopped.body["reason"] == "neuroauthd stopped", stopped
            assert await asyncio.to_thread(daemon.wait) == 0, daemon.context()

        status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
        assert status.payload == b"offline" and status.retain, status
        assert (state.body["state"], state.body["locked"]) == ("NO_SIGNAL", True), state

    asyncio.run(scenario())
    assert_clean_goodbye(broker, setup, daemon)


def test_an_impostor_taking_over_the_headset_is_locked_out(
    mosquitto, replay, neuroauthd, templates, takeover, tmp_path
):
    broker = mosquitto()
    source_id = replay.unique("src")
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    replay(takeover.path, source_id=source_id, speed=SPEED, loop=False)
    # The replay pushes its first sample just after it says it is ready (0.5 s of slack for that),
    # so the impostor's samples go out no earlier than this.
    impostor_from = time.monotonic() - 0.5 + takeover.owner_seconds / SPEED
    daemon = neuroauthd(setup.config)

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            owner = await live.wait_for(state_is(setup, "OWNER"), "OWNER during the owner's part")
            assert owner.at < impostor_from, live.report("OWNER came only after the takeover")
            mark = live.items.index(owner) + 1
            lock = await live.wait_for(event_is(setup, "lock"), "a lock event after the takeover", after=mark)
            check_event(lock, setup, "lock", "OWNER", "IMPOSTOR")
            assert lock.at >= impostor_from, live.report("locked before the impostor's part of the stream")
            states = [m.body["state"] for m in live.items[mark:] if m.topic == setup.state]
            assert states[:1] == ["IMPOSTOR"], live.report(f"states after OWNER: {states}")

            status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
            assert status.payload == b"online", status
            body = state.body
            assert state.retain and (body["state"], body["locked"], body["user"]) == (
                "IMPOSTOR",
                True,
                OWNER,
            ), state
            assert body["since"] >= owner.body["since"], body

            # SIGINT stops the daemon as SIGTERM does.
            mark = live.mark()
            daemon.send(signal.SIGINT)
            await live.wait_for(status_is(setup, "offline"), "offline after SIGINT", after=mark)
            assert await asyncio.to_thread(daemon.wait) == 0, daemon.context()

        (status,) = await retained(broker, setup, daemon.context, [setup.status])
        assert status.payload == b"offline" and status.retain, status

    asyncio.run(scenario())
    assert_clean_goodbye(broker, setup, daemon)


def test_after_the_broker_restarts_the_current_states_are_republished(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    broker = mosquitto()  # persistence off: after a restart it holds only what is sent to it again
    streams = {DEVICE: replay.unique("src"), "eeg2": replay.unique("src")}
    setup = write_config(tmp_path, broker, templates, streams)
    replay(OWNER_STREAM, source_id=streams[DEVICE], speed=SPEED, loop=True)
    second = replay(OWNER_STREAM, source_id=streams["eeg2"], speed=SPEED, loop=True)
    daemon = neuroauthd(setup.config)
    connected = "published status and the state of 2 device(s)"

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            for device in streams:
                await live.wait_for(state_is(setup, "OWNER", device), f"OWNER on {device}")

        stopped_at = time.time()
        await asyncio.to_thread(broker.stop)
        await until(
            lambda: "lost the connection to the MQTT broker" in daemon.output(),
            "the daemon sees the broker gone",
            daemon.context,
        )
        # eeg2 goes quiet while the broker is away: its state changes with nobody to tell; eeg1's stays.
        await asyncio.to_thread(second.kill)
        await until(
            lambda: "eeg2: lock (OWNER -> NO_SIGNAL)" in daemon.output(), "eeg2 locks", daemon.context
        )
        await until(
            lambda: "dropped lock event seq 2 of eeg2" in daemon.output(),
            "the lock event is dropped",
            daemon.context,
        )
        await asyncio.sleep(max(0.0, stopped_at + 3.0 - time.time()))
        assert daemon.running, daemon.context()

        await asyncio.to_thread(broker.start)
        await until(lambda: daemon.output().count(connected) >= 2, "the daemon reconnects", daemon.context)
        status, unchanged, changed = await retained(
            broker, setup, daemon.context, [setup.status, setup.state_of(DEVICE), setup.state_of("eeg2")]
        )
        assert status.payload == b"online" and status.retain, status
        # eeg1's state did not change while the broker was away, and the broker had lost it.
        assert unchanged.retain and unchanged.body["state"] == "OWNER", unchanged
        assert unchanged.body["since"] < stopped_at, unchanged
        body = changed.body
        assert changed.retain and (body["state"], body["locked"]) == ("NO_SIGNAL", True), changed
        assert body["since"] > stopped_at, f"not the state decided while the broker was away: {changed}"

        # Decisions go on over the new connection.
        async with subscriber(broker, setup, daemon.context) as live:
            mark = live.mark()
            await asyncio.to_thread(second.start)
            await live.wait_for(
                state_is(setup, "OWNER", "eeg2"), "OWNER once eeg2's stream is back", after=mark
            )
            # SIGHUP: stopped as by SIGTERM (both headsets locked, then offline), status 75 for systemd
            # to start it again; a running daemon does not reload its configuration or templates
            daemon.send(signal.SIGHUP)
            await live.wait_for(status_is(setup, "offline"), "offline after SIGHUP", after=mark)
            states = {m.topic: m.body["state"] for m in live.items[mark:] if m.topic.endswith("/state")}
            assert states[setup.state_of("eeg2")] == "NO_SIGNAL", live.report(f"states: {states}")
        assert await asyncio.to_thread(daemon.wait) == 75, daemon.context()
        assert "stopped on SIGHUP" in daemon.context(), daemon.context()

    asyncio.run(scenario())


def test_systemd_is_told_ready_status_watchdog_and_stopping(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    broker = mosquitto()
    source_id = replay.unique("src")
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    path = tmp_path / "notify.sock"

    async def scenario(sock: socket.socket) -> None:
        daemon = neuroauthd(
            setup.config, NOTIFY_SOCKET=str(path), WATCHDOG_USEC=str(round(WATCHDOG_S * 1_000_000))
        )
        notes = Arrivals(daemon.context, routine=lambda n: n.fields == ("WATCHDOG=1",), routine_name="pings")

        async def receive() -> None:
            loop = asyncio.get_running_loop()
            while True:
                data = await loop.sock_recv(sock, 4096)
                notes.add(Notification(tuple(data.decode().split("\n")), time.monotonic()))

        receiver = asyncio.create_task(receive(), name="notify-socket")
        try:
            async with subscriber(broker, setup, daemon.context) as live:
                # Broker up, stream not yet: alive (watchdog), but not ready.
                await live.wait_for(status_is(setup, "online"), "online")
                await until(
                    lambda: f"no LSL stream with source_id '{source_id}'" in daemon.output(),
                    "the daemon has looked for the stream",
                    daemon.context,
                )
                await notes.wait_many(lambda n: "WATCHDOG=1" in n.fields, 2, "watchdog pings before READY")
                assert not [n for n in notes.items if "READY=1" in n.fields], notes.report(
                    "READY=1 too early"
                )

                await asyncio.to_thread(replay, OWNER_STREAM, source_id=source_id, speed=SPEED, loop=True)
                ready = await notes.wait_for(lambda n: "READY=1" in n.fields, "READY=1 once the stream is up")
                status = [f for f in ready.fields if f.startswith("STATUS=")]
                assert status and f"{DEVICE} " in status[0] and "broker connected" in status[0], ready

                # The periodic status line, once the owner is recognised.
                await live.wait_for(state_is(setup, "OWNER"), "OWNER")
                periodic = await notes.wait_for(
                    lambda n: (
                        len(n.fields) == 1
                        and n.fields[0].startswith(f"STATUS={DEVICE} OWNER; broker connected;")
                    ),
                    "a periodic STATUS= line with OWNER",
                )
                windows = re.search(r"\bwindows=(\d+)\b", periodic.fields[0])
                assert windows and int(windows[1]) > 0, periodic
                pings = [n.at for n in notes.items if n.fields == ("WATCHDOG=1",)]
                gaps = [b - a for a, b in itertools.pairwise(pings)]
                assert len(pings) >= 5 and max(gaps) < WATCHDOG_S, notes.report(f"watchdog gaps {gaps}")

                mark = notes.mark()
                daemon.send(signal.SIGTERM)
                await notes.wait_for(
                    lambda n: "STOPPING=1" in n.fields, "STOPPING=1 after SIGTERM", after=mark
                )
                assert await asyncio.to_thread(daemon.wait) == 0, daemon.context()
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        asyncio.run(scenario(sock))


# -- configuration errors ------------------------------------------------------------------------------

VALID = """
[[headsets]]
device = "eeg1"
user = "owner"
stream = { source_id = "a" }
"""

NOT_ENROLLED = (
    VALID
    + """
[[headsets]]
device = "eeg2"
user = "nobody"
stream = { source_id = "b" }
"""
)

SCHEMA_ERRORS = """
[mqtt]
port = "not-a-port"
hots = "127.0.0.1"

[[headsets]]
device = "eeg1"
user = "owner"
stream = { source_id = "a" }

[[headsets]]
device = "eeg1"
user = "nobody"
stream = { source_id = "b" }
"""

SCHEMA_ERROR_LINES = (
    "  mqtt.port: Input should be a valid integer, unable to parse string as an integer (got 'not-a-port')",
    "  mqtt.hots: unknown key; the keys here are ",
    "  headsets: device 'eeg1' of headsets[1] is already used by headsets[0]",
)
NOT_ENROLLED_LINE = "  headsets.1.user: no template for user 'nobody'"


def write_toml(path: Path, templates: Path, body: str) -> Path:
    path.write_text(f"[templates]\ndirectory = {json.dumps(str(templates))}\n{body}")
    return path


def run_neuroauthd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neuroauth.daemon.main", *args],
        capture_output=True,
        text=True,
        env=daemon_env(),
        cwd=tmp_path,
        timeout=120,
    )


def test_configuration_errors_are_reported_by_key_path(templates, tmp_path):
    bad = write_toml(tmp_path / "bad.toml", templates, SCHEMA_ERRORS)
    # checking only also looks for the owners' templates; starting stops at the file's own errors
    for args, count in ((["--validate-config"], 4), ([], 3)):
        result = run_neuroauthd(tmp_path, "--config", str(bad), *args)
        assert result.returncode != 0, result
        assert f"the configuration in {bad} is invalid ({count} problem(s)):" in result.stderr, result.stderr
        for line in SCHEMA_ERROR_LINES:
            assert f"\n{line}" in result.stderr, result.stderr

    # A file without schema errors whose second headset belongs to someone never enrolled.
    not_enrolled = write_toml(tmp_path / "not-enrolled.toml", templates, NOT_ENROLLED)
    for args in (["--validate-config"], []):
        result = run_neuroauthd(tmp_path, "--config", str(not_enrolled), *args)
        assert result.returncode != 0, result
        assert f"\n{NOT_ENROLLED_LINE}" in result.stderr, result.stderr
        assert "enroll them first with `neuroauth enroll --user nobody`" in result.stderr, result.stderr

    valid = write_toml(tmp_path / "valid.toml", templates, VALID)
    result = run_neuroauthd(tmp_path, "--config", str(valid), "--validate-config")
    assert result.returncode == 0, result
    assert f"the configuration in {valid} is valid: eeg1 (owner owner)" in result.stdout, result


def test_a_missing_template_is_reported_along_with_the_other_problems(templates, tmp_path):
    bad = write_toml(tmp_path / "bad.toml", templates, SCHEMA_ERRORS)
    result = run_neuroauthd(tmp_path, "--config", str(bad), "--validate-config")
    assert result.returncode != 0, result
    assert all(f"\n{line}" in result.stderr for line in SCHEMA_ERROR_LINES), result.stderr
    assert f"\n{NOT_ENROLLED_LINE}" in result.stderr, result.stderr


def test_a_stream_other_than_the_enrolled_one_is_no_signal(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    """Enrolled from a live stream, the owner's template names it; the same EEG from a stream with
    another source id (a program imitating the headset) is refused, while the enrolled one unlocks."""
    import dataclasses

    from neuroauth.daemon.replay import Replayer
    from neuroauth.enroll.store import TemplateStore

    broker = mosquitto()
    enrolled, imitation = replay.unique("src"), replay.unique("src")
    headset = {
        "source_id": enrolled,
        "host": socket.gethostname(),
        "channels": list(Replayer(OWNER_STREAM).labels),
    }
    pinned = TemplateStore(tmp_path / "pinned" / "templates")
    pinned.save(dataclasses.replace(TemplateStore(templates).load(OWNER), stream=headset))
    setup = write_config(tmp_path, broker, pinned.directory, {DEVICE: enrolled, "eeg2": imitation})
    replay(OWNER_STREAM, source_id=enrolled, speed=SPEED, loop=True)
    replay(OWNER_STREAM, source_id=imitation, speed=SPEED, loop=True)
    daemon = neuroauthd(setup.config)

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            await live.wait_for(state_is(setup, "OWNER", DEVICE), "OWNER on the enrolled stream")
            refused = await live.wait_for(
                lambda m: m.topic == setup.state_of("eeg2") and "enrolled from" in (m.body["reason"] or ""),
                "eeg2 refused",
            )
            assert refused.body["state"] == "NO_SIGNAL" and refused.body["locked"], refused
            assert f"source_id {imitation!r} (enrolled from {enrolled!r})" in refused.body["reason"], refused
            assert not any(
                m.topic == setup.state_of("eeg2") and m.body["state"] == "OWNER" for m in live.items
            ), live.report("eeg2 must never unlock")

    asyncio.run(scenario())


def catches(pid: int, signum: int) -> float:
    """Wait until process ``pid`` has a handler for ``signum`` (SigCgt in /proc); the time it had."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{pid}/status").read_text()
            (mask,) = re.findall(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)
            if int(mask, 16) >> (signum - 1) & 1:
                return time.time()
        time.sleep(0.002)
    raise AssertionError(f"process {pid} never caught signal {signum}")


def test_a_sigterm_while_starting_stops_it_cleanly(mosquitto, neuroauthd, templates, tmp_path):
    """SIGTERM the moment the process catches it, long before the event loop runs: held, then a clean
    stop (the headset published locked, offline, status 0), not death by the signal."""
    broker = mosquitto()
    setup = write_config(tmp_path, broker, templates, {DEVICE: "no-such-stream"})
    daemon = neuroauthd(setup.config)
    caught_at = catches(daemon.process.pid, signal.SIGTERM)
    assert caught_at - daemon.started_at < 0.5, (
        f"SIGTERM caught only after {caught_at - daemon.started_at:.2f} s"
    )
    assert "neuroauthd starting" not in daemon.output(), daemon.context()  # the loop is not running yet
    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.context()
    assert "stopping: every headset locked" in daemon.output(), daemon.context()

    async def scenario() -> None:
        status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
        assert status.payload == b"offline", status
        assert state.body["locked"] and state.body["reason"] == "neuroauthd stopped", state

    asyncio.run(scenario())
    assert_clean_goodbye(broker, setup, daemon)
