"""``neuroauth demo``: the whole system, live, on this machine, with no headset.

1. LSL is configured loopback-only, here and in every process started.
2. A mosquitto broker is started on a free 127.0.0.1 port when mosquitto is
   installed; otherwise the demo says how to get it and shows the daemon's own
   log of its decisions instead of MQTT messages.
3. A bundled subject is enrolled in two states, as ``neuroauth enroll`` guides a
   wearer through phases: 60 s at rest (their first recording) and the first 20 s
   of mental arithmetic (their second).
4. A recording is made of the rest of that subject's arithmetic recording (from
   24 s on, never seen at enrollment) followed by another bundled subject's: the
   owner wears the headset, then someone else puts it on. It is replayed as a
   live LSL stream in real time.
5. ``neuroauthd`` runs against it; its state changes and lock/unlock events are
   printed as they arrive, and at the end the time to unlock (from the start of
   the stream) and the time to lock (from the takeover).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import local_broker
from .paths import BUNDLED_DATA

OWNER, IMPOSTOR = "Subject03", "Subject06"
TASK_ENROLL_SECONDS = 20.0  # the arithmetic phase of the enrollment; the replay starts one window later
REPLAY_FROM_SECONDS = 24.0
DEVICE = "demo-headset"
PREFIX = "neuroauth-demo"


def takeover_recording(out: Path, owner: str, impostor: str, impostor_seconds: float) -> tuple[float, float]:
    """The owner's second recording from REPLAY_FROM_SECONDS on, then the impostor's; returns (takeover,
    total) seconds."""
    from .recordings import read_raw

    first = read_raw(BUNDLED_DATA / f"{owner}_2.edf")
    second = read_raw(BUNDLED_DATA / f"{impostor}_2.edf")
    if first.ch_names != second.ch_names or first.info["sfreq"] != second.info["sfreq"]:
        raise RuntimeError("the two demo recordings differ in channels or rate")
    import mne

    sfreq = first.info["sfreq"]
    owner_part = first.get_data(start=round(REPLAY_FROM_SECONDS * sfreq))
    data = np.concatenate([owner_part, second.get_data(stop=round(impostor_seconds * sfreq))], axis=1).astype(
        np.float64
    )
    info = mne.create_info(first.ch_names, sfreq, ch_types="eeg")
    mne.io.RawArray(data, info, verbose="error").save(out, overwrite=True, verbose="error")
    return owner_part.shape[1] / sfreq, data.shape[1] / sfreq


def enroll_owner(templates: Path, clock: Clock) -> None:
    """Enroll OWNER from the bundled recordings, one phase per state, as `neuroauth enroll` would."""
    from .enroll.decision import DecisionTargets
    from .enroll.enrollment import enroll_owner, phases_named
    from .enroll.sources import file_source
    from .enroll.store import TemplateStore
    from .models.checkpoint import load_checkpoint
    from .paths import SHIPPED_CHECKPOINT

    rest, arithmetic = phases_named(["rest", "arithmetic"], [60.0, TASK_ENROLL_SECONDS])
    recordings = {"rest": BUNDLED_DATA / f"{OWNER}_1.edf", "arithmetic": BUNDLED_DATA / f"{OWNER}_2.edf"}
    phases = [(p, lambda p=p: file_source(recordings[p.state], p.seconds)) for p in (rest, arithmetic)]

    def on_collected(phase, collected) -> None:
        _say(clock, f"  {phase.state}: {collected.summary()}")

    _say(
        clock,
        f"enrolling {OWNER}: 60 s at rest ({recordings['rest'].name}), the first "
        f"{TASK_ENROLL_SECONDS:.0f} s of mental arithmetic ({recordings['arithmetic'].name})",
    )
    template, path = enroll_owner(
        load_checkpoint(SHIPPED_CHECKPOINT),
        phases,
        TemplateStore(templates),
        user=OWNER,
        targets=DecisionTargets(),
        on_collected=on_collected,
    )
    chosen = template.calibration["decision"]["chosen"]
    _say(
        clock,
        f"template written to {path}: decision tuned to {chosen['false_lockouts_per_hour']:.1f} "
        f"false lock-outs per hour, {chosen['median_time_to_lock_s']} s to lock (median)",
    )


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start


def _say(clock: Clock, text: str) -> None:
    print(f"[{clock():6.1f} s] {text}", flush=True)


async def _watch_mqtt(port: int, clock: Clock, seen: list, stop: asyncio.Event) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier="neuroauth-demo-viewer") as client:
        await client.subscribe(f"{PREFIX}/#", qos=1)
        last_state = None
        async for message in client.messages:
            topic, text = str(message.topic), message.payload.decode()
            if topic.endswith("/score"):
                continue
            if topic.endswith("/state"):
                state = json.loads(text) if text else {}
                if state.get("state") != last_state:
                    last_state = state.get("state")
                    extra = f" ({state['reason']})" if state.get("reason") else ""
                    _say(clock, f"MQTT {topic}: {last_state}{extra}")
                    seen.append((clock(), "state", last_state))
            elif topic.endswith("/event"):
                event = json.loads(text)
                _say(clock, f"MQTT {topic}: {event['kind']} ({event['previous']} -> {event['state']})")
                seen.append((clock(), "event", event["kind"]))
            else:
                _say(clock, f"MQTT {topic}: {text}")
            if stop.is_set():
                return


def _pump_log(stream, clock: Clock, seen: list, show: bool) -> None:
    """The daemon's log: decisions always recorded; shown when there is no MQTT to show them."""
    for raw in stream:
        line = raw.rstrip()
        if "neuroauth.enroll.decision: decision" in line:
            state = line.split("-> ")[1].split()[0]
            if show:
                _say(clock, f"neuroauthd: {line.split('decision: ')[1]}")
                seen.append((clock(), "state", state))
        elif show and (" ERROR " in line or " WARNING " in line or "ready:" in line):
            _say(clock, f"neuroauthd: {line.split(': ', 1)[-1]}")


