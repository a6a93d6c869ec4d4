"""Beyond one machine: a ``neuroauthd`` per host publishing to one broker, and a site's broker bridged
to a central one with the shipped ``deploy/mosquitto-bridge.conf``.

The parts are real: daemons as processes reading replayed recordings, mosquitto brokers on
127.0.0.1, the central one behind TLS with the shipped ``deploy/mosquitto-central.acl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest
import test_mqtt
import test_service
from neuroauth.daemon.mqtt import MqttPublisher
from neuroauth.daemon.watch import evaluate
from test_mqtt import Recorder, publish_as
from test_service import (
    DEVICE,
    OWNER_STREAM,
    SPEED,
    Setup,
    retained,
    state_is,
    status_is,
    status_publishes,
    stop_with_sigterm,
    subscriber,
    write_config,
)

from neuroauth import local_broker
from neuroauth.config import MqttSettings

pytestmark = pytest.mark.slow

# fixtures: the owner's template (enrolled once per module), neuroauthd as a process, a test CA
templates = test_service.templates
neuroauthd = test_service.neuroauthd
certificates = test_mqtt.certificates

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BRIDGE = DEPLOY / "mosquitto-bridge.conf"
CENTRAL_ACL = DEPLOY / "mosquitto-central.acl"
SITE = "site-a"  # the site the shipped bridge and central ACL are written for
LINK = f"neuroauth-bridge/{SITE}/state"  # the shipped bridge's notification topic
STALE_AFTER_S = 10.0  # for the reference consumer's verdict; the daemons here beat every second
TIMEOUT = 60.0  # two daemons share the machine's cores here: give them time


# -- two daemons, one broker --------------------------------------------------------------------------


def config_under(prefix: str, *args) -> Setup:
    """``write_config(*args)`` with the daemon's topics under ``prefix``."""
    setup = write_config(*args)
    text, line = setup.config.read_text(), f'prefix = "{setup.prefix}"\n'
    assert text.count(line) == 1, text
    setup.config.write_text(text.replace(line, f'prefix = "{prefix}"\n'))
    return dataclasses.replace(setup, prefix=prefix)


