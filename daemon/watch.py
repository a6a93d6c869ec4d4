"""``neuroauth watch``: lock the desktop session unless neuroauthd says its owner wears the headset.

The reference consumer of the MQTT contract (``docs/mqtt.md``). It follows one headset's
retained state, its lock / unlock events and the daemon's status, and keeps one verdict:

* **unlocked** only while the connection to the broker is up, the status is ``online``, the
  latest state is ``OWNER`` and was confirmed less than ``stale_after_s`` ago (by default three
  of the daemon's heartbeats, ``mqtt.state_heartbeat_s``), and no ``lock`` event came after it;
* **locked** otherwise, with the reason.

Each change of the verdict runs one command, once: ``--on-lock`` (default ``loginctl
lock-session``) on becoming locked, ``--on-unlock`` (default none: unlocking the desktop is the
user's business) on becoming unlocked. A state that goes stale, a daemon that says ``offline``,
a broker that goes away are changes like any other; a heartbeat repeating the same state is
not. Events are acted on once each, by ``event_id``. The verdict is re-evaluated at every
message and every second.

The pure part, :func:`evaluate` and :class:`LockState`, takes the time as an argument and does
no I/O. :class:`Watch` connects (with the daemon's broker settings, under its own client id and
without a will), reconnects with backoff, and hands each action to a :class:`CommandRunner`,
which runs the commands one at a time without a shell, under a timeout, logging a failure
rather than raising it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import secrets
import shlex
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiomqtt

from ..config import ConfigError, MqttSettings, Settings, load_settings
from ..enroll.decision import State
from ..errors import NeuroAuthError
from .mqtt import STATUS_ONLINE, Topics, connection_options, reconnect_delay

__all__ = [
    "Action",
    "Command",
    "CommandRunner",
    "LockState",
    "Verdict",
    "Watch",
    "WatchError",
    "WatchOptions",
    "cmd_watch",
    "evaluate",
    "load_watch_settings",
    "register",
    "watch",
    "watch_options",
]

log = logging.getLogger(__name__)

#: A state older than this many of the daemon's heartbeats is stale, i.e. locked.
STALE_HEARTBEATS = 3
#: A state stamped further ahead of this machine's clock is not trusted (the daemon's own rule for samples).
FUTURE_TOLERANCE_S = 5.0
#: Seconds after start to wait for the retained status and state before acting on what is known.
SETTLE_S = 3.0
#: Seconds between two evaluations when no message comes (a state goes stale without a message).
TICK_S = 1.0
#: Seconds a command may run before it is killed.
COMMAND_TIMEOUT_S = 10.0
#: Event ids remembered to act on each event once (QoS 1 delivers at least once).
SEEN_EVENTS = 1024
#: What ``--on-lock`` runs by default: the screen lock of the user's session (systemd >= 245 finds
#: the user's graphical session from a user service too).
DEFAULT_ON_LOCK = "loginctl lock-session"
#: MQTT refusals that retrying cannot fix: a bad user name or password, not authorised (v3 and v5 codes).
_REFUSED_LOGIN = {4, 5, 134, 135}

ActionKind = Literal["lock", "unlock"]


class WatchError(NeuroAuthError):
    """``neuroauth watch`` cannot run: its configuration, its device, its commands, its broker account."""


# -- the verdict, without I/O ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether the session should be locked, and why."""

    locked: bool
    reason: str


def evaluate(state: bytes | None, status: bytes | None, now: float, stale_after_s: float) -> Verdict:
    """The verdict from the latest retained ``state`` and ``status`` payloads at wall-clock time ``now``.

    Unlocked only for a status ``online`` and a state ``OWNER`` (``locked`` false) whose
    ``timestamp`` is at most ``stale_after_s`` old and not more than :data:`FUTURE_TOLERANCE_S`
    ahead of ``now``; ``None`` or an empty payload is a message never received (or cleared).
    """
    if not status:
        return Verdict(True, "no status from neuroauthd yet")
    if status != STATUS_ONLINE.encode():
        return Verdict(True, f"neuroauthd is {status[:40].decode(errors='replace')}")
    if not state:
        return Verdict(True, "no state published for this headset")
    body = _json_object(state)
    if body is None:
        return Verdict(True, f"unreadable state ({len(state)} bytes, not a JSON object)")
    name = body.get("state")
    if name != State.OWNER:
        why = body.get("reason")
        return Verdict(True, f"state {str(name)[:40]}" + (f": {str(why)[:200]}" if why else ""))
    if body.get("locked") is not False:
        return Verdict(True, f"state OWNER with locked = {body.get('locked')!r}")
    stamp = body.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        return Verdict(True, f"state OWNER without a valid timestamp ({str(stamp)[:40]})")
    age = now - stamp
    if age > stale_after_s:
        return Verdict(
            True, f"state OWNER is stale: last confirmed {age:.0f} s ago (limit {stale_after_s:g} s)"
        )
    if -age > FUTURE_TOLERANCE_S:
        return Verdict(
            True, f"state OWNER stamped {-age:.0f} s ahead of this machine's clock; check both clocks"
        )
    return Verdict(False, "OWNER")


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