def run(impostor_seconds: float = 40.0) -> int:
    from .daemon.lslconfig import configure_lsl, loopback_env

    configure_lsl(loopback_only=True)
    env = loopback_env(os.environ)
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="neuroauth-demo-") as tmp:
        work = Path(tmp)
        processes: list[subprocess.Popen] = []
        broker = None
        try:
            binary = local_broker.find()
            if binary is None:
                print(
                    "mosquitto is not installed, so the demo shows the daemon's own log instead of MQTT.\n"
                    "  `make demo` installs it; or Debian/Ubuntu: sudo apt-get install mosquitto",
                    flush=True,
                )
                port = local_broker.free_port()  # nobody listens: the daemon keeps retrying
            else:
                broker = local_broker.LocalBroker(binary, work)
                broker.start()
                port = broker.port
                _say(clock, f"mosquitto listening on 127.0.0.1:{port}")

            templates = work / "templates"
            enroll_owner(templates, clock)
            takeover, total = takeover_recording(work / "takeover_raw.fif", OWNER, IMPOSTOR, impostor_seconds)

            config = work / "neuroauthd.toml"
            config.write_text(
                f'log_level = "INFO"\n[templates]\ndirectory = "{templates}"\n'
                f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nprefix = "{PREFIX}"\n'
                "reconnect_max_s = 5.0\n"
                f'[[headsets]]\ndevice = "{DEVICE}"\nuser = "{OWNER}"\n'
                f'stream = {{ source_id = "neuroauth-demo-{os.getpid()}" }}\n'
            )
            seen: list = []
            daemon = subprocess.Popen(
                [sys.executable, "-m", "neuroauth.daemon.main", "--config", str(config)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            processes.append(daemon)
            pump = threading.Thread(
                target=_pump_log, args=(daemon.stderr, clock, seen, broker is None), daemon=True
            )
            pump.start()
            _say(clock, "neuroauthd started")

            async def watch_and_replay() -> float:
                stop = asyncio.Event()
                viewer = None
                if broker is not None:
                    viewer = asyncio.create_task(_watch_mqtt(port, clock, seen, stop))
                await asyncio.sleep(1.0)
                replay = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "neuroauth.daemon.replay",
                    str(work / "takeover_raw.fif"),
                    "--name",
                    "demo-eeg",
                    "--source-id",
                    f"neuroauth-demo-{os.getpid()}",
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                )
                await replay.stdout.readline()
                started = clock()
                _say(clock, f"replay started: {OWNER} wears the headset, counting ({takeover:.0f} s)")
                await asyncio.sleep(takeover)
                _say(clock, f"--- {IMPOSTOR} puts the headset on ---")
                # the replay ends with the recording; then the stream is gone and the headset NO_SIGNAL
                try:
                    await asyncio.wait_for(replay.wait(), timeout=total - takeover + 15.0)
                except TimeoutError:
                    replay.send_signal(signal.SIGTERM)
                    await replay.wait()
                await asyncio.sleep(4.0)
                stop.set()
                if viewer is not None:
                    await asyncio.sleep(0.5)
                    viewer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await viewer
                return started

            started = asyncio.run(watch_and_replay())
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=20)
            _say(clock, f"neuroauthd stopped (exit status {code})")
            return _summary(seen, started, started + takeover)
        finally:
            if broker is not None:
                broker.stop()
            for p in processes:
                if p.poll() is None:
                    p.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=10)


def _summary(seen: list, started: float, takeover: float) -> int:
    """Time to unlock (from the stream's start) and to lock (from the takeover), from the states seen."""
    states = [(t, value) for t, kind, value in seen if kind == "state"]
    unlock = next((t for t, state in states if state == "OWNER" and started <= t < takeover), None)
    before = [state for t, state in states if t < takeover]
    lock = next((t for t, state in states if t >= takeover and state != "OWNER"), None)
    print()
    if unlock is None:
        print("time to unlock: the owner was not recognised while wearing the headset")
    else:
        print(f"time to unlock: {unlock - started:.1f} s after the owner's stream started")
    if not before or before[-1] != "OWNER":
        print("time to lock:   the headset was already locked when the impostor put it on")
    elif lock is None:
        print("time to lock:   the impostor was never locked out")
    else:
        print(f"time to lock:   {lock - takeover:.1f} s after the impostor put the headset on")
    return 0 if unlock is not None and lock is not None else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="live demo: enroll, replay owner then impostor, run neuroauthd over MQTT"
    )
    p.add_argument(
        "--impostor-seconds", type=float, default=40.0, help="seconds of the impostor's EEG (default 40)"
    )
    p.set_defaults(run=lambda args: run(args.impostor_seconds))