def test_two_daemons_on_one_broker_each_have_their_own_availability(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    """Two hosts, each with its daemon (own client id, own prefix neuroauth/<host>) and headset, one
    broker: a subscriber sees both. One daemon killed: its will makes its own status offline, and
    only its own; the other's headset goes on being served, online."""
    broker = mosquitto()
    root = f"test-{uuid.uuid4().hex[:8]}/neuroauth"
    devices = {"host-a": DEVICE, "host-b": "eeg2"}
    setups = {}
    for host, device in devices.items():
        source_id = replay.unique("src")
        (tmp_path / host).mkdir()
        setups[host] = config_under(f"{root}/{host}", tmp_path / host, broker, templates, {device: source_id})
        replay(OWNER_STREAM, source_id=source_id, speed=SPEED, loop=True)
    a, b = setups["host-a"], setups["host-b"]
    assert a.client_id != b.client_id and a.status != b.status
    daemons = {
        host: neuroauthd(s.config, NEUROAUTH_MQTT__STATE_HEARTBEAT_S="1") for host, s in setups.items()
    }
    both = dataclasses.replace(a, prefix=root)  # a subscriber to everything under neuroauth/

    def context() -> str:
        return "\n".join(daemon.context() for daemon in daemons.values())

    topics = [a.status, a.state_of(DEVICE), b.status, b.state_of("eeg2")]

    async def scenario() -> None:
        async with subscriber(broker, both, context) as live:
            for host, device in devices.items():
                await live.wait_for(
                    state_is(setups[host], "OWNER", device), f"OWNER on {host}'s {device}", timeout=TIMEOUT
                )
            status_a, state_a, status_b, state_b = await retained(broker, both, context, topics)
            assert (status_a.payload, status_b.payload) == (b"online", b"online"), (status_a, status_b)
            for status, state in ((status_a, state_a), (status_b, state_b)):
                assert not evaluate(state.payload, status.payload, time.time(), STALE_AFTER_S).locked, state

            # host-b's daemon dies without a word: the broker publishes its will, on its status only.
            mark, killed_at = live.mark(), time.time()
            await asyncio.to_thread(daemons["host-b"].kill)
            await live.wait_for(status_is(b, "offline"), "host-b's will", after=mark, timeout=TIMEOUT)
            beats = await live.wait_many(
                state_is(a, "OWNER", DEVICE), 3, "host-a's headset after host-b died", after=mark
            )
            assert beats[-1].body["timestamp"] > killed_at, beats  # decided after, not left over
            assert not [m for m in live.items[mark:] if m.topic == a.status], live.report("host-a's status")

            # What a consumer arriving now is handed: host-a's headset unlocked, host-b's locked by the
            # status alone (its last state, OWNER, is still retained).
            status_a, state_a, status_b, state_b = await retained(broker, both, context, topics)
            assert (status_a.payload, status_b.payload) == (b"online", b"offline"), (status_a, status_b)
            assert state_b.body["state"] == "OWNER", state_b
            now = time.time()
            assert not evaluate(state_a.payload, status_a.payload, now, STALE_AFTER_S).locked, state_a
            verdict = evaluate(state_b.payload, status_b.payload, now, STALE_AFTER_S)
            assert verdict.locked and verdict.reason == "neuroauthd is offline", verdict

            # Neither daemon took the other for one sharing its prefix.
            assert not [m for m in live.items if m.topic.endswith("/alarm")], live.report("alarms")
            await stop_with_sigterm(daemons["host-a"], live, a)

    asyncio.run(scenario())
    # host-b only ever said online itself: its offline was the broker's, its will.
    sent = status_publishes(broker, b)
    assert len(sent) == 1 and "(6 bytes)" in sent[0], sent
    log = broker.log()
    assert f" as {a.client_id} " in log and f" as {b.client_id} " in log, log[-3000:]
    for daemon in daemons.values():
        assert "uses mqtt.prefix" not in daemon.output(), daemon.context()
        # the path the model's Mamba block runs, said once as the model loads
        assert daemon.output().count("Mamba: the pure-PyTorch scan on cpu (") == 1, daemon.context()


# -- a site bridged to a central broker -----------------------------------------------------------------


def bridge_config(central: local_broker.LocalBroker, password: str, ca_file: Path) -> str:
    """The shipped bridge, its address, password and CA those of this test's central broker;
    every other line as shipped."""
    replaced = {
        "address": f"{central.host}:{central.port}",
        "remote_password": password,
        "bridge_cafile": str(ca_file),
    }
    lines, seen = [], set()
    for line in BRIDGE.read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.lstrip().startswith("#") else None
        if key in replaced:
            seen.add(key)
            line = f"{key} {replaced[key]}"
        lines.append(line)
    assert seen == set(replaced), f"{BRIDGE} lacks {set(replaced) - seen}"
    return "\n".join(lines) + "\n"


@pytest.fixture
def site_broker(tmp_path_factory) -> Iterator[Callable[[str], local_broker.LocalBroker]]:
    """``site_broker(bridge)``: a broker on 127.0.0.1 whose configuration ends with ``bridge``."""
    binary = local_broker.find()
    if binary is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    started: list[local_broker.LocalBroker] = []

    def start(bridge: str) -> local_broker.LocalBroker:
        broker = local_broker.LocalBroker(binary, tmp_path_factory.mktemp("site"), log_everything=True)
        with broker.config_path.open("a") as config:
            config.write(bridge)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.stop()


@contextlib.asynccontextmanager
async def consumer(broker, topics: list[str], **credentials) -> AsyncIterator[Recorder]:
    """A client of ``broker`` subscribed to ``topics``, logged in with ``credentials`` (and TLS)."""
    recorder = Recorder()
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"consumer-{uuid.uuid4().hex[:8]}", **credentials
    ) as client:
        await client.subscribe([(topic, 1) for topic in topics])
        task = asyncio.create_task(recorder.collect(client), name="consumer")
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def listed(recorder: Recorder) -> str:
    return "\n".join(f"  {m.topic} r{int(m.retain)} {m.payload[:80]!r}" for m in recorder.messages)


