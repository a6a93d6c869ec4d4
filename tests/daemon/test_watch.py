"""``neuroauth watch``: the verdict from the retained state, the status and the time; the commands it
runs; the command line's errors; the watcher on a real mosquitto, alone and against the real daemon.

Commands that append a line to a file stand in for the session lock: the file says which
command ran, how many times and why (``NEUROAUTH_WATCH_REASON``).
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import itertools
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import test_service
from neuroauth.daemon.mqtt import Topics
from neuroauth.daemon.watch import (
    FUTURE_TOLERANCE_S,
    Action,
    Command,
    CommandRunner,
    LockState,
    Watch,
    WatchError,
    WatchOptions,
    evaluate,
    load_watch_settings,
)
from test_service import DEVICE, OWNER_STREAM, SPEED, daemon_env, state_is, subscriber, write_config

from neuroauth.cli import build_parser, main
from neuroauth.config import MqttSettings

# fixtures: the owner's template (enrolled once per module) and neuroauthd as a process
templates = test_service.templates
neuroauthd = test_service.neuroauthd

NOW = 1_700_000_000.0
STALE = 90.0
ONLINE = b"online"
TIMEOUT = 30.0  # seconds to wait for something that should happen; the machine may be busy

# Appends "<argv[2]>\t<reason>" to the file argv[1]: the stand-in for the session lock.
RECORD = (
    "import os, sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\t' + "
    "os.environ['NEUROAUTH_WATCH_REASON'] + '\\n')"
)


def state(name: str = "OWNER", timestamp: float = NOW, **extra) -> bytes:
    body = {"state": name, "locked": name != "OWNER", "user": "owner", "timestamp": timestamp, **extra}
    return json.dumps(body).encode()


def event(kind: str, event_id: str | None, seq: int = 1) -> bytes:
    body = {"kind": kind, "state": "IMPOSTOR" if kind == "lock" else "OWNER", "seq": seq, "device": DEVICE}
    body["previous"] = "OWNER" if kind == "lock" else "UNKNOWN"
    if event_id is not None:
        body["event_id"] = event_id
    return json.dumps(body).encode()


def recorder(path: Path, kind: str) -> str:
    """A command line, as given to --on-lock / --on-unlock, that records ``kind`` in ``path``."""
    return shlex.join([sys.executable, "-c", RECORD, str(path), kind])


def recorded(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split("\t", 1)) for line in path.read_text().splitlines()]


# -- the verdict --------------------------------------------------------------------------------------


def test_owner_fresh_and_online_is_the_only_unlocked_verdict():
    assert evaluate(state(), ONLINE, NOW + 1, STALE).locked is False
    assert evaluate(state(timestamp=NOW - STALE + 1), ONLINE, NOW, STALE).locked is False


@pytest.mark.parametrize(
    ("payload", "status", "now", "why"),
    [
        (state(timestamp=NOW - STALE - 1), ONLINE, NOW, "stale"),  # not confirmed for three heartbeats
        (state(timestamp=NOW + FUTURE_TOLERANCE_S + 1), ONLINE, NOW, "ahead"),  # a clock gone wrong
        (state(), b"offline", NOW, "offline"),  # the daemon stopped, or its will
        (state(), None, NOW, "no status"),
        (state("IMPOSTOR"), ONLINE, NOW, "IMPOSTOR"),
        (state("UNKNOWN"), ONLINE, NOW, "UNKNOWN"),
        (state("NO_SIGNAL", reason="channel T7 flat"), ONLINE, NOW, "NO_SIGNAL: channel T7 flat"),
        (None, ONLINE, NOW, "no state"),
        (b"", ONLINE, NOW, "no state"),  # a retained state cleared
        (b"OWNER", ONLINE, NOW, "unreadable"),
        (b'["OWNER"]', ONLINE, NOW, "unreadable"),
        (json.dumps({"state": "OWNER", "locked": True, "timestamp": NOW}).encode(), ONLINE, NOW, "locked"),
        (json.dumps({"state": "OWNER", "locked": False}).encode(), ONLINE, NOW, "timestamp"),
        (
            json.dumps({"state": "OWNER", "locked": False, "timestamp": "now"}).encode(),
            ONLINE,
            NOW,
            "timestamp",
        ),
    ],
)
def test_anything_else_is_locked_with_its_reason(payload, status, now, why):
    verdict = evaluate(payload, status, now, STALE)
    assert verdict.locked and why in verdict.reason, verdict


def owner_unlocked(start: float = NOW) -> tuple[LockState, list[Action]]:
    """A LockState told OWNER and online: unlocked once, the action returned."""
    lock = LockState(STALE, start=start)
    actions = [a for a in (lock.connected(start), lock.on_status(ONLINE, start)) if a]
    assert actions == [], "acted before the state arrived"
    actions.append(lock.on_state(state(timestamp=start), start))
    assert actions == [Action("unlock", "OWNER")]
    return lock, actions


def test_a_transition_acts_once_and_heartbeats_of_the_same_state_do_not():
    lock, _ = owner_unlocked()
    for beat in range(1, 4):  # heartbeats of OWNER
        assert lock.on_state(state(timestamp=NOW + beat), NOW + beat) is None
    action = lock.on_state(state("IMPOSTOR", timestamp=NOW + 4), NOW + 4)
    assert action is not None and action.kind == "lock" and "IMPOSTOR" in action.reason
    for beat in range(5, 8):  # heartbeats of IMPOSTOR, and a change between locked states
        assert lock.on_state(state("IMPOSTOR", timestamp=NOW + beat), NOW + beat) is None
    assert lock.on_state(state("NO_SIGNAL", timestamp=NOW + 8), NOW + 8) is None
    assert lock.on_state(state(timestamp=NOW + 9), NOW + 9) == Action("unlock", "OWNER")


def test_a_state_going_stale_locks_once_and_a_fresh_heartbeat_unlocks():
    lock, _ = owner_unlocked()
    assert lock.tick(NOW + STALE - 1) is None
    action = lock.tick(NOW + STALE + 1)
    assert action is not None and action.kind == "lock" and "stale" in action.reason, action
    assert lock.tick(NOW + STALE + 2) is None
    assert lock.on_state(state(timestamp=NOW + STALE + 3), NOW + STALE + 3) == Action("unlock", "OWNER")


def test_offline_and_a_lost_broker_lock_and_what_comes_back_unlocks():
    lock, _ = owner_unlocked()
    action = lock.on_status(b"offline", NOW + 1)
    assert action is not None and action.kind == "lock" and "offline" in action.reason
    assert lock.on_status(ONLINE, NOW + 2) == Action("unlock", "OWNER")

    action = lock.broker_lost("Connection refused", NOW + 3)
    assert action is not None and action.kind == "lock" and "broker unreachable" in action.reason
    # reconnected: what the broker held before counts for nothing until it hands it again
    assert lock.connected(NOW + 4) is None
    assert lock.on_status(ONLINE, NOW + 4) is None
    assert lock.on_state(state(timestamp=NOW + 4), NOW + 4) == Action("unlock", "OWNER")


def test_nothing_is_acted_on_before_the_retained_messages_or_the_settling_time():
    lock = LockState(STALE, start=NOW, settle_s=3.0)
    assert lock.connected(NOW) is None and lock.tick(NOW + 2.9) is None
    action = lock.tick(NOW + 3.1)  # nothing heard: locked
    assert action is not None and action.kind == "lock" and "no status" in action.reason

    unreachable = LockState(STALE, start=NOW, settle_s=3.0)
    action = unreachable.broker_lost("Connection refused", NOW + 0.1)  # no need to wait for it
    assert action is not None and action.kind == "lock"


def test_each_event_is_acted_on_once():
    lock, actions = owner_unlocked()
    # the owner takes it off and puts it back: lock, then unlock
    actions.append(lock.on_event(event("lock", "e1", seq=1), NOW + 1))
    actions.append(lock.on_state(state("NO_SIGNAL", timestamp=NOW + 1), NOW + 1))
    actions.append(lock.on_state(state(timestamp=NOW + 5), NOW + 5))
    actions.append(lock.on_event(event("unlock", "e2", seq=2), NOW + 5))
    # the broker delivers the lock event again (QoS 1 is at least once): nothing happens
    actions.append(lock.on_event(event("lock", "e1", seq=1), NOW + 6))
    assert [a.kind for a in actions if a] == ["unlock", "lock", "unlock"], actions
    assert lock.verdict(NOW + 6).locked is False
    # a lock event of its own locks, before any state says so
    action = lock.on_event(event("lock", "e3", seq=3), NOW + 7)
    assert action is not None and action.kind == "lock" and "lock event seq 3" in action.reason


def test_a_lock_event_without_an_id_still_locks():
    lock, _ = owner_unlocked()
    action = lock.on_event(event("lock", None), NOW + 1)
    assert action is not None and action.kind == "lock"
    assert lock.on_event(b"garbage", NOW + 2) is None  # not an event: the state decides


# -- the commands -------------------------------------------------------------------------------------


def test_a_command_is_split_without_a_shell_and_checked_before_it_runs():
    command = Command.parse("loginctl lock-session", "--on-lock")
    assert command is not None and command.argv == ("loginctl", "lock-session")
    assert Command.parse("", "--on-unlock") is None
    assert Command.parse("echo $HOME; x", "--on-lock", shell=True).argv == ("/bin/sh", "-c", "echo $HOME; x")
    with pytest.raises(WatchError, match=r"--on-lock .*cannot be split"):
        Command.parse("echo 'unbalanced", "--on-lock")
    with pytest.raises(WatchError, match=r"--on-unlock: 'no-such-program-here' is not an executable on PATH"):
        Command.parse("no-such-program-here --now", "--on-unlock")


def test_commands_run_without_a_shell_and_a_failure_or_a_hang_is_logged_not_raised(tmp_path, caplog):
    out = tmp_path / "out"
    literal = "$HOME; rm -rf x"  # a shell would expand and split it
    write = Command.parse(shlex.join([sys.executable, "-c", RECORD, str(out), literal]), "--on-lock")
    fails = Command.parse(
        shlex.join([sys.executable, "-c", "import sys; print('no session'); sys.exit(3)"]), "x"
    )
    hangs = Command.parse("sleep 30", "--on-lock")
    lock = Action("lock", "state IMPOSTOR")

    async def scenario() -> None:
        assert await CommandRunner(write, None, device="d", timeout_s=10).execute(lock) == 0
        assert await CommandRunner(fails, None, device="d", timeout_s=10).execute(lock) == 3
        started = time.monotonic()
        assert await CommandRunner(hangs, None, device="d", timeout_s=0.5).execute(lock) is None
        assert time.monotonic() - started < 5
        gone = Command(("/nonexistent/locker",), "/nonexistent/locker")
        assert await CommandRunner(gone, None, device="d", timeout_s=10).execute(lock) is None
        assert await CommandRunner(None, None, device="d", timeout_s=10).execute(lock) is None

    with caplog.at_level(logging.INFO, logger="neuroauth.daemon.watch"):
        asyncio.run(scenario())
    assert recorded(out) == [(literal, "state IMPOSTOR")]
    assert "failed with status 3: no session" in caplog.text
    assert "did not finish within 0.5 s; killed it" in caplog.text
    assert "cannot run the lock command '/nonexistent/locker'" in caplog.text


def test_commands_run_in_order_one_at_a_time_and_opposite_waiting_actions_cancel(tmp_path):
    out = tmp_path / "out"
    slow = shlex.join([sys.executable, "-c", f"import time; time.sleep(0.5); {RECORD}", str(out), "lock"])
    unlock = recorder(out, "unlock")

    def runner() -> CommandRunner:
        on_lock, on_unlock = Command.parse(slow, "--on-lock"), Command.parse(unlock, "--on-unlock")
        return CommandRunner(on_lock, on_unlock, device="d", timeout_s=10)

    async def scenario() -> None:
        async with runner() as commands:
            commands.submit(Action("lock", "first"))
            commands.submit(Action("unlock", "second"))  # waits for the lock to finish
            await wait_lines(out, 2, "both commands")
        assert [kind for kind, _ in recorded(out)] == ["lock", "unlock"]

        out.unlink()
        async with runner() as commands:
            commands.submit(Action("lock", "first"))
            commands.submit(Action("unlock", "blip"))
            commands.submit(Action("lock", "blip over"))  # cancels the waiting unlock: locked as left
            await asyncio.sleep(2.0)
        assert recorded(out) == [("lock", "first")]

        out.unlink()
        async with runner() as commands:
            commands.submit(Action("lock", "first"))
            commands.submit(Action("unlock", "second"))
        # leaving let the running command finish and dropped the waiting one
        assert recorded(out) == [("lock", "first")]

    asyncio.run(scenario())


# -- the command line ---------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, capsys) -> Iterator:
    """``cli(*argv)``: the status and stderr lines of ``neuroauth watch``, without this machine's config."""
    for name in list(os.environ):
        if name.upper().startswith("NEUROAUTH_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr("neuroauth.daemon.main.DEFAULT_CONFIG", Path("/nonexistent/neuroauthd.toml"))
    root = logging.getLogger()
    level = root.level

    def run(*argv: str) -> tuple[int, list[str]]:
        status = main(["watch", *argv])
        return status, capsys.readouterr().err.splitlines()

    yield run
    root.setLevel(level)  # the command sets the configuration's log level


def config(tmp_path: Path, mqtt: str = "") -> Path:
    path = tmp_path / "neuroauthd.toml"
    path.write_text(
        f"""\
[mqtt]
host = "127.0.0.1"
prefix = "test-{uuid.uuid4().hex[:8]}/neuroauth"
reconnect_min_s = 0.1
reconnect_max_s = 0.3
{mqtt}
[[headsets]]
device = "{DEVICE}"
user = "owner"
"""
    )
    return path


def test_no_configuration_is_one_line_saying_what_to_pass(cli):
    status, err = cli("--device", DEVICE)
    assert status == 2 and len(err) == 1, err
    assert "no configuration" in err[0] and "--config" in err[0], err


def test_a_device_the_configuration_lacks_is_named_with_those_it_has(cli, tmp_path):
    status, err = cli("--device", "desk", "--config", str(config(tmp_path)))
    assert status == 2 and len(err) == 1, err
    assert "--device 'desk' is not a headset" in err[0] and f"its devices: {DEVICE}" in err[0], err


def test_a_staleness_limit_within_one_heartbeat_is_refused(cli, tmp_path):
    status, err = cli("--device", DEVICE, "--config", str(config(tmp_path)), "--stale-after", "20")
    assert status == 2 and len(err) == 1, err
    assert "--stale-after 20 is not longer than mqtt.state_heartbeat_s (30 s)" in err[0], err


@pytest.mark.slow
def test_a_broker_refusing_the_login_locks_and_ends_with_one_line(cli, mosquitto, tmp_path, monkeypatch):
    broker = mosquitto(users={"screenlocker": "the-right-one"})
    path = config(tmp_path, f'port = {broker.port}\nusername = "screenlocker"\n')
    monkeypatch.setenv("NEUROAUTH_MQTT__PASSWORD", "a-wrong-one")
    actions = tmp_path / "actions"
    started = time.monotonic()
    status, err = cli("--device", DEVICE, "--config", str(path), "--on-lock", recorder(actions, "lock"))
    assert status == 2 and len(err) == 1, err
    assert f"the MQTT broker 127.0.0.1:{broker.port} refused user 'screenlocker'" in err[0], err
    assert "NEUROAUTH_MQTT__PASSWORD_FILE" in err[0], err
    assert time.monotonic() - started < TIMEOUT
    ((kind, reason),) = recorded(actions)  # locked before it gave up
    assert kind == "lock" and "refused" in reason, reason


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_user_unit_runs_the_watcher_for_a_configured_headset_with_its_own_account(tmp_path, monkeypatch):
    text = (DEPLOY / "neuroauth-watch.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(text)
    service = unit["Service"]
    assert service["Restart"] == "always" and unit["Install"]["WantedBy"] == "default.target"
    program, *argv = shlex.split(service["ExecStart"])
    assert program.endswith("/neuroauth") and argv[0] == "watch", argv
    args = build_parser().parse_args(argv)

    # its environment over the example configuration, as systemd gives it (%h: the user's home)
    env = dict(line.split("=", 1) for line in re.findall(r"^Environment=(.+)$", text, re.MULTILINE))
    for name in list(os.environ):
        if name.upper().startswith("NEUROAUTH_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".config/neuroauth").mkdir(parents=True)
    (home / ".config/neuroauth/mqtt.password").write_text("reader-password\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("%h", str(home)))
    monkeypatch.setenv("NEUROAUTH_CONFIG", str(DEPLOY / "neuroauthd.toml"))  # the file it names, installed
    settings, _ = load_watch_settings(args.config)
    assert args.device in [h.device for h in settings.headsets]
    assert settings.mqtt.username == "screenlocker" != "neuroauthd"  # never the daemon's account
    assert settings.secret_password() == "reader-password"
    assert env["NEUROAUTH_CONFIG"] == "/etc/neuroauth/neuroauthd.toml"


# -- on a real broker -----------------------------------------------------------------------------------


async def wait_lines(path: Path, count: int, what: str, timeout: float = TIMEOUT) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while len(lines := recorded(path)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s; the commands ran: {lines}")
        await asyncio.sleep(0.05)
    return lines


@pytest.mark.slow
def test_the_watcher_on_a_broker_stale_states_and_a_lost_broker_lock(mosquitto, tmp_path):
    broker = mosquitto()
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        prefix=f"test-{uuid.uuid4().hex[:8]}/neuroauth",
        reconnect_min_s=0.1,
        reconnect_max_s=0.3,
        keepalive=5,
    )
    topics = Topics(settings.prefix)
    actions = tmp_path / "actions"
    options = WatchOptions(
        device=DEVICE,
        on_lock=Command.parse(recorder(actions, "lock"), "--on-lock"),
        on_unlock=Command.parse(recorder(actions, "unlock"), "--on-unlock"),
        stale_after_s=2.0,
    )

    async def publish_owner() -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"test-{uuid.uuid4().hex[:8]}") as c:
            await c.publish(topics.status, b"online", qos=1, retain=True)
            await c.publish(topics.state(DEVICE), state(timestamp=time.time()), qos=1, retain=True)

    async def scenario() -> None:
        await publish_owner()
        stop = asyncio.Event()
        watcher = Watch(settings, options)
        task = asyncio.create_task(watcher.run(stop))
        try:
            assert await wait_lines(actions, 1, "unlock") == [("unlock", "OWNER")]
            # no heartbeat: stale after 2 s
            (_, (kind, reason)) = await wait_lines(actions, 2, "a lock once the state is stale", timeout=6)
            assert kind == "lock" and "stale" in reason, reason
            await publish_owner()
            assert (await wait_lines(actions, 3, "unlock on a fresh state"))[-1] == ("unlock", "OWNER")

            await asyncio.to_thread(broker.stop)
            (kind, reason) = (await wait_lines(actions, 4, "a lock once the broker is gone", timeout=5))[-1]
            assert kind == "lock" and "broker unreachable" in reason, reason
            await asyncio.sleep(1.0)  # reconnection attempts fail: still locked, nothing run again
            assert len(recorded(actions)) == 4

            await asyncio.to_thread(broker.start)  # a broker without the retained messages
            await asyncio.sleep(1.5)
            assert len(recorded(actions)) == 4, "unlocked without a status and a state"
            await publish_owner()
            assert (await wait_lines(actions, 5, "unlock once told again"))[-1] == ("unlock", "OWNER")
        finally:
            stop.set()
            await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(scenario())
    log = broker.log()
    assert "neuroauth-watch-" in log, log[-2000:]
    assert "Received PUBLISH from neuroauth-watch-" not in log  # a consumer never writes


# -- against the daemon ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_watcher_follows_neuroauthd_unlocks_for_the_owner_and_locks_without_the_broker(
    mosquitto, replay, neuroauthd, templates, tmp_path
):
    broker = mosquitto()
    source_id = replay.unique("src")
    setup = write_config(tmp_path, broker, templates, {DEVICE: source_id})
    stream = replay(OWNER_STREAM, source_id=source_id, speed=SPEED, loop=True)
    beat = {"NEUROAUTH_MQTT__STATE_HEARTBEAT_S": "1"}  # the daemon's and the watcher's configuration
    daemon = neuroauthd(setup.config, **beat)
    actions = tmp_path / "actions"
    watch_log = tmp_path / "watch.log"
    argv = [sys.executable, "-m", "neuroauth.cli", "watch", "--device", DEVICE, "--config", str(setup.config)]
    argv += ["--on-lock", recorder(actions, "lock"), "--on-unlock", recorder(actions, "unlock")]
    argv += ["--stale-after", "10"]  # heartbeats every second, some late on a busy machine
    with watch_log.open("ab") as out:
        watcher = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=daemon_env(**beat))

    def context() -> str:
        code = watcher.poll()
        tail = "\n".join(watch_log.read_text(errors="replace").splitlines()[-40:])
        return (
            f"commands run: {recorded(actions)}\n--- neuroauth watch "
            f"({'running' if code is None else f'exited {code}'}) ---\n{tail}\n{daemon.context()}"
        )

    async def last_is(kind: str, what: str, after: int, timeout: float = 90.0) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = recorded(actions)
            if len(lines) > after and lines[-1][0] == kind:
                return lines[-1]
            if time.monotonic() > deadline or watcher.poll() is not None:
                raise AssertionError(f"no {what}\n{context()}")
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        # the owner's stream: UNKNOWN (locked) at first, then OWNER unlocks
        await last_is("unlock", "unlock for the owner", after=0, timeout=120.0)
        async with subscriber(broker, setup, context) as live:
            # heartbeats of OWNER do not run anything again
            mark, ran = live.mark(), len(recorded(actions))
            beats = await live.wait_many(state_is(setup, "OWNER"), 3, "3 heartbeats of OWNER", after=mark)
            assert len(beats) == 3 and len(recorded(actions)) == ran, context()

        # the broker goes away: locked at once, and again unlocked once both are back. A broker
        # stopping hands out the daemon's will first, so the reason is either.
        ran = len(recorded(actions))
        await asyncio.to_thread(broker.stop)
        _, reason = await last_is("lock", "lock without the broker", after=ran, timeout=10.0)
        assert reason.startswith("broker unreachable") or reason == "neuroauthd is offline", context()
        ran = len(recorded(actions))
        await asyncio.to_thread(broker.start)
        await last_is("unlock", "unlock once the broker is back", after=ran, timeout=30.0)

        # the headset's stream is lost: NO_SIGNAL locks, once, whatever the heartbeats
        ran = len(recorded(actions))
        await asyncio.to_thread(stream.kill)
        _, reason = await last_is("lock", "lock on NO_SIGNAL", after=ran, timeout=15.0)
        assert "NO_SIGNAL" in reason, context()
        ran = len(recorded(actions))
        await asyncio.sleep(3.5)  # three heartbeats of NO_SIGNAL
        assert len(recorded(actions)) == ran, context()

    try:
        asyncio.run(scenario())
        kinds = [kind for kind, _ in recorded(actions)]
        assert all(a != b for a, b in itertools.pairwise(kinds)), context()  # once per change
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(TIMEOUT) == 0, context()
        assert "Traceback" not in watch_log.read_text(), context()
        assert daemon.running, context()  # the watcher's own client id: the daemon was never thrown off
        assert "already connected" not in broker.log(), broker.log()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            watcher.kill()
        watcher.wait(15)