@dataclass(frozen=True)
class Action:
    """A change of the verdict to act on: run the ``kind`` command once."""

    kind: ActionKind
    reason: str


class LockState:
    """What the watcher knows of one headset and what it last acted on. No I/O: the caller passes
    each message and the wall-clock time, and runs the :class:`Action` returned, if any.

    Nothing is acted on before the retained status and state have both arrived, ``settle_s`` has
    passed since ``start`` or the broker was found unreachable: a watcher starting next to a
    wearing owner does not lock the session for the moment it takes to hear the state.
    """

    def __init__(self, stale_after_s: float, *, start: float, settle_s: float = SETTLE_S) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be positive, got {stale_after_s}")
        self.stale_after_s = stale_after_s
        self._state: bytes | None = None
        self._status: bytes | None = None
        self._link_down: str | None = "not connected to the broker yet"  # why, or None when connected
        self._lock_event: str | None = None  # a lock event newer than the latest state
        self._seen: collections.deque[str] = collections.deque(maxlen=SEEN_EVENTS)
        self._seen_set: set[str] = set()
        self._settle_s = settle_s
        self._armed_at = start + settle_s
        self._armed = False
        self.locked: bool | None = None  # what the last action made it; None before the first

    def verdict(self, now: float) -> Verdict:
        if self._link_down is not None:
            return Verdict(True, f"broker unreachable: {self._link_down}")
        if self._lock_event is not None:
            return Verdict(True, self._lock_event)
        return evaluate(self._state, self._status, now, self.stale_after_s)

    def connected(self, now: float) -> Action | None:
        """Subscribed on a new connection; the retained messages follow."""
        self._link_down = None
        return self._decide(now)

    def broker_lost(self, reason: str, now: float) -> Action | None:
        """The broker cannot be reached (or refused us): locked until reconnected and told again."""
        self._link_down = reason
        self._state = self._status = None  # the broker hands them again on reconnection
        self._lock_event = None
        self._armed = True
        return self._decide(now)

    def on_status(self, payload: bytes, now: float) -> Action | None:
        self._status = payload or None
        return self._decide(now)

    def on_state(self, payload: bytes, now: float) -> Action | None:
        self._state = payload or None
        self._lock_event = None  # the daemon publishes a state before its event: this one is newer
        return self._decide(now)

    def on_event(self, payload: bytes, now: float) -> Action | None:
        """A ``lock`` event locks until the next state; an ``unlock`` event lets the state decide.
        An event whose ``event_id`` was seen already is ignored."""
        body = _json_object(payload)
        if body is None or body.get("kind") not in ("lock", "unlock"):
            log.warning("ignored an event that is not a lock or unlock event (%d bytes)", len(payload))
            return None
        event_id = body.get("event_id")
        if isinstance(event_id, str) and event_id:
            if event_id in self._seen_set:
                log.debug("event %s seen already; ignored", event_id)
                return None
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(event_id)
            self._seen_set.add(event_id)
        else:
            log.warning("an event without an event_id: it cannot be told from a repeat")
        if body["kind"] == "lock":
            self._lock_event = (
                f"lock event seq {body.get('seq')} ({str(body.get('previous'))[:40]} -> "
                f"{str(body.get('state'))[:40]})"
            )
        else:
            self._lock_event = None
        return self._decide(now)

    def tick(self, now: float) -> Action | None:
        """No message: a state may have gone stale, or the wait for the retained messages ended."""
        return self._decide(now)

    def _decide(self, now: float) -> Action | None:
        if not self._armed:
            heard = self._state is not None and self._status is not None
            if not heard and now < self._armed_at:
                return None
            self._armed = True
            if not heard and self._link_down is None:
                heard_of = (("status", self._status), ("state", self._state))
                missing = " or ".join(name for name, payload in heard_of if not payload)
                log.warning(
                    "no retained %s from neuroauthd after %g s: locked until it comes. Check that neuroauthd "
                    "runs with this prefix and this device, and that this broker account may read them",
                    missing,
                    self._settle_s,
                )
        verdict = self.verdict(now)
        if verdict.locked == self.locked:
            return None
        self.locked = verdict.locked
        return Action("lock" if verdict.locked else "unlock", verdict.reason)