def test_a_site_bridged_to_a_central_broker(mosquitto, site_broker, certificates):
    """The shipped bridge forwards a site's neuroauth/# over TLS to the central broker: events,
    retained statuses and states (again after the centre restarts, without what the link missed),
    and the link's own state: 0 once the site is gone, while the daemon's status there still
    says online."""
    passwords = {SITE: "site-password", "screenlocker": "reader-password"}
    central = mosquitto(
        users=passwords, tls=(certificates["server.pem"], certificates["server.key"]), acl=CENTRAL_ACL
    )
    tls = {"tls_params": aiomqtt.TLSParameters(ca_certs=str(certificates["ca.pem"]))}
    reader = {"username": "screenlocker", "password": passwords["screenlocker"], **tls}
    site = site_broker(bridge_config(central, passwords[SITE], certificates["ca.pem"]))
    prefix = f"neuroauth/{SITE}/desk-pc"  # a daemon's prefix at this site: neuroauth/<site>/<host>
    settings = MqttSettings(
        host=site.host,
        port=site.port,
        prefix=prefix,
        client_id=f"neuroauthd-test-{uuid.uuid4().hex[:8]}",
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    status, state, event = f"{prefix}/status", f"{prefix}/desk/state", f"{prefix}/desk/event"
    everything = ["neuroauth/#", "neuroauth-bridge/#"]
    owner = {
        "state": "OWNER",
        "locked": False,
        "user": "alice",
        "since": time.time(),
        "timestamp": time.time(),
    }

    async def arrives(
        recorder: Recorder, topic: str, payload: bytes | None = None, nonempty: bool = False
    ) -> aiomqtt.Message:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for message in recorder.messages:
                if (
                    str(message.topic) == topic
                    and payload in (None, message.payload)
                    and (message.payload or not nonempty)
                ):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"no {topic} {payload or ''} within {TIMEOUT:g} s; received:\n{listed(recorder)}\n"
            f"--- site broker ---\n{site.log()[-3000:]}\n--- central broker ---\n{central.log()[-3000:]}"
        )

    async def scenario() -> None:
        async with MqttPublisher(settings, ["desk"]) as publisher:
            async with consumer(central, everything, **reader) as centre:
                await arrives(centre, LINK, b"1")
                publisher.set_state("desk", owner)
                assert await publisher.wait_connected(TIMEOUT)

                # Live: the status, the state and an event cross as they were published on the site.
                await arrives(centre, status, b"online")
                # a publisher connected before the state was set first clears any retained one (empty)
                live = await arrives(centre, state, nonempty=True)
                assert json.loads(live.payload) == owner
                sent = publisher.event("desk", "lock", {"state": "IMPOSTOR", "previous": "OWNER"})
                crossed = await arrives(centre, event)
                assert json.loads(crossed.payload) == sent and crossed.qos == 1 and not crossed.retain

            # Retained: a consumer connecting to the centre now is handed the status and the state.
            async with consumer(central, [status, state], **reader) as late:
                assert (await arrives(late, status)).retain and (await arrives(late, state)).retain

            # The centre restarts and has forgotten everything (no persistence here). An event
            # published while the link is down is not kept for it; once the link is back the centre
            # has the status and state again, from the site broker's retained messages.
            async with consumer(site, [LINK]) as local:
                await arrives(local, LINK, b"1")  # the bridge's state, published on the site too
                await asyncio.to_thread(central.stop)
                await arrives(local, LINK, b"0")
            publisher.event("desk", "unlock", {"state": "OWNER", "previous": "IMPOSTOR"})
            sent_before = test_mqtt.publishes_from(site, settings.client_id, state)
            await asyncio.to_thread(central.start)
            async with consumer(central, everything, **reader) as centre:
                await arrives(centre, LINK, b"1")
                assert (await arrives(centre, status)).payload == b"online"
                assert json.loads((await arrives(centre, state)).payload) == owner
                await asyncio.sleep(2.0)
                assert not [m for m in centre.messages if str(m.topic) == event], listed(centre)
            assert test_mqtt.publishes_from(site, settings.client_id, state) == sent_before  # not sent again

            # The site goes (its broker killed, as when its network fails): the centre publishes the
            # link's will, 0. The daemon's status there still says online; only the link tells.
            async with consumer(central, [LINK], **reader) as centre:
                await arrives(centre, LINK, b"1")
                site.process.kill()
                await arrives(centre, LINK, b"0")
            await asyncio.to_thread(site.stop)
        async with consumer(central, [status, LINK], **reader) as late:
            assert (await arrives(late, status)).payload == b"online"
            assert (await arrives(late, LINK)).payload == b"0"

        # The central ACL: a consumer's account writes nothing, a site's account its own site only.
        site_account = {"username": SITE, "password": passwords[SITE], **tls}
        async with consumer(central, everything, **reader) as centre:
            await arrives(centre, state)  # retained
            lie = json.dumps({**owner, "user": "mallory"}).encode()
            await publish_as(central, state, lie, **reader)
            await publish_as(central, "neuroauth/site-b/desk-pc/desk/state", lie, **site_account)
            own = json.dumps({**owner, "timestamp": time.time()}).encode()
            await publish_as(central, state, own, **site_account)
            await arrives(centre, state, own)
            assert lie not in [m.payload for m in centre.messages], listed(centre)

    asyncio.run(scenario())
