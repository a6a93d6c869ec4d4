"""MqttPublisher against a real mosquitto broker, observed by a real aiomqtt subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest
from neuroauth.daemon.mqtt import MqttPublisher
from pydantic import SecretStr

from neuroauth.config import MqttSettings, TlsSettings

pytestmark = pytest.mark.slow  # a real broker or fault stream each: seconds per test

TIMEOUT = 10.0  # generous: how long to wait for something that should happen


def settings_for(broker, **overrides) -> MqttSettings:
    tag = uuid.uuid4().hex[:8]
    values = {
        "host": broker.host,
        "port": broker.port,
        "prefix": f"test-{tag}/neuroauth",
        "client_id": f"neuroauthd-test-{tag}",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "keepalive": 5,
    }
    values.update(overrides)
    return MqttSettings(**values)


class Recorder:
    """Every message a subscriber receives, with a way to wait for one."""

    def __init__(self) -> None:
        self.messages: list[aiomqtt.Message] = []
        self._new = asyncio.Event()

    async def collect(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in client.messages:
                self.messages.append(message)
                self._new.set()

    async def wait_for(self, predicate: Callable[[aiomqtt.Message], bool]) -> aiomqtt.Message:
        deadline = time.monotonic() + TIMEOUT
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            self._new.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [(str(m.topic), m.payload) for m in self.messages]
                raise AssertionError(f"no matching message within {TIMEOUT} s; received {got}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    async def wait_topic(self, topic: str, payload: bytes | None = None) -> aiomqtt.Message:
        return await self.wait_for(
            lambda m: str(m.topic) == topic and (payload is None or m.payload == payload)
        )

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if str(m.topic) == topic]


@contextlib.asynccontextmanager
async def subscriber(broker, topic: str, **credentials) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"subscriber-{uuid.uuid4().hex[:8]}", **credentials
    ) as client:
        await client.subscribe(topic, qos=1)
        task = asyncio.create_task(recorder.collect(client), name="test-subscriber")
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def publishes_from(broker, client_id: str, topic: str, log: str | None = None) -> int:
    """How many PUBLISH packets the broker received from ``client_id`` on ``topic`` (from its log)."""
    text = broker.log() if log is None else log
    sender = f"Received PUBLISH from {client_id} "
    return sum(1 for line in text.splitlines() if sender in line and f"'{topic}'" in line)


def state(name: str, **extra) -> dict:
    return {"state": name, "user": "alice", "score": 0.8, "since": 1.0, "timestamp": 2.0, **extra}


def test_status_state_events_and_scores(mosquitto):
    broker = mosquitto()
    settings = settings_for(broker)
    p = settings.prefix

    async def scenario() -> None:
        publisher = MqttPublisher(settings, ["eeg1", "eeg2"])
        publisher.set_state("eeg1", state("OWNER"))
        async with publisher:
            assert await publisher.wait_connected(TIMEOUT)
            assert publisher.connected

            # A subscriber arriving after the fact gets the retained status and state.
            async with subscriber(broker, f"{p}/#") as late:
                online = await late.wait_topic(f"{p}/status", b"online")
                assert online.retain
                retained = await late.wait_topic(f"{p}/eeg1/state")
                assert retained.retain and json.loads(retained.payload) == state("OWNER")

                first = publisher.event("eeg1", "lock", {"state": "IMPOSTOR", "timestamp": 3.0})
                second = publisher.event("eeg1", "unlock", {"state": "OWNER", "timestamp": 4.0})
                other = publisher.event("eeg2", "lock", {"state": "NO_SIGNAL"})
                events = []
                for seq in (1, 2):
                    message = await late.wait_for(
                        lambda m, seq=seq: (
                            str(m.topic) == f"{p}/eeg1/event" and b'"seq":%d' % seq in m.payload
                        )
                    )
                    events.append(json.loads(message.payload))
                assert [e["kind"] for e in events] == ["lock", "unlock"]
                assert [e["device"] for e in events] == ["eeg1", "eeg1"]
                assert events == [first, second]
                assert events[0]["event_id"] != events[1]["event_id"]
                assert events[0]["state"] == "IMPOSTOR" and events[0]["timestamp"] == 3.0
                assert other["seq"] == 1  # per device
                ev2 = await late.wait_topic(f"{p}/eeg2/event")
                assert not ev2.retain and json.loads(ev2.payload)["event_id"] == other["event_id"]
                assert all(not m.retain for m in late.on(f"{p}/eeg1/event"))

                publisher.score("eeg1", {"score": 0.42, "timestamp": 5.0})
                score = await late.wait_topic(f"{p}/eeg1/score")
                assert json.loads(score.payload) == {"score": 0.42, "timestamp": 5.0}
                assert score.qos == 0 and not score.retain

                publisher.set_state("eeg1", state("IMPOSTOR"))
                await late.wait_for(lambda m: str(m.topic) == f"{p}/eeg1/state" and b"IMPOSTOR" in m.payload)

            async with subscriber(broker, f"{p}/+/state") as later:
                latest = await later.wait_topic(f"{p}/eeg1/state")
                assert latest.retain and json.loads(latest.payload)["state"] == "IMPOSTOR"

            with pytest.raises(ValueError, match="unknown device"):
                publisher.set_state("eeg9", state("OWNER"))
            with pytest.raises(ValueError, match="event kind"):
                publisher.event("eeg1", "open", {})  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_clean_exit_publishes_offline_even_when_cancelled(mosquitto):
    broker = mosquitto()
    settings = settings_for(broker)
    p = settings.prefix

    async def scenario() -> None:
        async with subscriber(broker, f"{p}/status") as watcher:
            started = asyncio.Event()

            async def service() -> None:
                async with MqttPublisher(settings, ["eeg1"]) as publisher:
                    assert await publisher.wait_connected(TIMEOUT)
                    started.set()
                    await asyncio.sleep(3600)

            # The daemon's shutdown path on SIGTERM: its service task is cancelled.
            task = asyncio.create_task(service())
            await asyncio.wait_for(started.wait(), TIMEOUT)
            await watcher.wait_topic(f"{p}/status", b"online")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            offline = await watcher.wait_topic(f"{p}/status", b"offline")
            assert not offline.retain  # live delivery to a subscriber already there

        async with subscriber(broker, f"{p}/status") as late:
            assert (await late.wait_topic(f"{p}/status")).payload == b"offline"

    asyncio.run(scenario())
    log = broker.log()
    # The offline came from the publisher itself (not its will), then it disconnected cleanly.
    assert publishes_from(broker, settings.client_id, f"{p}/status", log) == 2, log
    assert f"Client {settings.client_id} disconnected." in log, log


_DYING_PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys
    from neuroauth.config import MqttSettings
    from neuroauth.daemon.mqtt import MqttPublisher

    async def main():
        host, port, prefix, client_id = sys.argv[1:5]
        settings = MqttSettings(host=host, port=int(port), prefix=prefix, client_id=client_id)
        async with MqttPublisher(settings, ["eeg1"]) as publisher:
            publisher.set_state("eeg1", {"state": "OWNER"})
            if not await publisher.wait_connected(10):
                sys.exit("not connected")
            print("connected", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_will_publishes_offline_when_the_process_dies(mosquitto):
    broker = mosquitto()
    settings = settings_for(broker)
    p = settings.prefix

    async def scenario() -> None:
        async with subscriber(broker, f"{p}/status") as watcher:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _DYING_PUBLISHER,
                broker.host,
                str(broker.port),
                p,
                settings.client_id,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
                assert line == b"connected\n"
                await watcher.wait_topic(f"{p}/status", b"online")
            finally:
                process.send_signal(signal.SIGKILL)
                await process.wait()
            await watcher.wait_topic(f"{p}/status", b"offline")

        async with subscriber(broker, f"{p}/status") as late:
            assert (await late.wait_topic(f"{p}/status")).payload == b"offline"

    asyncio.run(scenario())
    # The publisher never sent offline itself: the broker published its will.
    assert publishes_from(broker, settings.client_id, f"{p}/status") == 1, broker.log()


def test_reconnects_and_republishes_the_current_state_not_a_backlog(mosquitto, caplog):
    broker = mosquitto()
    settings = settings_for(broker)
    p = settings.prefix
    state_topic = f"{p}/eeg1/state"

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1", "eeg2"]) as publisher:
            publisher.set_state("eeg1", state("OWNER"))
            publisher.set_state("eeg2", state("UNKNOWN", user="bob"))
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, state_topic) as before:
                await before.wait_for(lambda m: b"OWNER" in m.payload)
                first = publisher.event("eeg1", "unlock", {})
                await asyncio.to_thread(broker.stop)
                await until(lambda: not publisher.connected, "the publisher sees the broker gone")

            # While the broker is down: three states (only the last matters), an event, a score.
            with caplog.at_level(logging.WARNING, logger="neuroauth.daemon.mqtt"):
                for name in ("UNKNOWN", "IMPOSTOR", "NO_SIGNAL"):
                    publisher.set_state("eeg1", state(name))
                dropped = publisher.event("eeg1", "lock", {})
                publisher.score("eeg1", {"score": 0.1})
            assert dropped["seq"] == first["seq"] + 1
            assert "dropped lock event seq 2 of eeg1" in caplog.text

            log_before_restart = broker.log()
            await asyncio.to_thread(broker.start)
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, f"{p}/#") as after:
                await after.wait_topic(f"{p}/status", b"online")
                current = await after.wait_topic(state_topic)
                assert current.retain and json.loads(current.payload)["state"] == "NO_SIGNAL"
                # The restarted broker lost its retained messages: the unchanged state comes back too.
                unchanged = await after.wait_topic(f"{p}/eeg2/state")
                assert json.loads(unchanged.payload) == state("UNKNOWN", user="bob")
                later = publisher.event("eeg1", "unlock", {})
                got = json.loads((await after.wait_topic(f"{p}/eeg1/event")).payload)
                assert got["seq"] == later["seq"] == 3  # the gap at 2 tells a consumer one was lost

        since_restart = broker.log()[len(log_before_restart) :]
        assert publishes_from(broker, settings.client_id, state_topic, since_restart) == 1, since_restart
        assert publishes_from(broker, settings.client_id, f"{p}/eeg1/score", since_restart) == 0
        # online after the restart, offline on leaving
        assert publishes_from(broker, settings.client_id, f"{p}/status", since_restart) == 2

    asyncio.run(scenario())


def test_a_stale_state_from_an_earlier_run_is_cleared(mosquitto):
    broker = mosquitto()
    settings = settings_for(broker)
    stale_topic = f"{settings.prefix}/eeg1/state"

    async def scenario() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as earlier_run:
            await earlier_run.publish(stale_topic, json.dumps(state("OWNER")), qos=1, retain=True)
        # The daemon restarts and has no decision yet for eeg1.
        async with MqttPublisher(settings, ["eeg1"]) as publisher:
            assert await publisher.wait_connected(TIMEOUT)

    asyncio.run(scenario())
    clears = [
        line
        for line in broker.log().splitlines()
        if f"Received PUBLISH from {settings.client_id} " in line and f"'{stale_topic}'" in line
    ]
    assert len(clears) == 1 and "r1" in clears[0] and "(0 bytes)" in clears[0], clears


def test_event_queue_is_bounded_and_drops_the_oldest(mosquitto, caplog):
    broker = mosquitto()
    settings = settings_for(broker)
    p = settings.prefix

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1"], event_queue_size=2) as publisher:
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, f"{p}/eeg1/event") as events:
                # No await in between: the connection task cannot send before the queue overflows.
                with caplog.at_level(logging.WARNING, logger="neuroauth.daemon.mqtt"):
                    sent = [publisher.event("eeg1", "lock", {}) for _ in range(4)]
                await events.wait_for(lambda m: json.loads(m.payload)["seq"] == 4)
                assert [json.loads(m.payload)["seq"] for m in events.messages] == [3, 4]
                assert [s["seq"] for s in sent] == [1, 2, 3, 4]
        assert caplog.text.count("MQTT event queue full (2)") == 2

    asyncio.run(scenario())


def test_credentials(mosquitto, caplog, tmp_path):
    broker = mosquitto(users={"neuroauthd": "right-password", "reader": "reader-password"})
    reader = {"username": "reader", "password": "reader-password"}
    wrong = settings_for(broker, username="neuroauthd", password=SecretStr("wrong-password"))
    password_file = tmp_path / "mqtt.password"
    password_file.write_text("right-password\n")
    right = settings_for(broker, username="neuroauthd", password_file=password_file)

    async def scenario() -> None:
        with caplog.at_level(logging.INFO, logger="neuroauth.daemon.mqtt"):
            async with MqttPublisher(wrong, ["eeg1"]) as publisher:
                await until(
                    lambda: caplog.text.count("refused the connection") >= 2,
                    "the publisher retried after a refusal",
                )
                assert not publisher.connected
                assert not await publisher.wait_connected(0.1)
        refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
        assert all(r.levelno == logging.ERROR for r in refusals)
        assert not [r for r in caplog.records if r.getMessage().startswith("connected to the MQTT broker")]
        assert "wrong-password" not in caplog.text

        async with (
            subscriber(broker, f"{right.prefix}/status", **reader) as watcher,
            MqttPublisher(right, ["eeg1"]) as publisher,
        ):
            assert await publisher.wait_connected(TIMEOUT)
            await watcher.wait_topic(f"{right.prefix}/status", b"online")

    asyncio.run(scenario())


def test_home_assistant_discovery(mosquitto):
    broker = mosquitto()
    settings = settings_for(broker, discovery={"enabled": True, "prefix": "ha-test"})
    p = settings.prefix
    node = p.replace("/", "_")

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1", "door"]) as publisher:
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, f"ha-test/+/{node}/#") as ha:
                for device in ("eeg1", "door"):
                    lock_msg = await ha.wait_topic(f"ha-test/binary_sensor/{node}/{device}_lock/config")
                    assert lock_msg.retain
                    lock = json.loads(lock_msg.payload)
                    assert lock["device_class"] == "lock"
                    assert lock["state_topic"] == f"{p}/{device}/state"
                    assert "value_json.state" in lock["value_template"] and "OWNER" in lock["value_template"]
                    assert lock["availability_topic"] == f"{p}/status"
                    assert (lock["payload_available"], lock["payload_not_available"]) == ("online", "offline")
                    assert lock["name"].startswith(device)

                    score_msg = await ha.wait_topic(f"ha-test/sensor/{node}/{device}_score/config")
                    score = json.loads(score_msg.payload)
                    assert score["state_topic"] == f"{p}/{device}/score"
                    assert score["availability_topic"] == f"{p}/status"
                    assert score["device"]["identifiers"] == lock["device"]["identifiers"]
                    assert lock["unique_id"] != score["unique_id"]

    asyncio.run(scenario())


def test_no_discovery_unless_enabled(mosquitto):
    broker = mosquitto()
    settings = settings_for(broker)

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1"]) as publisher:
            assert await publisher.wait_connected(TIMEOUT)

    asyncio.run(scenario())
    assert "homeassistant/" not in broker.log()
    assert publishes_from(broker, settings.client_id, f"{settings.prefix}/status") == 2


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificates")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                 "-subj", f"/CN=neuroauth test {ca}", cwd=tmp_path)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=broker", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=tmp_path)  # fmt: skip
    return {name: tmp_path / name for name in ("ca.pem", "other-ca.pem", "server.pem", "server.key")}


def test_tls(mosquitto, certificates, caplog):
    broker = mosquitto(tls=(certificates["server.pem"], certificates["server.key"]))
    trusted = settings_for(broker, tls=TlsSettings(enabled=True, ca_file=certificates["ca.pem"]))
    untrusted = settings_for(broker, tls=TlsSettings(enabled=True, ca_file=certificates["other-ca.pem"]))

    async def scenario() -> None:
        async with MqttPublisher(trusted, ["eeg1"]) as publisher:
            assert await publisher.wait_connected(TIMEOUT)
        with caplog.at_level(logging.WARNING, logger="neuroauth.daemon.mqtt"):
            async with MqttPublisher(untrusted, ["eeg1"]) as publisher:
                await until(lambda: "cannot connect" in caplog.text, "the TLS handshake fails")
                assert not publisher.connected
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text

    asyncio.run(scenario())
    assert publishes_from(broker, trusted.client_id, f"{trusted.prefix}/status") == 2


# -- what the daemon publishes is the daemon's: the broker's ACL, and its own check ---------------

DEPLOYED_ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto.acl"


async def publish_as(broker, topic: str, payload: bytes, **credentials) -> None:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"rogue-{uuid.uuid4().hex[:8]}", **credentials
    ) as rogue:
        await rogue.publish(topic, payload, qos=1, retain=True)


def test_the_shipped_acl_lets_only_the_daemon_write(mosquitto, tmp_path):
    """deploy/mosquitto.acl: a consumer's account reads the daemon's topics but cannot write them."""
    broker = mosquitto(
        users={"neuroauthd": "daemon-password", "screenlocker": "reader-password"}, acl=DEPLOYED_ACL
    )
    password_file = tmp_path / "mqtt.password"
    password_file.write_text("daemon-password\n")
    settings = settings_for(broker, prefix="neuroauth", username="neuroauthd", password_file=password_file)
    reader = {"username": "screenlocker", "password": "reader-password"}
    lie = json.dumps(state("OWNER", locked=False)).encode()

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1"]) as publisher:
            publisher.set_state("eeg1", state("IMPOSTOR", locked=True))
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, "neuroauth/#", **reader) as consumer:
                await consumer.wait_topic("neuroauth/eeg1/state")  # it can read
                await publish_as(broker, "neuroauth/eeg1/state", lie, **reader)  # and cannot write
                await publish_as(broker, "neuroauth/status", b"online", **reader)
                await asyncio.sleep(1.0)
                assert all(m.payload != lie for m in consumer.on("neuroauth/eeg1/state")), consumer.messages
                assert publisher.queued["foreign_states"] == 0  # nothing reached the daemon either
            async with subscriber(broker, "neuroauth/eeg1/state", **reader) as late:
                retained = await late.wait_topic("neuroauth/eeg1/state")
                assert json.loads(retained.payload)["state"] == "IMPOSTOR"
        assert "denied PUBLISH" in broker.log() or "DENIED" in broker.log().upper(), broker.log()[-2000:]

    asyncio.run(scenario())


def test_a_state_the_daemon_did_not_publish_is_put_back_at_once(mosquitto):
    """Without an ACL anyone may publish; the daemon sees its state overwritten and restores it."""
    broker = mosquitto()
    settings = settings_for(broker)
    p = settings.prefix
    lie = json.dumps(state("OWNER", locked=False)).encode()

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1"]) as publisher:
            publisher.set_state("eeg1", state("IMPOSTOR", locked=True))
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, f"{p}/#") as watcher:
                await watcher.wait_topic(f"{p}/eeg1/state")
                mark = len(watcher.messages)
                spoofed_at = time.monotonic()
                await publish_as(broker, f"{p}/eeg1/state", lie)
                await watcher.wait_topic(f"{p}/eeg1/state", lie)
                restored = await watcher.wait_for(
                    lambda m: (
                        str(m.topic) == f"{p}/eeg1/state"
                        and m.payload != lie
                        and watcher.messages.index(m) > mark
                    )
                )
                assert time.monotonic() - spoofed_at < 1.0
                assert json.loads(restored.payload)["state"] == "IMPOSTOR"
                alarm = json.loads((await watcher.wait_topic(f"{p}/alarm")).payload)
                assert (alarm["kind"], alarm["device"]) == ("foreign_state", "eeg1")
                assert publisher.queued["foreign_states"] == 1
            async with subscriber(broker, f"{p}/eeg1/state") as late:
                retained = await late.wait_topic(f"{p}/eeg1/state")
                assert json.loads(retained.payload)["state"] == "IMPOSTOR"  # the truth stays retained

    asyncio.run(scenario())


def test_a_second_daemon_on_the_same_prefix_is_reported_and_its_offline_left_standing(mosquitto, caplog):
    """A prefix's status belongs to one daemon. Alone, reconnecting included, a publisher hears no
    status but its own; a second on its prefix is reported (log, alarm, count) when it says online
    and when it says offline, and that offline is not overwritten: it may be a will, whose
    headsets must stay locked."""
    broker = mosquitto()
    first = settings_for(broker)
    second = settings_for(broker, prefix=first.prefix)
    p = first.prefix

    async def scenario() -> None:
        async with MqttPublisher(first, ["eeg1"]) as publisher:
            assert await publisher.wait_connected(TIMEOUT)
            await asyncio.to_thread(broker.stop)
            await until(lambda: not publisher.connected, "the publisher sees the broker gone")
            await asyncio.to_thread(broker.start)
            assert await publisher.wait_connected(TIMEOUT)
            async with subscriber(broker, f"{p}/#") as watcher:
                await watcher.wait_topic(f"{p}/status", b"online")
                await asyncio.sleep(0.5)
                assert publisher.queued["foreign_status"] == 0
                assert not watcher.on(f"{p}/alarm"), watcher.messages

                with caplog.at_level(logging.ERROR, logger="neuroauth.daemon.mqtt"):
                    async with MqttPublisher(second, ["eeg2"]) as other:
                        assert await other.wait_connected(TIMEOUT)
                        alarm = json.loads((await watcher.wait_topic(f"{p}/alarm")).payload)
                        assert (alarm["kind"], alarm["status"]) == ("foreign_status", "online"), alarm
                        assert alarm["topic"] == f"{p}/status"
                    await watcher.wait_topic(f"{p}/status", b"offline")
                    await until(lambda: publisher.queued["foreign_status"] == 2, "the offline is reported")
                assert other.queued["foreign_status"] == 0  # its online came after the first's
                (record, *_) = [r for r in caplog.records if "uses mqtt.prefix" in r.getMessage()]
                assert f"on {p}/status" in record.getMessage() and f"such as {p}/" in record.getMessage()
                await asyncio.sleep(0.5)
                assert [m.payload for m in watcher.on(f"{p}/status")][-1] == b"offline"

        async with subscriber(broker, f"{p}/status") as late:
            assert (await late.wait_topic(f"{p}/status")).payload == b"offline"

    asyncio.run(scenario())


def test_the_default_client_id_is_new_at_every_start():
    from neuroauth.config import MqttSettings as Fresh

    first, second = Fresh().client_id, Fresh().client_id
    assert first.startswith("neuroauthd-") and first != second


def test_a_client_taking_the_session_over_is_named_and_the_daemon_comes_back(mosquitto, caplog):
    broker = mosquitto()
    settings = settings_for(broker)

    async def scenario() -> None:
        async with MqttPublisher(settings, ["eeg1"]) as publisher:
            assert await publisher.wait_connected(TIMEOUT)
            with caplog.at_level(logging.INFO, logger="neuroauth.daemon.mqtt"):
                # same client id: the broker closes the daemon's connection in favour of this one
                async with aiomqtt.Client(broker.host, broker.port, identifier=settings.client_id):
                    await until(lambda: "taking the session over" in caplog.text, "the takeover is logged")
                await until(lambda: caplog.text.count("connected to the MQTT broker") >= 1, "reconnected")
                assert await publisher.wait_connected(TIMEOUT)
        (record,) = [r for r in caplog.records if "taking the session over" in r.getMessage()]
        assert record.levelno == logging.ERROR and settings.client_id in record.getMessage()
        assert "Leave mqtt.client_id unset" in record.getMessage()

    asyncio.run(scenario())