# -- the commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command line to run on a change of the verdict: its words, and the text it was given as."""

    argv: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, text: str, option: str, *, shell: bool = False) -> Command | None:
        """``text`` split as a shell would (or given to ``/bin/sh -c`` with ``shell``); None when empty.

        Raises :class:`WatchError` naming ``option`` when the text cannot be split or its program
        is not an executable on ``PATH``.
        """
        if not text.strip():
            return None
        if shell:
            return cls(("/bin/sh", "-c", text), text)
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise WatchError(
                f"{option} {text!r} cannot be split into words ({exc}); quote it as a shell would, "
                "or pass --shell to run it with /bin/sh"
            ) from None
        if shutil.which(argv[0]) is None:
            raise WatchError(
                f"{option}: {argv[0]!r} is not an executable on PATH ({text!r}); give the program's "
                "full path, or install it"
            )
        return cls(argv, text)


class CommandRunner:
    """Runs the on-lock and on-unlock commands one at a time, in order, without blocking the loop.

    A command runs without a shell (unless built with ``--shell``), with ``stdin`` closed, in a
    process group of its own, killed with that group after ``timeout_s``. Its failure is logged
    with the end of its output, never raised. While one runs, one more action waits; an action
    opposite to the waiting one cancels both (the session is already in the state it asks for).
    Leaving the context lets the running command finish (within its timeout).
    """

    def __init__(
        self, on_lock: Command | None, on_unlock: Command | None, *, device: str, timeout_s: float
    ) -> None:
        self.commands: dict[ActionKind, Command | None] = {"lock": on_lock, "unlock": on_unlock}
        self.device = device
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._waiting: Action | None = None

    async def __aenter__(self) -> CommandRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._waiting is not None:
            log.info("stopping: the %s command waiting behind a running one is not run", self._waiting.kind)
            self._waiting = None
        if self._task is not None:
            await asyncio.wait({self._task})

    def submit(self, action: Action) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(action), name=f"watch-command-{action.kind}")
        elif self._waiting is not None:
            log.info(
                "%s: %s then %s while a command ran: neither is run, the session stays as it was left",
                self.device,
                self._waiting.kind,
                action.kind,
            )
            self._waiting = None
        else:
            self._waiting = action

    async def _run(self, action: Action) -> None:
        try:
            next_action: Action | None = action
            while next_action is not None:
                await self.execute(next_action)
                next_action, self._waiting = self._waiting, None
        finally:
            self._task = None

    async def execute(self, action: Action) -> int | None:
        """Run ``action``'s command once; its exit status, or None when it did not run or finish."""
        command = self.commands[action.kind]
        if command is None:
            return None
        env = {
            **os.environ,
            "NEUROAUTH_WATCH_DEVICE": self.device,
            "NEUROAUTH_WATCH_ACTION": action.kind,
            "NEUROAUTH_WATCH_REASON": action.reason,
        }
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.error("%s: cannot run the %s command %r: %s", self.device, action.kind, command.text, exc)
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                output, _ = await process.communicate()
        except TimeoutError:
            _kill_group(process)
            await process.wait()
            log.error(
                "%s: the %s command %r did not finish within %g s; killed it",
                self.device,
                action.kind,
                command.text,
                self.timeout_s,
            )
            return None
        except asyncio.CancelledError:
            _kill_group(process)
            raise
        code = process.returncode
        if code != 0:
            tail = output.decode(errors="replace").strip()[-400:]
            log.error(
                "%s: the %s command %r failed with status %s%s",
                self.device,
                action.kind,
                command.text,
                code,
                f": {tail}" if tail else "",
            )
        else:
            log.info(
                "%s: ran the %s command %r (%.1f s)",
                self.device,
                action.kind,
                command.text,
                time.monotonic() - started,
            )
        return code


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# -- the MQTT loop ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchOptions:
    """What ``neuroauth watch`` was asked to do."""

    device: str
    on_lock: Command | None
    on_unlock: Command | None
    stale_after_s: float
    command_timeout_s: float = COMMAND_TIMEOUT_S
    settle_s: float = SETTLE_S


def _client_id() -> str:
    """Its own, never the daemon's ``mqtt.client_id``: a client connecting under an id in use takes the
    session over, and the daemon would be thrown off the broker."""
    return f"neuroauth-watch-{socket.gethostname()}-{secrets.token_hex(4)}"


