"""Soak: neuroauthd serving several headsets for a simulated hour, faster than real time.

    python bench/soak.py [--headsets 4] [--speed 8] [--hours 1] [--json OUT]

Real parts throughout: a mosquitto broker on 127.0.0.1, one LSL replay per headset
(bundled recordings looped at ``--speed`` times real time), the daemon as a
subprocess, and a systemd notify socket from which its STATUS= lines are read
every 10 s: resident memory, asyncio tasks, threads, samples waiting in the
engine, MQTT messages queued and dropped, windows processed. The figures show
whether anything grows with time; the first minute (start-up, allocator warm-up)
is reported but left out of the growth figures.

LSL is configured loopback-only before anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from neuroauth.daemon.lslconfig import configure_lsl, loopback_env

from neuroauth import local_broker
from neuroauth.paths import BUNDLED_DATA

SUBJECTS = ("Subject00", "Subject03", "Subject06", "Subject08", "Subject09")
WARMUP_S = 60.0


def parse_status(text: str) -> dict[str, float] | None:
    """The ``key=value`` figures of a STATUS line, or None for other lines."""
    if not text.startswith("STATUS=") or "rss_mb=" not in text:
        return None
    figures = {}
    for part in text.split(";")[-1].split():
        key, _, value = part.partition("=")
        figures[key] = float(value)
    return figures


def growth(samples: list[tuple[float, dict]], key: str) -> dict:
    """First, last and max of ``key`` after the warm-up, its least-squares slope per hour of wall
    time, and its range (max - min) over the second half of the run: what a leak would widen."""
    t = np.array([s[0] for s in samples])
    v = np.array([s[1][key] for s in samples])
    slope = float(np.polyfit(t / 3600, v, 1)[0]) if len(t) > 2 else float("nan")
    late = v[t >= (t[0] + t[-1]) / 2]
    return {
        "first": float(v[0]),
        "last": float(v[-1]),
        "max": float(v.max()),
        "slope_per_hour": slope,
        "second_half_range": float(late.max() - late.min()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headsets", type=int, default=4)
    parser.add_argument("--speed", type=float, default=8.0, help="replay speed (x real time)")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per headset")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 1 <= args.headsets <= len(SUBJECTS):
        parser.error(f"--headsets must be 1..{len(SUBJECTS)}")

    configure_lsl(loopback_only=True)
    env = loopback_env(os.environ)
    wall = args.hours * 3600 / args.speed
    with tempfile.TemporaryDirectory(prefix="neuroauth-soak-") as tmp:
        work = Path(tmp)
        processes: list[subprocess.Popen] = []
        try:
            binary = local_broker.find()
            if binary is None:
                print("mosquitto is not installed (Debian: apt-get install mosquitto)", file=sys.stderr)
                return 2
            broker = local_broker.LocalBroker(binary, work)
            broker.start()
            processes.append(broker.process)
            templates = work / "templates"
            lines = [
                'log_level = "WARNING"',
                "[model]",
                "check_rate = false  # the replays run faster than real time",
                f'[templates]\ndirectory = "{templates}"',
                f'[mqtt]\nport = {broker.port}\nprefix = "soak"',
            ]
            for i, subject in enumerate(SUBJECTS[: args.headsets]):
                enroll = [sys.executable, "-m", "neuroauth.cli", "enroll", "--user", subject]
                enroll += [
                    "--from-file",
                    str(BUNDLED_DATA / f"{subject}_1.edf"),
                    "--templates-dir",
                    str(templates),
                ]
                subprocess.run(enroll, env=env, check=True, capture_output=True)
                source = f"soak-{os.getpid()}-{i}"
                replay = [
                    sys.executable,
                    "-m",
                    "neuroauth.daemon.replay",
                    str(BUNDLED_DATA / f"{subject}_2.edf"),
                ]
                replay += ["--source-id", source, "--speed", str(args.speed), "--loop"]
                processes.append(subprocess.Popen(replay, env=env, stdout=subprocess.DEVNULL))
                headset = f'device = "h{i}"\nuser = "{subject}"\nstream = {{ source_id = "{source}" }}'
                lines.append(f"[[headsets]]\n{headset}")
            config = work / "neuroauthd.toml"
            config.write_text("\n".join(lines) + "\n")

            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(work / "notify"))
            notify.settimeout(1.0)
            daemon_env = env | {"NOTIFY_SOCKET": str(work / "notify"), "WATCHDOG_USEC": "10000000"}
            daemon = subprocess.Popen(
                [sys.executable, "-m", "neuroauth.daemon.main", "--config", str(config)],
                env=daemon_env,
                stderr=(work / "daemon.log").open("wb"),
            )
            processes.append(daemon)
            started = time.monotonic()
            samples: list[tuple[float, dict]] = []
            watchdogs = 0
            print(f"soaking {args.headsets} headsets at {args.speed:g}x for {wall:.0f} s", file=sys.stderr)
            while time.monotonic() - started < wall:
                if daemon.poll() is not None:
                    print((work / "daemon.log").read_text(), file=sys.stderr)
                    raise RuntimeError(f"neuroauthd exited with {daemon.returncode} during the soak")
                try:
                    message = notify.recv(4096).decode()
                except TimeoutError:
                    continue
                for line in message.splitlines():
                    watchdogs += line == "WATCHDOG=1"
                    figures = parse_status(line)
                    if figures is not None:
                        samples.append((time.monotonic() - started, figures))
                        print(f"{samples[-1][0]:7.0f} s  {line[7:].split(';')[-1].strip()}", file=sys.stderr)
            daemon.send_signal(signal.SIGTERM)
            exit_code = daemon.wait(timeout=30)
        finally:
            for p in processes:
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=10)

    steady = [s for s in samples if s[0] >= WARMUP_S]
    keys = ("rss_mb", "tasks", "threads", "pending_samples", "stream_state_kb")
    keys += ("mqtt_events_queued", "mqtt_scores_queued", "mqtt_dropped")
    result = {
        "headsets": args.headsets,
        "speed": args.speed,
        "simulated_hours_per_headset": args.hours,
        "wall_seconds": round(wall, 1),
        "status_samples": len(samples),
        "watchdog_pings": watchdogs,
        "windows_processed": samples[-1][1]["windows"] if samples else 0,
        "mqtt_dropped": samples[-1][1]["mqtt_dropped"] if samples else None,
        "exit_code_on_sigterm": exit_code,
        "after_warmup": {k: growth(steady, k) for k in keys} if len(steady) > 2 else None,
        "at_start": samples[0][1] if samples else None,
        "rss_mb_every_10_s": [s[1]["rss_mb"] for s in samples],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
