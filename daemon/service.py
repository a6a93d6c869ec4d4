"""The service: every configured headset from its LSL stream to a decision on MQTT.

One asyncio task per headset reads its LSL inlet and feeds the shared streaming
engine; one task advances the engine (in a worker thread, batched over all
headsets), scores each window against the headset owner's template, drives the
headset's decision machine and publishes what changed; the MQTT publisher keeps
its own connection. The service never exits on its own: a stream that goes away
is waited for with backoff (its headset in NO_SIGNAL meanwhile), a broker that
goes away is reconnected to, and decisions go on either way.

States, events and scores carry wall-clock times (seconds since the epoch);
decisions themselves run on the LSL clock of the samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import pylsl

from ..config import HeadsetSettings, Settings
from ..enroll.decision import Decision, DecisionMachine, State
from ..enroll.template import Template
from ..errors import MontageError, NeuroAuthError
from ..models.checkpoint import NeuroAuthModel
from ..models.streaming import Advance, EngineConfig, StreamingEngine
from .inlet import EegInlet, StreamError, StreamLost, backoff_delays, connect_with_backoff
from .memory import resident_mb
from .mqtt import MqttPublisher
from .notify import Notifier

log = logging.getLogger(__name__)

PULL_INTERVAL_S = 0.04  # how often each inlet is read
ADVANCE_INTERVAL_S = 0.1  # how often the engine runs
STARTUP_WAIT_S = 30.0  # longest wait for streams and broker before READY=1 anyway
STATUS_INTERVAL_S = 10.0  # STATUS= to systemd
FUTURE_TOLERANCE_S = 5.0  # samples stamped further ahead of the local LSL clock are refused
STATS_LOG_INTERVAL_S = 300.0  # the same figures in the log


@dataclass
class Headset:
    """One headset's runtime: its settings, owner template, decision machine and stream."""

    settings: HeadsetSettings
    template: Template
    machine: DecisionMachine
    inlet: EegInlet | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    last_score: float | None = None
    reason: str | None = None  # why there is no signal, while NO_SIGNAL
    grace_until: float = 0.0  # LSL time before which a missing window is the stream warming up
    identity: dict | None = None  # the stream read last: source_id, host, channel labels

    @property
    def device(self) -> str:
        return self.settings.device


def wall_time(lsl_time: float) -> float:
    """Seconds since the epoch of a time on this machine's LSL clock."""
    return time.time() - (pylsl.local_clock() - lsl_time)