class Watch:
    """Follows one headset on the broker and runs the commands; :meth:`run` until ``stop`` is set."""

    def __init__(self, settings: MqttSettings, options: WatchOptions) -> None:
        self.settings = settings
        self.options = options
        self.topics = Topics(settings.prefix)
        self.client_id = _client_id()
        self.state = LockState(options.stale_after_s, start=time.time(), settle_s=options.settle_s)
        self.commands = CommandRunner(
            options.on_lock, options.on_unlock, device=options.device, timeout_s=options.command_timeout_s
        )
        self._fatal: WatchError | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set; raises :class:`WatchError` when the broker refuses our login
        or subscription (after locking: retrying cannot fix that)."""
        async with self.commands:
            try:
                async with asyncio.TaskGroup() as tasks:
                    s = self.settings
                    tasks.create_task(self._keep_connected(stop), name=f"watch-mqtt {s.host}:{s.port}")
                    tasks.create_task(self._clock(), name="watch-clock")
                    await stop.wait()
                    raise _Stopping
            except* _Stopping:
                pass
        if self._fatal is not None:
            raise self._fatal

    def _act(self, action: Action | None) -> None:
        if action is None:
            return
        log.info("%s: %s (%s)", self.options.device, action.kind, action.reason)
        self.commands.submit(action)

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._act(self.state.tick(time.time()))

    async def _keep_connected(self, stop: asyncio.Event) -> None:
        s = self.settings
        device = self.options.device
        topics = {
            self.topics.status: self.state.on_status,
            self.topics.state(device): self.state.on_state,
            self.topics.event(device): self.state.on_event,
        }
        attempt = 0
        while True:
            established = False
            try:
                async with aiomqtt.Client(**connection_options(s), identifier=self.client_id) as client:
                    established = True
                    attempt = 0
                    granted = await client.subscribe([(topic, 1) for topic in topics])
                    refused = [t for t, code in zip(topics, granted, strict=False) if _failed(code)]
                    if refused:
                        self._refuse(
                            f"the MQTT broker {s.host}:{s.port} refused {_account(s)} the subscription to "
                            f"{', '.join(refused)}; give that account read access to {s.prefix}/# "
                            "(deploy/mosquitto.acl)",
                            stop,
                        )
                        return
                    log.info(
                        "connected to the MQTT broker %s:%d as %s; watching %s",
                        s.host,
                        s.port,
                        self.client_id,
                        ", ".join(topics),
                    )
                    self._act(self.state.connected(time.time()))
                    async for message in client.messages:
                        handle = topics.get(str(message.topic))
                        if handle is not None:
                            self._act(handle(_payload(message.payload), time.time()))
                reason = "the connection ended"
            except aiomqtt.MqttCodeError as exc:
                if not established and _code(exc.rc) in _REFUSED_LOGIN:
                    self._refuse(
                        f"the MQTT broker {s.host}:{s.port} refused {_account(s)}: {exc}; set the watcher's "
                        "own broker account with NEUROAUTH_MQTT__USERNAME and NEUROAUTH_MQTT__PASSWORD_FILE "
                        "(or mqtt.username and mqtt.password_file)",
                        stop,
                    )
                    return
                verb = "lost the connection" if established else "refused the connection"
                reason = f"the broker {s.host}:{s.port} {verb}: {exc}"
            except aiomqtt.MqttError as exc:
                reason = f"{s.host}:{s.port}: {exc}"
            self._act(self.state.broker_lost(reason, time.time()))
            delay = reconnect_delay(s, attempt)
            attempt += 1
            log.warning("not connected to the MQTT broker (%s); trying again in %.1f s", reason, delay)
            await asyncio.sleep(delay)

    def _refuse(self, message: str, stop: asyncio.Event) -> None:
        """Lock, remember why the watcher cannot go on, and stop it."""
        self._act(self.state.broker_lost(message, time.time()))
        self._fatal = WatchError(message)
        stop.set()


class _Stopping(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside the task group to cancel every task on a clean stop."""


