"""Publishing the daemon's decisions over MQTT.

Topics, all under ``mqtt.prefix``:

``<prefix>/status``
    ``online`` or ``offline``, retained, QoS 1. ``offline`` is also the will, so the
    broker publishes it when the daemon dies without saying goodbye. It is the
    availability of every headset under the prefix, so a prefix belongs to one daemon:
    daemons sharing a broker each have their own (``neuroauth/<host>``).
``<prefix>/<device>/state``
    The current state of a headset as JSON, retained, QoS 1. Only the latest is kept:
    after a reconnection the broker receives the current state, never a backlog.
``<prefix>/<device>/event``
    ``lock`` / ``unlock`` transitions as JSON, QoS 1, not retained, each with a ``seq``
    that increases by one per device (a gap means events were dropped) and a unique
    ``event_id`` so that consumers can handle each event once.
``<prefix>/<device>/score``
    Per-window scores, QoS 0, dropped while the broker is unreachable.
``<prefix>/alarm``
    JSON, QoS 1, not retained: someone else published a state on one of this daemon's
    state topics (the broker's ACL should make that impossible) and the daemon has put its
    own state back (``foreign_state``), or a status on its status topic (``foreign_status``).

The daemon subscribes to its own state topics: a state it did not publish is
overwritten at once. It also listens on its status topic: a status it did not publish
means that another daemon shares its prefix, which is reported (a log line and the
alarm) but never overwritten, since that ``offline`` may be the other daemon's will.
Consumers treat anything but a current ``OWNER`` state with status ``online`` as
locked, and a state whose ``timestamp`` is older than a few heartbeats as stale.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import re
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any, Literal

import aiomqtt

from ..config import MqttSettings

__all__ = [
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "MqttPublisher",
    "Topics",
    "connection_options",
    "reconnect_delay",
]

log = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
SHORT_SESSION_S = 5.0  # a connection closed sooner than this after it opened was likely taken over
OWN_WILL_GRACE_S = 1.0  # an offline heard this long before our connection ends was our own will
EventKind = Literal["lock", "unlock"]
_EVENT_KINDS = ("lock", "unlock")

# Seconds to wait for CONNACK and for the broker to acknowledge a QoS 1 publish.
_BROKER_TIMEOUT_S = 10.0
# States of a device remembered as our own: its echo may come back after newer ones were sent.
_RECENT_STATES = 16


@dataclass(frozen=True)
class Topics:
    """The topic names under one prefix."""

    prefix: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    def state(self, device: str) -> str:
        return f"{self.prefix}/{device}/state"

    def event(self, device: str) -> str:
        return f"{self.prefix}/{device}/event"

    def score(self, device: str) -> str:
        return f"{self.prefix}/{device}/score"

    @property
    def alarm(self) -> str:
        return f"{self.prefix}/alarm"

    @property
    def states(self) -> str:
        """The subscription matching every device's state topic."""
        return f"{self.prefix}/+/state"


class _ConnectionLost(aiomqtt.MqttError):
    """The broker connection ended while the publisher was using it."""


