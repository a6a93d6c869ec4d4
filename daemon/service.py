"""The service: every configured headset from its LSL stream to a decision on MQTT.

One asyncio task per headset finds and opens its LSL stream (and opens it again when
it is lost); one thread, the pump (:mod:`neuroauth.daemon.pump`), reads every open
inlet, feeds the shared streaming engine, advances it (batched over all headsets) and
scores each window against the headset owner's template; on the event loop, each
window drives its headset's decision machine and what changed is published; the MQTT
publisher keeps its own connection. The service never exits on its own: a stream that goes away
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pylsl

from ..config import HeadsetSettings, Settings
from ..enroll.decision import Decision, DecisionMachine, State
from ..enroll.template import Template
from ..errors import MontageError, NeuroAuthError
from ..models.checkpoint import NeuroAuthModel
from ..models.streaming import Advance, EngineConfig, StreamingEngine
from .inlet import EegInlet, StreamDirectory, StreamError, backoff_delays, connect_with_backoff
from .memory import resident_mb
from .mqtt import MqttPublisher
from .notify import Notifier
from .pump import CYCLE_S, Pump

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often the decision clocks are checked (a headset gone quiet) and the watchdog fed
PUMP_STALLED_S = 10.0  # a pump cycle this old means the pump is stuck: the watchdog is no longer fed
BATCH = 8  # headsets whose windows end together: one batched model step costs little more than one
STARTUP_WAIT_S = 30.0  # longest wait for streams and broker before READY=1 anyway
STATUS_INTERVAL_S = 10.0  # STATUS= to systemd
STATS_LOG_INTERVAL_S = 300.0  # the same figures in the log


@dataclass
class Headset:
    """One headset's runtime: its settings, owner template, decision machine and stream."""

    settings: HeadsetSettings
    template: Template
    machine: DecisionMachine
    offset_s: float  # where its windows end within the hop (see StreamingEngine.add_stream)
    inlet: EegInlet | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # the pump stopped reading the inlet
    last_score: float | None = None
    reason: str | None = None  # why there is no signal, while NO_SIGNAL
    grace_until: float = 0.0  # LSL time before which a missing window is the stream warming up
    identity: dict | None = None  # the stream read last: source_id, host, channel labels

    @property
    def device(self) -> str:
        return self.settings.device