def _payload(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode() if payload is not None else b""


def _code(rc: Any) -> int | None:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def _failed(granted: Any) -> bool:
    code = _code(granted)
    return code is None or code >= 0x80


def _account(settings: MqttSettings) -> str:
    return f"user {settings.username!r}" if settings.username else "an anonymous login"


async def watch(settings: MqttSettings, options: WatchOptions) -> None:
    """Run a :class:`Watch` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Watch(settings, options).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# -- the command line -------------------------------------------------------------------------------

DESCRIPTION = """\
Lock the desktop session unless neuroauthd says that the headset's owner wears it: the state
is OWNER, confirmed within --stale-after seconds, and neuroauthd is online; locked while the
broker cannot be reached. Each change runs --on-lock or --on-unlock once. The broker, its
account and the topics come from neuroauthd's configuration (--config, else $NEUROAUTH_CONFIG,
else /etc/neuroauth/neuroauthd.toml) and NEUROAUTH_MQTT__* variables; give the watcher its
own read-only account with NEUROAUTH_MQTT__USERNAME and NEUROAUTH_MQTT__PASSWORD_FILE.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``watch`` to the ``neuroauth`` sub-commands."""
    p = subparsers.add_parser(
        "watch",
        help="lock the desktop session unless neuroauthd says the owner wears the headset",
        description=DESCRIPTION,
    )
    p.add_argument("--device", required=True, help="the headset to follow: a device of the configuration")
    p.add_argument("--config", type=Path, help="neuroauthd's configuration file (default: as neuroauthd)")
    p.add_argument(
        "--on-lock",
        default=DEFAULT_ON_LOCK,
        help=f"command run once on every change to locked (default: {DEFAULT_ON_LOCK}; '' for none)",
    )
    p.add_argument(
        "--on-unlock",
        default="",
        help="command run once on every change to unlocked (default: none; unlocking the desktop is "
        "left to the user)",
    )
    p.add_argument(
        "--shell", action="store_true", help="run the commands with /bin/sh -c instead of splitting them"
    )
    p.add_argument(
        "--stale-after",
        type=_seconds,
        default=None,
        help=f"seconds after which a state not confirmed again is stale, i.e. locked (default: "
        f"{STALE_HEARTBEATS} x mqtt.state_heartbeat_s)",
    )
    p.add_argument(
        "--command-timeout",
        type=_seconds,
        default=COMMAND_TIMEOUT_S,
        help=f"seconds a command may run before it is killed (default {COMMAND_TIMEOUT_S:g})",
    )
    p.set_defaults(run=cmd_watch)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def load_watch_settings(given: Path | None) -> tuple[Settings, Path | None]:
    """neuroauthd's settings, found as neuroauthd finds them; :class:`WatchError` when there are none."""
    from .main import config_path

    path = config_path(given)
    try:
        return load_settings(path), path
    except ConfigError as exc:
        if path is None:
            raise WatchError(
                "no configuration: neither --config, $NEUROAUTH_CONFIG nor /etc/neuroauth/neuroauthd.toml; "
                "pass --config with neuroauthd's configuration file, so that the watcher uses its broker "
                "and topics"
            ) from None
        if any(e.startswith(("mqtt.password", "mqtt.username")) for e in exc.errors):
            raise WatchError(
                f"{exc}\n  the watcher logs in with its own broker account: set NEUROAUTH_MQTT__USERNAME "
                "and NEUROAUTH_MQTT__PASSWORD_FILE (see deploy/README.md)"
            ) from None
        raise


def watch_options(args: argparse.Namespace, settings: Settings, path: Path | None) -> WatchOptions:
    """The options of ``args`` checked against ``settings``; :class:`WatchError` naming what to fix."""
    where = f"the configuration in {path}" if path is not None else "the configuration"
    devices = [h.device for h in settings.headsets]
    if args.device not in devices:
        raise WatchError(
            f"--device {args.device!r} is not a headset of {where} (its devices: {', '.join(devices)}); "
            "pass one of them"
        )
    heartbeat = settings.mqtt.state_heartbeat_s
    stale_after = args.stale_after if args.stale_after is not None else STALE_HEARTBEATS * heartbeat
    if stale_after <= heartbeat:
        raise WatchError(
            f"--stale-after {stale_after:g} is not longer than mqtt.state_heartbeat_s ({heartbeat:g} s) of "
            f"{where}: every state would go stale before the next heartbeat; give more than {heartbeat:g}, "
            f"e.g. {STALE_HEARTBEATS * heartbeat:g}"
        )
    return WatchOptions(
        device=args.device,
        on_lock=Command.parse(args.on_lock, "--on-lock", shell=args.shell),
        on_unlock=Command.parse(args.on_unlock, "--on-unlock", shell=args.shell),
        stale_after_s=stale_after,
        command_timeout_s=args.command_timeout,
    )


def cmd_watch(args: argparse.Namespace) -> int:
    settings, path = load_watch_settings(args.config)
    options = watch_options(args, settings, path)
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    s = settings.mqtt
    log.info(
        "watching %s on %s:%d (%s); on lock: %s; on unlock: %s; stale after %g s",
        options.device,
        s.host,
        s.port,
        Topics(s.prefix).state(options.device),
        options.on_lock.text if options.on_lock else "nothing",
        options.on_unlock.text if options.on_unlock else "nothing",
        options.stale_after_s,
    )
    asyncio.run(watch(s, options))
    log.info("stopped")
    return 0
