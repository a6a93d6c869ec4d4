"""``neuroauthd`` through outages: the EEG stream or the broker gone, at start-up or mid-run,
for a second or a minute, one or both at once.

The daemon never exits on its own: while a stream is gone its headset is NO_SIGNAL (locked)
with a reason that names the stream, while the broker is gone the decisions go on and the
current state is published once it is back, and each part is picked up again by itself.
The parts are real: ``neuroauth.daemon.replay`` outlets and a mosquitto broker.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import test_service
from test_service import (
    DEVICE,
    NO_SIGNAL_WITHIN_S,
    OWNER_STREAM,
    SPEED,
    Arrivals,
    Setup,
    retained,
    state_is,
    stop_with_sigterm,
    subscriber,
    until,
    write_config,
)

pytestmark = pytest.mark.slow

# fixtures: the owner's template (enrolled once per module) and neuroauthd as a process
templates = test_service.templates
neuroauthd = test_service.neuroauthd

WAITING_FOR_STREAM = "no LSL stream with source_id "
WAITING_FOR_BROKER = "cannot connect to the MQTT broker"


def states(live: Arrivals, setup: Setup, after: int = 0) -> list[str]:
    return [m.body["state"] for m in live.items[after:] if m.topic == setup.state and m.payload]


@pytest.fixture
def owner_streaming(mosquitto, replay, neuroauthd, templates, tmp_path):
    """A broker, the owner's recording replayed, and neuroauthd reading it:
    ``(broker, source_id, setup, stream, daemon)``."""
    broker = mosquitto()
    source_id = replay.unique("src")
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    stream = replay(OWNER_STREAM, source_id=source_id, speed=SPEED, loop=True)
    daemon = neuroauthd(setup.config)
    return broker, source_id, setup, stream, daemon


def test_a_stream_gone_for_a_second_and_for_a_minute_locks_until_it_is_back(owner_streaming):
    broker, source_id, setup, stream, daemon = owner_streaming

    async def outage(live: Arrivals, seconds: float) -> None:
        """OWNER, the outlet gone for ``seconds``, OWNER again; locked from the loss to the return."""
        await live.wait_for(state_is(setup, "OWNER"), f"OWNER before a {seconds:g} s outage")
        assert states(live, setup)[-1] == "OWNER", live.report(f"the state before a {seconds:g} s outage")
        mark = live.mark()
        gone_at = time.monotonic()
        await asyncio.to_thread(stream.kill)
        no_signal = await live.wait_for(
            state_is(setup, "NO_SIGNAL"), "NO_SIGNAL once the stream is gone", after=mark
        )
        assert no_signal.at - gone_at <= NO_SIGNAL_WITHIN_S, live.report("NO_SIGNAL came late")
        assert source_id in no_signal.body["reason"], no_signal
        await asyncio.sleep(max(0.0, gone_at + seconds - time.monotonic()))

        # all along: the daemon runs, says it is online, the headset is locked and it says why
        assert daemon.running, daemon.context()
        status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
        assert status.payload == b"online", status
        assert (state.body["state"], state.body["locked"]) == ("NO_SIGNAL", True), state
        assert source_id in state.body["reason"], state

        back = live.mark()
        await asyncio.to_thread(stream.start)
        await live.wait_for(state_is(setup, "OWNER"), f"OWNER after a {seconds:g} s outage", after=back)
        assert states(live, setup, mark)[0] == "NO_SIGNAL", live.report("the first state after the loss")
        assert "OWNER" not in states(live, setup, mark)[: states(live, setup, mark).index("UNKNOWN")], (
            live.report("OWNER while the stream was gone")
        )

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            await outage(live, 1.0)
            tried = daemon.output().count(WAITING_FOR_STREAM)
            await outage(live, 60.0)
            # while it was gone the daemon kept looking for it, and said so
            assert daemon.output().count(WAITING_FOR_STREAM) > tried, daemon.context()
            await stop_with_sigterm(daemon, live, setup)

    asyncio.run(scenario())


def test_a_silent_stream_locks_is_dropped_and_is_read_again_when_it_speaks(owner_streaming):
    broker, _, setup, stream, daemon = owner_streaming

    async def scenario() -> None:
        async with subscriber(broker, setup, daemon.context) as live:
            await live.wait_for(state_is(setup, "OWNER"), "OWNER before the stream falls silent")
            # past the start-up grace (a window's length and 1 s from the connection), in which a
            # missing window is the stream warming up
            await asyncio.sleep(5.0)
            mark = live.mark()
            silent_at = time.monotonic()
            stream.send(signal.SIGSTOP)  # the outlet's connection stays open; no sample comes
            try:
                no_signal = await live.wait_for(state_is(setup, "NO_SIGNAL"), "NO_SIGNAL", after=mark)
                assert no_signal.at - silent_at <= NO_SIGNAL_WITHIN_S + 1.0, live.report("NO_SIGNAL late")
                assert no_signal.body["reason"].startswith("no window for "), no_signal
                # after three times no_signal_after_s without a sample the inlet is dropped and sought again
                await until(
                    lambda: "no samples for 9 s; reconnecting" in daemon.output(),
                    "the daemon gives the silent inlet up",
                    daemon.context,
                )
                assert daemon.running, daemon.context()
            finally:
                stream.send(signal.SIGCONT)
            await live.wait_for(state_is(setup, "OWNER"), "OWNER once the stream speaks again", after=mark)
            assert "OWNER" not in states(live, setup, mark)[:-1], live.report("OWNER while silent")
            await stop_with_sigterm(daemon, live, setup)

    asyncio.run(scenario())


def test_broker_and_stream_absent_at_start_then_both_gone_at_once_mid_run(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    broker = mosquitto()
    broker.stop()  # its port is kept: the daemon is configured for a broker not yet there
    source_id = replay.unique("src")
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    daemon = neuroauthd(setup.config)

    async def scenario() -> None:
        # neither broker nor stream: the daemon waits for both, says so, and does not exit
        await until(
            lambda: WAITING_FOR_BROKER in daemon.output() and WAITING_FOR_STREAM in daemon.output(),
            "the daemon says it waits for the broker and the stream",
            daemon.context,
        )
        await asyncio.sleep(2.0)
        assert daemon.running, daemon.context()

        # the broker comes: it is handed the headset's current state, NO_SIGNAL naming the stream
        await asyncio.to_thread(broker.start)
        status, state = await retained(broker, setup, daemon.context, [setup.status, setup.state])
        assert status.payload == b"online", status
        assert (state.body["state"], state.body["locked"]) == ("NO_SIGNAL", True), state
        assert source_id in state.body["reason"], state

        # then the stream: OWNER
        async with subscriber(broker, setup, daemon.context) as live:
            stream = await asyncio.to_thread(
                replay, OWNER_STREAM, source_id=source_id, speed=SPEED, loop=True
            )
            await live.wait_for(state_is(setup, "OWNER"), "OWNER once the stream is there")

        # both gone at once: the decision goes on without a broker to tell
        await asyncio.gather(asyncio.to_thread(broker.stop), asyncio.to_thread(stream.kill))
        await until(
            lambda: (
                "lost the connection to the MQTT broker" in daemon.output()
                and f"{DEVICE}: lock (OWNER -> NO_SIGNAL)" in daemon.output()
            ),
            "the daemon sees both gone and locks",
            daemon.context,
        )
        await asyncio.sleep(2.0)
        assert daemon.running, daemon.context()

        # both back at once: the locked state first, then OWNER once the signal says so
        await asyncio.to_thread(broker.start)
        async with subscriber(broker, setup, daemon.context) as live:
            await asyncio.to_thread(stream.start)
            await live.wait_for(state_is(setup, "OWNER"), "OWNER once both are back")
            seen = states(live, setup)
            assert seen[0] == "NO_SIGNAL" and seen[-1] == "OWNER", live.report(f"states: {seen}")
            await stop_with_sigterm(daemon, live, setup)

    asyncio.run(scenario())