def window_offset(index: int, headsets: int, hop_seconds: float) -> float:
    """Where within the hop the windows of headset ``index`` of ``headsets`` end.

    Headsets that start together would otherwise all have a window due at once, every hop,
    and wait for one another's model step. They are dealt round-robin into slots spread over
    the hop, about :data:`BATCH` to a slot: few enough to wait little, enough to share a
    batched step (at most one slot per pump cycle).
    """
    slots = max(1, min(headsets // BATCH, math.floor(hop_seconds / CYCLE_S)))
    return (index % slots) / slots * hop_seconds


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
            offset = window_offset(len(self.headsets), len(settings.headsets), settings.model.hop_seconds)
            self.headsets[h.device] = Headset(h, template, DecisionMachine(params, start_time=now), offset)
        self.mqtt: MqttPublisher | None = None
        self.pump: Pump | None = None
        self.directory: StreamDirectory | None = None  # the stream lookups every headset shares
        self.windows_seen = 0
        self._stopped = False

    # -- running

    async def run(self, stop: asyncio.Event) -> None:
        devices = list(self.headsets)
        loop = asyncio.get_running_loop()
        # finding and opening streams blocks in liblsl for seconds: enough threads that every
        # headset can wait at once (the pump has a thread of its own)
        workers = min(256, 8 + 2 * len(devices))
        loop.set_default_executor(ThreadPoolExecutor(workers, thread_name_prefix="lsl-connect"))
        self.pump = Pump(
            self.engine,
            loop,
            self._decide,
            self._on_lost,
            silent_after_s=3 * self.settings.decision.no_signal_after_s,
        )
        pump_thread = ThreadPoolExecutor(1, thread_name_prefix="pump")
        self.directory = StreamDirectory()
        # room for every headset's scores of a few cycles: a burst of windows due at once is not dropped
        async with MqttPublisher(
            self.settings.mqtt, devices, score_queue_size=max(64, 4 * len(devices))
        ) as mqtt:
            self.mqtt = mqtt
            for h in self.headsets.values():
                self._publish_state(h, h.machine.tick(pylsl.local_clock()))
            try:
                async with asyncio.TaskGroup() as tasks:
                    for h in self.headsets.values():
                        tasks.create_task(self._read(h), name=f"inlet-{h.device}")
                    tasks.create_task(self._run_pump(pump_thread), name="pump")
                    tasks.create_task(self._tick(), name="tick")
                    tasks.create_task(self._startup(), name="startup")
                    tasks.create_task(self._status(), name="status")
                    tasks.create_task(self._heartbeat(), name="heartbeat")
                    await stop.wait()
                    raise _Stopping
            except* _Stopping:
                pass
            finally:
                self.pump.stop.set()
                pump_thread.shutdown(wait=True)
                self._stopped = True  # what the pump handed over and is still queued is not decided
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
            "pump_busy": self.pump.busy_share() if self.pump is not None else 0.0,
            "pump_reads_per_cycle": self.pump.reads_per_cycle() if self.pump is not None else 0.0,
            "stream_state_kb": self.engine.state_bytes() // 1024,
            "windows": self.windows_seen,
            "mqtt_events_queued": queued.get("events", 0),
            "mqtt_scores_queued": queued.get("scores", 0),
            "mqtt_dropped": queued.get("dropped_events", 0) + queued.get("dropped_scores", 0),
            "mqtt_foreign_states": queued.get("foreign_states", 0),
            "mqtt_foreign_status": queued.get("foreign_status", 0),
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
                    directory=self.directory,
                )
                self._check_identity(h)
                try:
                    self.engine.add_stream(h.device, h.inlet.require_labels(), h.inlet.sfreq, h.offset_s)
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
            h.grace_until = (
                pylsl.local_clock() + self.model.spec.window_seconds + self.engine.config.hop_seconds + 1.0
            )
            h.lost.clear()
            self.pump.attach(h.device, h.inlet, lambda e, t=h.template: float(t.score(e[None]).fused[0]))
            h.connected.set()
            log.info("%s: reading %s at %g Hz", h.device, h.inlet.name, h.inlet.sfreq)
            try:
                await h.lost.wait()
            finally:
                self.pump.detach(h.device)
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

    def _on_lost(self, device: str, inlet: EegInlet, reason: str) -> None:
        """The pump stopped reading ``inlet`` (on the event loop): NO_SIGNAL, and connect again."""
        h = self.headsets[device]
        if self._stopped or h.inlet is not inlet:
            return  # an inlet already given up (closed while a cycle read it)
        log.warning("%s: %s (%s)", h.device, reason, inlet.name)
        self._no_signal(h, pylsl.local_clock(), reason)
        h.lost.set()

    # -- the decisions

    async def _run_pump(self, thread: ThreadPoolExecutor) -> None:
        """The pump's thread, for as long as the service runs; an error there ends the service."""
        await asyncio.get_running_loop().run_in_executor(thread, self.pump.run)

    async def _tick(self) -> None:
        """Headsets with no window for too long go NO_SIGNAL; the watchdog hears from a live pump."""
        watchdog = self.notifier.watchdog_interval()
        last_ping = 0.0
        while True:
            now = pylsl.local_clock()
            for h in self.headsets.values():
                if now >= h.grace_until:
                    self._publish_state(h, h.machine.tick(now), only_changes=True)
            started = time.monotonic()
            if watchdog is not None and started - last_ping >= watchdog / 2:
                if started - self.pump.last_cycle < PUMP_STALLED_S:
                    self.notifier.watchdog()
                    last_ping = started
                else:
                    log.error("the pump has not completed a cycle for %.0f s", started - self.pump.last_cycle)
            await asyncio.sleep(TICK_S)

    def _decide(self, advance: Advance, scored: dict[int, float]) -> None:
        if self._stopped:  # every headset is already published locked for the stop
            return
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