class Service:
    """Runs until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        model: NeuroAuthModel,
        templates: dict[str, Template],
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.notifier = notifier or Notifier()
        self.engine = StreamingEngine(
            model,
            EngineConfig(
                hop_seconds=settings.model.hop_seconds,
                max_backlog_seconds=settings.model.max_backlog_seconds,
                rate_tolerance=EngineConfig().rate_tolerance if settings.model.check_rate else None,
            ),
        )
        now = pylsl.local_clock()
        self.headsets: dict[str, Headset] = {}
        wanted = {
            "false_lockouts_per_hour": settings.decision.false_lockouts_per_hour,
            "time_to_lock_s": settings.decision.time_to_lock_s,
        }
        for h in settings.headsets:
            template = templates[h.user]
            calibrated = template.calibration.get("decision", {}).get("targets")
            if calibrated is not None and calibrated != wanted:
                log.warning(
                    "%s: the template of %s was calibrated to %s, the configuration asks for %s; "
                    "enroll again (`neuroauth enroll --config ...`) to calibrate to these targets",
                    h.device,
                    h.user,
                    calibrated,
                    wanted,
                )
            params = dataclasses.replace(template.decision, gap_seconds=settings.decision.no_signal_after_s)
            self.headsets[h.device] = Headset(h, template, DecisionMachine(params, start_time=now))
        self.mqtt: MqttPublisher | None = None
        self.windows_seen = 0

    # -- running

    async def run(self, stop: asyncio.Event) -> None:
        devices = list(self.headsets)
        async with MqttPublisher(self.settings.mqtt, devices) as mqtt:
            self.mqtt = mqtt
            for h in self.headsets.values():
                self._publish_state(h, h.machine.tick(pylsl.local_clock()))
            try:
                async with asyncio.TaskGroup() as tasks:
                    for h in self.headsets.values():
                        tasks.create_task(self._read(h), name=f"inlet-{h.device}")
                    tasks.create_task(self._process(), name="engine")
                    tasks.create_task(self._startup(), name="startup")
                    tasks.create_task(self._status(), name="status")
                    tasks.create_task(self._heartbeat(), name="heartbeat")
                    await stop.wait()
                    raise _Stopping
            except* _Stopping:
                pass
            finally:
                self.notifier.stopping()
                # every headset locked before offline: a consumer that follows events, or reads the
                # retained state, must not stay unlocked because the daemon went away
                now = pylsl.local_clock()
                for h in self.headsets.values():
                    self._no_signal(h, now, "neuroauthd stopped")
                    if h.inlet is not None:
                        h.inlet.close()
            log.info("stopping: every headset locked; publishing offline and disconnecting")

    async def _startup(self) -> None:
        """READY=1 once the broker and every stream are up (or after STARTUP_WAIT_S regardless)."""
        waits = [h.connected.wait() for h in self.headsets.values()]
        try:
            async with asyncio.timeout(STARTUP_WAIT_S):
                await asyncio.gather(self.mqtt.wait_connected(), *waits)
        except TimeoutError:
            log.warning("not everything is up after %.0f s; ready anyway: %s", STARTUP_WAIT_S, self.summary())
        self.notifier.ready(self.summary())
        log.info("ready: %s", self.summary())

    async def _heartbeat(self) -> None:
        """Republish every headset's state with a fresh timestamp: a consumer can tell a current
        state from one left behind by a daemon that is gone."""
        while True:
            await asyncio.sleep(self.settings.mqtt.state_heartbeat_s)
            now = pylsl.local_clock()
            for h in self.headsets.values():
                self._publish_state(h, h.machine.tick(now))

    async def _status(self) -> None:
        logged = time.monotonic()
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            stats = self.stats()
            figures = " ".join(f"{k}={v}" for k, v in stats.items())
            self.notifier.status(f"{self.summary()}; {figures}")
            if time.monotonic() - logged >= STATS_LOG_INTERVAL_S:
                log.info("stats: %s", figures)
                logged = time.monotonic()

    def summary(self) -> str:
        broker = "broker connected" if self.mqtt is not None and self.mqtt.connected else "broker away"
        heads = ", ".join(f"{h.device} {h.machine.state.value}" for h in self.headsets.values())
        return f"{heads}; {broker}"

    def stats(self) -> dict[str, int | float]:
        """What could grow in a long run: memory, tasks, queues, buffers."""
        queued = self.mqtt.queued if self.mqtt is not None else {}
        return {
            "rss_mb": round(resident_mb(), 1),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "pending_samples": sum(self.engine.pending_samples().values()),
            "stream_state_kb": self.engine.state_bytes() // 1024,
            "windows": self.windows_seen,
            "mqtt_events_queued": queued.get("events", 0),
            "mqtt_scores_queued": queued.get("scores", 0),
            "mqtt_dropped": queued.get("dropped_events", 0) + queued.get("dropped_scores", 0),
            "mqtt_foreign_states": queued.get("foreign_states", 0),
        }

    # -- one headset's stream

    async def _read(self, h: Headset) -> None:
        """Connect, feed the engine, and on loss go NO_SIGNAL and connect again; for ever."""
        selector = h.settings.stream
        retry = backoff_delays(1.0, 30.0)
        while True:
            try:
                h.inlet = await connect_with_backoff(
                    selector,
                    on_retry=lambda problem, delay, h=h: self._on_connect_retry(h, problem, delay),
                    resolve_timeout=h.settings.resolve_timeout_s,
                )
                self._check_identity(h)
                try:
                    self.engine.add_stream(h.device, h.inlet.require_labels(), h.inlet.sfreq)
                except MontageError as exc:  # the engine knows the headset; name the LSL stream
                    stream = f"LSL stream {h.inlet.name!r} (source_id {h.inlet.source_id!r})"
                    raise MontageError(stream, exc.missing, exc.available) from None
            except NeuroAuthError as exc:  # a stream we cannot use: wrong channels, rate, format
                log.error("%s: %s", h.device, exc)
                self._no_signal(h, pylsl.local_clock(), str(exc))
                if h.inlet is not None:
                    h.inlet.close()
                    h.inlet = None
                await asyncio.sleep(next(retry))
                continue
            retry = backoff_delays(1.0, 30.0)
            # the first window needs a window's worth of samples; until then no window is no fault
            h.grace_until = pylsl.local_clock() + self.model.spec.window_seconds + 1.0
            h.connected.set()
            log.info("%s: reading %s at %g Hz", h.device, h.inlet.name, h.inlet.sfreq)
            try:
                await self._pull_until_lost(h)
            finally:
                self.engine.remove_stream(h.device)
                h.inlet.close()
                h.inlet = None
                h.connected.clear()

    def _check_identity(self, h: Headset) -> None:
        """Refuse a stream that is not the one the owner was enrolled from; note one that differs from
        the stream read before (it starts from NO_SIGNAL either way: the loss reset the evidence)."""
        identity = h.inlet.identity()
        mismatch = h.template.stream_mismatch(identity)
        if mismatch is not None:
            raise StreamError(f"LSL stream {h.inlet.name!r} is {mismatch}")
        if h.identity is not None and identity != h.identity:
            log.warning(
                "%s: the stream changed identity (was %s, now %s); it must earn OWNER again from zero",
                h.device,
                h.identity,
                identity,
            )
            self._no_signal(h, pylsl.local_clock(), "the stream changed identity")
        h.identity = identity

    async def _pull_until_lost(self, h: Headset) -> None:
        stall = self.settings.decision.no_signal_after_s
        while True:
            try:
                volts, timestamps = h.inlet.pull()
            except StreamLost as exc:
                self._no_signal(h, pylsl.local_clock(), str(exc))
                return
            if timestamps.size:
                ahead = float(timestamps[-1]) - pylsl.local_clock()
                if ahead > FUTURE_TOLERANCE_S:  # a decision stamped in the future would outlive its cause
                    reason = (
                        f"timestamps {ahead:.1f} s ahead of this machine's clock; fix the clock of the "
                        "program streaming the headset"
                    )
                    log.warning("%s: %s (%s)", h.device, reason, h.inlet.name)
                    self._no_signal(h, pylsl.local_clock(), reason)
                    return
                try:
                    self.engine.push(h.device, volts, timestamps)
                except NeuroAuthError as exc:
                    self._no_signal(h, pylsl.local_clock(), str(exc))
                    return
            elif h.inlet.seconds_since_last_sample() > 3 * stall:
                reason = f"no samples for {3 * stall:g} s; reconnecting"
                log.warning("%s: %s to %s", h.device, reason, h.inlet.name)
                self._no_signal(h, pylsl.local_clock(), reason)
                return
            await asyncio.sleep(PULL_INTERVAL_S)

    # -- the engine, the scores and the decisions

    async def _process(self) -> None:
        watchdog = self.notifier.watchdog_interval()
        last_ping = 0.0
        while True:
            started = time.monotonic()
            advance, scored = await asyncio.to_thread(self._advance)
            self._decide(advance, scored)
            now = pylsl.local_clock()
            for h in self.headsets.values():
                if now >= h.grace_until:
                    self._publish_state(h, h.machine.tick(now), only_changes=True)
            if watchdog is not None and started - last_ping >= watchdog / 2:
                self.notifier.watchdog()
                last_ping = started
            await asyncio.sleep(max(0.0, ADVANCE_INTERVAL_S - (time.monotonic() - started)))

    def _advance(self) -> tuple[Advance, dict[int, float]]:
        """Engine step and window scores (in a worker thread): fused score per window index."""
        advance = self.engine.advance()
        scored: dict[int, float] = {}
        for i, w in enumerate(advance.windows):
            h = self.headsets.get(w.stream)
            if w.ok and h is not None:
                try:
                    score = float(h.template.score(w.embedding[None]).fused[0])
                except (ValueError, ArithmeticError, NeuroAuthError) as exc:  # no window ends the service
                    log.error("%s: a window could not be scored (%s); no signal", h.device, exc)
                    w.problems = (*w.problems, f"the window could not be scored: {exc}")
                    continue
                if math.isfinite(score):
                    scored[i] = score
                else:  # never expected; a window that cannot be scored is no signal, not a crash
                    w.problems = (*w.problems, f"the window's score is {score}")
        return advance, scored

    def _decide(self, advance: Advance, scored: dict[int, float]) -> None:
        self.windows_seen += len(advance.windows)
        for r in advance.restarts:
            if r.stream in self.headsets:
                self._no_signal(self.headsets[r.stream], r.timestamp, f"stream restarted: {r.reason}")
        for i, w in enumerate(advance.windows):
            h = self.headsets.get(w.stream)
            if h is None:
                continue
            if i in scored:
                decision = h.machine.update(w.timestamp, scored[i])
                h.last_score, h.reason = scored[i], None
            else:
                decision = h.machine.no_signal(w.timestamp, "; ".join(w.problems))
                h.reason = decision.reason
            if self.settings.mqtt.publish_scores:
                self.mqtt.score(
                    h.device,
                    {
                        "timestamp": wall_time(w.timestamp),
                        "score": scored.get(i),
                        "evidence": decision.evidence,
                        "state": decision.state.value,
                        "problems": list(w.problems),
                    },
                )
            self._publish_state(h, decision, only_changes=True)

    def _on_connect_retry(self, h: Headset, problem: str, delay: float) -> None:
        """No stream to read: a headset not yet NO_SIGNAL (at start-up) becomes so, with ``problem``
        (which names the stream sought) as the reason; one already NO_SIGNAL keeps its reason."""
        log.info("%s: %s; trying again in %.1f s", h.device, problem, delay)
        if h.machine.state is not State.NO_SIGNAL:
            self._no_signal(h, pylsl.local_clock(), problem)

    def _no_signal(self, h: Headset, timestamp: float, reason: str) -> None:
        h.reason = reason
        self._publish_state(h, h.machine.no_signal(timestamp, reason), only_changes=True)

    def _publish_state(self, h: Headset, d: Decision, only_changes: bool = False) -> None:
        if only_changes and not d.changed:
            return
        if d.reason is not None:
            h.reason = d.reason
        payload = {
            "state": d.state.value,
            "locked": d.is_locked,
            "user": h.settings.user,
            "score": h.last_score,
            "evidence": round(d.evidence, 3),
            "since": wall_time(d.since) if d.since is not None else None,
            "timestamp": wall_time(d.timestamp),
            "reason": h.reason if d.state is State.NO_SIGNAL else None,
        }
        self.mqtt.set_state(h.device, payload)
        if d.changed and d.previous is not None and (d.previous is State.OWNER) != (d.state is State.OWNER):
            kind = "unlock" if d.state is State.OWNER else "lock"
            event = {"state": d.state.value, "previous": d.previous.value, "user": h.settings.user}
            event |= {"timestamp": payload["timestamp"], "reason": payload["reason"]}
            self.mqtt.event(h.device, kind, event)
            log.info("%s: %s (%s -> %s)", h.device, kind, d.previous.value, d.state.value)


class _Stopping(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside the task group to cancel every task on a clean stop."""