class MqttPublisher:
    """Keeps one connection to the broker and publishes states, events and scores.

    Use it as an async context manager. Entering starts one background task that
    connects, republishes the status and current states on every (re)connection,
    and reconnects with jittered exponential backoff. Leaving it publishes
    ``offline`` (retained) and disconnects cleanly.

    :meth:`set_state`, :meth:`event` and :meth:`score` never block and may be called
    at any time from the event loop, connected or not.
    """

    def __init__(
        self,
        settings: MqttSettings,
        devices: Sequence[str],
        *,
        event_queue_size: int = 256,
        score_queue_size: int = 64,
        close_timeout_s: float = 5.0,
    ) -> None:
        if len(set(devices)) != len(devices) or not devices:
            raise ValueError(f"devices must be distinct and at least one, got {list(devices)}")
        self.settings = settings
        self.devices = tuple(devices)
        self.topics = Topics(settings.prefix)
        self._close_timeout_s = close_timeout_s

        self._states: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._event_queue_size = event_queue_size
        self._scores: collections.deque[tuple[str, bytes]] = collections.deque()
        self._score_queue_size = score_queue_size
        self._seq = dict.fromkeys(self.devices, 0)
        self._dropped_events = 0
        self._dropped_scores = 0

        # what we published on each state topic lately: an echo of any of them is ours
        self._recent: dict[str, collections.deque[bytes]] = {
            self.topics.state(d): collections.deque(maxlen=_RECENT_STATES) for d in self.devices
        }
        self._foreign_states = 0
        self._foreign_status = 0
        self._pending_checks: set[asyncio.TimerHandle] = set()  # offlines heard, judged if the link lasts
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self._link_up = False
        self._task: asyncio.Task[None] | None = None

    # -- the daemon's side ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker holds our ``online`` status and every current state."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`connected`; False when ``timeout`` seconds pass first."""
        if self._task is None:
            raise RuntimeError("enter the MqttPublisher context before waiting for the broker")
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._task.done() and not self._connected.is_set():
            self._task.result()  # re-raises what stopped the connection task
        return self._connected.is_set()

    def set_state(self, device: str, payload: Mapping[str, Any]) -> None:
        """Make ``payload`` the retained state of ``device``; only the latest is ever sent."""
        self._check_device(device)
        self._states[device] = _encode(payload)
        self._dirty.add(device)
        self._wake.set()

    def event(self, device: str, kind: EventKind, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Queue a ``lock`` / ``unlock`` event for ``device``; returns the payload as published.

        ``device``, ``kind``, ``seq`` and ``event_id`` are added to ``payload``. While the
        broker is unreachable the event is dropped (and counted in a warning): the
        retained state carries the truth.
        """
        self._check_device(device)
        if kind not in _EVENT_KINDS:
            raise ValueError(f"event kind must be one of {_EVENT_KINDS}, got {kind!r}")
        self._seq[device] += 1
        message = {
            **payload,
            "device": device,
            "kind": kind,
            "seq": self._seq[device],
            "event_id": uuid.uuid4().hex,
        }
        body = _encode(message)
        if not self._link_up:
            self._dropped_events += 1
            log.warning(
                "not connected to the MQTT broker: dropped %s event seq %d of %s "
                "(%d event(s) dropped since the connection was lost)",
                kind,
                message["seq"],
                device,
                self._dropped_events,
            )
            return message
        self._queue_event(self.topics.event(device), body)
        return message

    def _queue_event(self, topic: str, body: bytes) -> None:
        if len(self._events) >= self._event_queue_size:
            old_topic, _ = self._events.popleft()
            log.warning(
                "MQTT event queue full (%d): dropped the oldest event, for %s",
                self._event_queue_size,
                old_topic,
            )
        self._events.append((topic, body))
        self._wake.set()

    def score(self, device: str, payload: Mapping[str, Any]) -> None:
        """Publish a window's score (QoS 0); dropped while disconnected or when scores are off."""
        self._check_device(device)
        if not self.settings.publish_scores:
            return
        if not self._link_up:
            self._dropped_scores += 1
            return
        if len(self._scores) >= self._score_queue_size:
            self._scores.popleft()
            self._dropped_scores += 1
            log.debug("MQTT score queue full (%d): dropped the oldest score", self._score_queue_size)
        self._scores.append((self.topics.score(device), _encode(payload)))
        self._wake.set()

    @property
    def queued(self) -> dict[str, int]:
        """Messages waiting to be sent, and those dropped so far (bounded queues, stated policy)."""
        return {
            "events": len(self._events),
            "scores": len(self._scores),
            "dropped_events": self._dropped_events,
            "dropped_scores": self._dropped_scores,
            "foreign_states": self._foreign_states,
            "foreign_status": self._foreign_status,
        }

    def _check_device(self, device: str) -> None:
        if device not in self._seq:
            raise ValueError(f"unknown device {device!r}; this publisher serves {list(self.devices)}")

    # -- context -------------------------------------------------------------------

    async def __aenter__(self) -> MqttPublisher:
        if self._task is not None:
            raise RuntimeError("an MqttPublisher can be entered only once")
        s = self.settings
        self._task = asyncio.create_task(self._keep_connected(), name=f"mqtt-publisher {s.host}:{s.port}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        self._closing.set()
        self._wake.set()
        try:
            await asyncio.wait({task}, timeout=self._close_timeout_s)
        finally:
            if not task.done():
                log.warning(
                    "the MQTT connection did not close within %.1f s; abandoning it", self._close_timeout_s
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled() and task.exception() is not None and exc_type is None:
            raise task.exception()  # type: ignore[misc]

    # -- the connection task --------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            **connection_options(s),
            identifier=s.client_id,
            will=aiomqtt.Will(self.topics.status, STATUS_OFFLINE, qos=1, retain=True),
        )

    async def _keep_connected(self) -> None:
        s = self.settings
        attempt = 0
        while not self._closing.is_set():
            established, since = False, 0.0
            try:
                async with self._client() as client:
                    established, since = True, time.monotonic()
                    attempt = 0
                    log.info("connected to the MQTT broker %s:%d as %s", s.host, s.port, s.client_id)
                    await self._serve(client)
                log.info("disconnected from the MQTT broker %s:%d (closing)", s.host, s.port)
                return
            except aiomqtt.MqttError as exc:
                if established:
                    self._log_lost(exc, time.monotonic() - since)
                elif isinstance(exc, aiomqtt.MqttCodeError):
                    log.error("the MQTT broker %s:%d refused the connection: %s", s.host, s.port, exc)
                else:
                    log.warning("cannot connect to the MQTT broker %s:%d: %s", s.host, s.port, exc)
            finally:
                self._link_down()
            delay = reconnect_delay(self.settings, attempt)
            attempt += 1
            log.info("reconnecting to the MQTT broker in %.1f s", delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=delay)

    def _log_lost(self, exc: aiomqtt.MqttError, lasted: float) -> None:
        s = self.settings
        if lasted >= SHORT_SESSION_S:
            log.warning("lost the connection to the MQTT broker %s:%d: %s", s.host, s.port, exc)
            return
        # the broker does not say why it closed it; a client connecting with our id is the usual cause
        log.error(
            "lost the connection to the MQTT broker %s:%d %.1f s after it was accepted (%s): if this "
            "repeats, another client may be taking the session over with the client id %s. Leave "
            "mqtt.client_id unset (a random one per start) or make it unique",
            s.host,
            s.port,
            lasted,
            exc,
            s.client_id,
        )

    def _link_down(self) -> None:
        if self._link_up:
            # Count what gets lost from here on, until the next connection reports it.
            self._dropped_events = 0
            self._dropped_scores = 0
        self._link_up = False
        self._connected.clear()
        if self._events:
            self._dropped_events += len(self._events)
            log.warning(
                "dropped %d unsent MQTT event(s) with the connection; the retained state carries the truth",
                len(self._events),
            )
            self._events.clear()
        self._dropped_scores += len(self._scores)
        self._scores.clear()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish on one connection until closing (then say offline) or until it breaks."""
        watcher = asyncio.create_task(self._watch(client), name="mqtt-connection-watch")
        try:
            self._link_up = True
            self._dirty = set(self.devices)
            await self._publish(client, watcher, self.topics.status, STATUS_ONLINE, qos=1, retain=True)
            await self._flush(client, watcher)
            if self.settings.discovery.enabled:
                for topic, config in self._discovery_configs():
                    await self._publish(client, watcher, topic, _encode(config), qos=1, retain=True)
            if self._dropped_events or self._dropped_scores:
                log.info(
                    "while disconnected from the MQTT broker, %d event(s) and %d score(s) were dropped",
                    self._dropped_events,
                    self._dropped_scores,
                )
                self._dropped_events = self._dropped_scores = 0
            # After our online is stored: the status handed on subscribing is ours, any later one is not.
            await client.subscribe([(self.topics.states, 1), (self.topics.status, 1)])
            self._connected.set()
            log.info("published status and the state of %d device(s)", len(self._states))
            while True:
                await self._flush(client, watcher)
                if self._closing.is_set():
                    await self._publish(
                        client, watcher, self.topics.status, STATUS_OFFLINE, qos=1, retain=True
                    )
                    self._connected.clear()
                    return
                await self._wake.wait()
                self._wake.clear()
                if watcher.done():
                    raise _ConnectionLost(_watch_reason(watcher))
        finally:
            for handle in self._pending_checks:
                handle.cancel()  # the connection ended: an offline heard just before was our own will
            self._pending_checks.clear()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Read what comes back on our state and status topics until the connection ends."""
        try:
            async for message in client.messages:
                topic, payload = str(message.topic), bytes(message.payload or b"")
                if topic == self.topics.status:
                    self._check_status(payload, retained=bool(message.retain))
                else:
                    self._check_state(topic, payload)
        finally:
            self._wake.set()

    def _check_status(self, payload: bytes, *, retained: bool) -> None:
        """A status that arrives live and is not ours: another daemon shares the prefix.

        Our ``online`` went out before the subscription, so it only comes back as the retained copy
        handed on subscribing, and our ``offline`` is sent while closing. A broker that shuts down
        hands our own will to our own subscription just before it closes the connection, so an
        ``offline`` counts as another's only once the connection has outlived it by
        :data:`OWN_WILL_GRACE_S`. Reported, never overwritten: the other daemon's ``offline`` (its
        will) must keep its own headsets locked.
        """
        if retained or self._closing.is_set():
            return
        if payload == STATUS_OFFLINE.encode():
            loop = asyncio.get_running_loop()
            self._pending_checks = {h for h in self._pending_checks if h.when() > loop.time()}
            self._pending_checks.add(loop.call_later(OWN_WILL_GRACE_S, self._report_foreign_status, payload))
            return
        self._report_foreign_status(payload)

    def _report_foreign_status(self, payload: bytes) -> None:
        if self._closing.is_set() or not self._link_up:
            return
        self._foreign_status += 1
        status = payload[:40].decode(errors="replace")
        log.error(
            "another client published %r on %s, the availability topic of this daemon's headsets: another "
            "neuroauthd (or a client imitating one) uses mqtt.prefix %r too, and consumers see the status "
            "of whichever spoke last. Give every daemon on the broker a prefix of its own, such as "
            "%s/%s (docs/mqtt.md, several daemons on one broker)",
            status,
            self.topics.status,
            self.topics.prefix,
            self.topics.prefix,
            socket.gethostname(),
        )
        alarm = {
            "kind": "foreign_status",
            "topic": self.topics.status,
            "status": status,
            "timestamp": time.time(),
        }
        self._queue_event(self.topics.alarm, _encode(alarm))

    def _check_state(self, topic: str, payload: bytes) -> None:
        """A state on one of our topics that we did not publish: overwrite it with ours, say so."""
        recent = self._recent.get(topic)
        if recent is None or payload in recent:
            return  # not a device of ours (one an earlier configuration had), or our own echo
        device = topic[len(self.topics.prefix) + 1 : -len("/state")]
        self._foreign_states += 1
        log.warning(
            "someone else published a state for %s on %s (%d bytes); putting ours back. Give only "
            "neuroauthd write access to %s/# in the broker's ACL (deploy/mosquitto.acl)",
            device,
            topic,
            len(payload),
            self.topics.prefix,
        )
        self._dirty.add(device)
        alarm = {"kind": "foreign_state", "device": device, "topic": topic, "timestamp": time.time()}
        self._queue_event(self.topics.alarm, _encode(alarm))

    async def _flush(self, client: aiomqtt.Client, watcher: asyncio.Task[None]) -> None:
        """Publish what is pending: states first (the truth), then events, then scores."""
        while True:
            if self._dirty:
                device = self._dirty.pop()
                body = self._states.get(device, b"")
                try:
                    # An empty retained message clears a state left by an earlier run.
                    self._recent[self.topics.state(device)].append(body)
                    await self._publish(client, watcher, self.topics.state(device), body, qos=1, retain=True)
                except BaseException:
                    self._dirty.add(device)
                    raise
            elif self._events:
                topic, body = self._events[0]
                await self._publish(client, watcher, topic, body, qos=1, retain=False)
                if self._events and self._events[0][1] is body:
                    self._events.popleft()
            elif self._scores:
                topic, body = self._scores.popleft()
                await self._publish(client, watcher, topic, body, qos=0, retain=False)
            else:
                return

    async def _publish(
        self,
        client: aiomqtt.Client,
        watcher: asyncio.Task[None],
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool,
    ) -> None:
        """Publish, but give up as soon as the connection drops (not after the ack timeout)."""
        await _unless_lost(client.publish(topic, payload, qos=qos, retain=retain), watcher)

    def _discovery_configs(self) -> list[tuple[str, dict[str, Any]]]:
        s = self.settings
        node = re.sub(r"[^A-Za-z0-9_-]", "_", s.prefix)
        availability = {
            "availability_topic": self.topics.status,
            "payload_available": STATUS_ONLINE,
            "payload_not_available": STATUS_OFFLINE,
        }
        origin = {"name": "neuroauthd"}
        with contextlib.suppress(metadata.PackageNotFoundError):
            origin["sw_version"] = metadata.version("neuroauth")
        configs = []
        for device in self.devices:
            ident = f"neuroauth_{node}_{device}"
            about = {
                "device": {
                    "identifiers": [ident],
                    "name": f"NeuroAuth {device}",
                    "manufacturer": "NeuroAuth",
                    "model": "EEG headset",
                },
                "origin": origin,
            }
            # Device class "lock": ON means unlocked, OFF locked. Only OWNER unlocks.
            lock = {
                "name": f"{device} lock",
                "unique_id": f"{ident}_lock",
                "device_class": "lock",
                "state_topic": self.topics.state(device),
                "value_template": "{{ 'ON' if value_json.state == 'OWNER' else 'OFF' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "json_attributes_topic": self.topics.state(device),
                **availability,
                **about,
            }
            configs.append((f"{s.discovery.prefix}/binary_sensor/{node}/{device}_lock/config", lock))
            if s.publish_scores:
                score = {
                    "name": f"{device} score",
                    "unique_id": f"{ident}_score",
                    "state_topic": self.topics.score(device),
                    "value_template": "{{ value_json.score }}",
                    "state_class": "measurement",
                    **availability,
                    **about,
                }
                configs.append((f"{s.discovery.prefix}/sensor/{node}/{device}_score/config", score))
        return configs


def connection_options(settings: MqttSettings) -> dict[str, Any]:
    """``aiomqtt.Client`` keyword arguments that reach and log in to the configured broker: address,
    credentials, TLS, keep-alive and timeout. Every client of the broker (the daemon, ``neuroauth
    watch``) connects with these; each adds its own ``identifier`` (and will)."""
    tls_params = None
    tls_insecure = None
    if settings.tls.enabled:
        tls = settings.tls
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        tls_insecure = tls.insecure
    return {
        "hostname": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": settings.secret_password(),
        "keepalive": settings.keepalive,
        "timeout": _BROKER_TIMEOUT_S,
        "tls_params": tls_params,
        "tls_insecure": tls_insecure,
    }


def reconnect_delay(settings: MqttSettings, attempt: int) -> float:
    """Seconds to wait before reconnection ``attempt`` (0 first): doubling from ``reconnect_min_s`` up
    to ``reconnect_max_s``, jittered over the upper half so that clients do not come back in step."""
    low, high = settings.reconnect_min_s, settings.reconnect_max_s
    ceiling = min(high, low * 2.0 ** min(attempt, 32))
    return random.uniform(max(low, ceiling / 2), ceiling)


async def _unless_lost(operation: Awaitable[None], watcher: asyncio.Task[None]) -> None:
    task = asyncio.ensure_future(operation)
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
    if task.cancelled():
        raise _ConnectionLost(_watch_reason(watcher))
    task.result()


def _watch_reason(watcher: asyncio.Task[None]) -> str:
    if watcher.done() and not watcher.cancelled():
        exc = watcher.exception()
        if exc is not None:
            cause = exc.__cause__
            return f"{exc}: {cause}" if cause is not None else str(exc)
    return "connection closed"


def _json_default(value: Any) -> Any:
    # Scalars of array libraries (numpy.float32, torch 0-d tensors) expose .item().
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode(payload: Mapping[str, Any]) -> bytes:
    """JSON bytes of ``payload``; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(dict(payload), default=_json_default, allow_nan=False, separators=(",", ":")).encode()
