"""``neuroauth bench --daemon``: the whole daemon as an operator runs it, from one headset to many.

    python bench/daemon_scale.py --headsets 1,16,64 --duration 60 --json bench/daemon_scale.json \\
        [--plot bench/daemon_scale.png] [--montage default|10-20] [--work DIR]

For each headset count N, real parts throughout, all on 127.0.0.1:

- one process (:mod:`neuroauth.bench_outlets`) holding N LSL outlets, each a bundled
  recording replayed in real time with the model's channels at 256 Hz, a chunk every 20 ms,
  the last sample of each chunk stamped with the LSL clock when it is pushed;
- a mosquitto broker on a free port (:mod:`neuroauth.local_broker`);
- one ``neuroauthd`` serving all N from a generated configuration: each headset pinned to
  its outlet by ``source_id`` and ``host``, all owned by one user (Subject03, enrolled from
  the bundled recordings as ``neuroauth demo`` does, once per checkpoint: the template is
  kept in ``--work`` under the checkpoint's identity), ``publish_scores`` on, and a systemd
  notify socket from which its ``READY=1`` and ``STATUS=`` lines are read;
- a subscriber on ``<prefix>/+/score`` that notes when each score arrives.

**Latency** of a window is the wall time its score arrives at the subscriber minus the
score's ``timestamp``. The daemon sets that to the wall time of the window's timestamp
(``wall_time(w.timestamp)`` in ``daemon/service.py``), which the engine sets to the LSL time
of the window's last sample at the model's rate, placed among the input samples by its
position (``timestamp_of(end - 1)`` in ``models/streaming.py``): with a causal resampler that
is at most one input sample (3.9 ms at 256 Hz) after the last input sample the window
holds. As the outlets stamp each sample when it leaves, latency is the time from the
window's last sample leaving the headset to its score reaching a consumer: LSL, the
daemon's pull and engine intervals, the engine, scoring, MQTT.

The run for N: the outlets start, then the daemon; the **warm-up** lasts until every
headset has been scored once (at most ``--warmup-timeout`` seconds); then ``--duration``
seconds are measured, and scores are awaited ``--max-p99`` seconds more for the windows
that ended in them. Figures of the windows whose timestamp falls in the measured interval:

- ``latency_s``: p50, p99, max, mean;
- ``windows``: ``nominal`` (N x duration / hop), ``delivered`` (scores received),
  ``missing`` (from the spacing of each headset's windows: a gap of k hops is k - 1 windows
  missing; before the first window and after the last, each whole hop beyond 5 % of one),
  ``expected`` (delivered + missing), ``late`` (latency above one hop: the next window is due
  before this one's score is known), ``refused`` (published without a score: the quality
  gate refused the window, or it could not be scored);
- ``headsets_scored``: the headsets with at least one score over the whole run;
- for the daemon: CPU in cores from ``/proc/<pid>/stat`` (utime + stime over the interval,
  over its wall time), per headset, resident memory (``VmRSS``) and threads from
  ``/proc/<pid>/status`` at the end and at most, its last ``STATUS=`` figures, its stream
  restarts (from its log), and its exit status on SIGTERM; CPU of the outlet process
  (the load generator's share of the cores) and of this process (the subscriber).

The sweep stops at the first N that breaks: fewer headsets scored than served, or a p99
latency above ``--max-p99``. Every process started (broker, outlets, daemon) is stopped
on the way out, on Ctrl-C and on SIGTERM too. Run it on a quiet machine: the load
generator and the daemon share its cores, and other work shows in every figure.

LSL is configured loopback-only in this process and in every process it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import bench_outlets, local_broker
from .cli_options import positive
from .config import ModelSettings
from .errors import NeuroAuthError
from .paths import ASSETS, BUNDLED_DATA, SHIPPED_CHECKPOINT

#: The shipped checkpoint of each montage ``--montage`` names.
MONTAGE_CHECKPOINTS = {"default": SHIPPED_CHECKPOINT, "10-20": ASSETS / "checkpoints" / "neuroauth-19ch.pt"}
#: The one owner of every headset, enrolled as the demo enrolls: rest, then mental arithmetic.
OWNER = "Subject03"
ENROLLMENT = (
    ("rest", BUNDLED_DATA / f"{OWNER}_1.edf", 60.0),
    ("arithmetic", BUNDLED_DATA / f"{OWNER}_2.edf", 20.0),
)
DEVICE = "cpu"  # load_checkpoint maps the weights to the CPU, and the daemon logs no device of its own
STARTUP_TIMEOUT_S = 60.0  # outlets up; the daemon's clean stop
MISSING_SLACK = 0.05  # of a hop: window timestamps jitter by a few ms around their grid
PROC_SAMPLE_S = 1.0
#: Seconds between two windows of a headset: the daemon's default, written into its configuration.
HOP_SECONDS: float = ModelSettings.model_fields["hop_seconds"].default


class BenchError(NeuroAuthError):
    """A part of the benchmark did not come up, or stopped while it ran; the message says which and why."""


def default_work_dir() -> Path:
    """``$XDG_CACHE_HOME/neuroauth/bench-daemon``, else ``~/.cache/neuroauth/bench-daemon``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "neuroauth" / "bench-daemon"


# -- figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Seconds from a window's last sample to its score's arrival."""

    p50: float
    p99: float
    max: float
    mean: float


@dataclass(frozen=True)
class Windows:
    """Counts of the windows that ended in the measured interval, every headset together."""

    nominal: int
    expected: int
    delivered: int
    missing: int
    late: int
    refused: int


@dataclass(frozen=True)
class ProcessFigures:
    """CPU over the measured interval; memory and threads at its end, and at most over it."""

    cpu_cores: float
    rss_mb: float
    rss_mb_max: float
    threads: int
    threads_max: int


@dataclass
class RunResult:
    """One headset count's figures."""

    headsets: int
    headsets_scored: int
    ready_s: float | None  # daemon start to READY=1
    warmup_s: float | None  # daemon start to every headset scored once; None: not within the timeout
    duration_s: float
    latency_s: Latency | None
    windows: Windows
    daemon: ProcessFigures
    daemon_cpu_cores_per_headset: float
    outlets: ProcessFigures
    subscriber: ProcessFigures
    daemon_status: dict[str, float] | None  # the last STATUS= figures of the measured interval
    stream_restarts: int  # "stream ... restarts" lines of the daemon's log over the whole run
    daemon_exit_status: int | None
    breaks: str | None  # why this count broke the sweep, or None


@dataclass(frozen=True)
class Score:
    """One message on ``<prefix>/<device>/score``."""

    device: str
    received: float  # time.time() on arrival
    window: float  # the payload's timestamp: wall time of the window's last sample
    refused: bool  # published without a score: the window was judged no signal


def missing_windows(times: Sequence[float], start: float, end: float, hop: float) -> int:
    """Windows of one stream missing in ``[start, end)``, from the sorted times of those seen there.

    Windows come every ``hop`` seconds: a gap of k hops between two windows is k - 1 missing;
    before the first window and after the last, every whole hop beyond ``MISSING_SLACK`` of
    one is a missing window. With no window, all of them are missing.
    """
    if not times:
        return round((end - start) / hop)
    edges = (times[0] - start, end - times[-1])
    missing = sum(max(0, math.floor(d / hop - MISSING_SLACK)) for d in edges)
    return missing + sum(max(0, round(gap / hop) - 1) for gap in np.diff(times))


def window_figures(
    scores: Sequence[Score], devices: Sequence[str], start: float, end: float, hop: float
) -> tuple[Latency | None, Windows]:
    """Latency and window counts of the windows whose timestamp lies in ``[start, end)``."""
    inside = [s for s in scores if start <= s.window < end]
    latency = np.array([s.received - s.window for s in inside])
    missing = 0
    for device in devices:
        times = sorted(s.window for s in inside if s.device == device)
        missing += missing_windows(times, start, end, hop)
    windows = Windows(
        nominal=round(len(devices) * (end - start) / hop),
        expected=len(inside) + missing,
        delivered=len(inside),
        missing=missing,
        late=int((latency > hop).sum()),
        refused=sum(s.refused for s in inside),
    )
    if not len(latency):
        return None, windows
    p50, p99 = (round(float(x), 4) for x in np.percentile(latency, [50, 99]))
    return Latency(p50, p99, round(float(latency.max()), 4), round(float(latency.mean()), 4)), windows


# -- /proc -----------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``/proc/<pid>/stat`` utime + stime)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on; the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15


def memory_and_threads(pid: int) -> tuple[float, int]:
    """Resident memory in MiB (``VmRSS``) and thread count of ``pid`` (``/proc/<pid>/status``)."""
    rss_kb = threads = None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    if rss_kb is None or threads is None:
        raise BenchError(f"/proc/{pid}/status lacks VmRSS or Threads; this benchmark needs Linux")
    return rss_kb / 1024, threads


class ProcessWatch:
    """CPU of a process over an interval, and its memory and threads sampled along it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.cpu_at_start = cpu_seconds(pid)
        self.rss: list[float] = []
        self.threads: list[int] = []

    def sample(self) -> None:
        rss, threads = memory_and_threads(self.pid)
        self.rss.append(rss)
        self.threads.append(threads)

    def figures(self) -> ProcessFigures:
        cores = (cpu_seconds(self.pid) - self.cpu_at_start) / (time.monotonic() - self.started)
        self.sample()
        return ProcessFigures(
            round(cores, 3),
            round(self.rss[-1], 1),
            round(max(self.rss), 1),
            self.threads[-1],
            max(self.threads),
        )


# -- the parts -------------------------------------------------------------------------------------


def enrolled_templates(checkpoint: Path, work: Path, progress: Callable[[str], None]) -> tuple[Path, dict]:
    """The templates directory holding OWNER's template for ``checkpoint`` (enrolled on first use,
    kept in ``work`` under the checkpoint's identity), and the checkpoint's description."""
    from .enroll.decision import DecisionTargets
    from .enroll.enrollment import enroll_owner, phases_named
    from .enroll.sources import file_source
    from .enroll.store import TemplateStore
    from .models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    identity = model.identity()
    described = {"file": checkpoint.name, "identity": identity, "channels": list(model.montage)}
    home = work / "templates" / identity
    directory = home / "templates"
    store = TemplateStore(directory, key_file=home / "template.key")
    try:
        store.load(OWNER, expected_identity=identity)
        progress(f"template of {OWNER} for checkpoint {identity}: {directory} (kept from an earlier run)")
        return directory, described
    except NeuroAuthError as exc:
        if store.path(OWNER).exists():
            progress(f"enrolling {OWNER} again: {exc}")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    states = [state for state, _, _ in ENROLLMENT]
    phases = phases_named(states, [seconds for _, _, seconds in ENROLLMENT])
    files = {state: path for state, path, _ in ENROLLMENT}
    opened = [(p, lambda p=p: file_source(files[p.state], p.seconds)) for p in phases]
    progress(f"enrolling {OWNER} with {checkpoint.name} (once per checkpoint) ...")
    _, path = enroll_owner(model, opened, store, user=OWNER, targets=DecisionTargets(), replace=True)
    progress(f"template written to {path}")
    return directory, described


def child_env() -> dict[str, str]:
    """This environment for a child: loopback-only LSL; no NEUROAUTH_* or systemd variables, so
    that the generated configuration is all the daemon reads."""
    from .daemon.lslconfig import loopback_env

    drop = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROAUTH_") and k not in drop}
    return loopback_env(env)


def stop_process(process: subprocess.Popen, timeout: float = STARTUP_TIMEOUT_S) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


def start_outlets(count: int, source_prefix: str, channels: Sequence[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "neuroauth.bench_outlets", "--count", str(count)]
    command += ["--source-prefix", source_prefix, "--channels", ",".join(channels)]
    with log.open("wb") as stderr:
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,  # see run_count: stopped by this process, not by Ctrl-C
        )


def read_ready_line(process: subprocess.Popen, what: str, log: Path, timeout: float) -> dict:
    """The JSON line a child prints once it is up; raises with its log when it is not."""
    deadline, data = time.monotonic() + timeout, b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{what} not up within {timeout:g} s; its log {log}:\n{_tail(log)}")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                code = process.wait()
                raise BenchError(
                    f"{what} exited with status {code} before it was up; its log {log}:\n{_tail(log)}"
                )
            data += chunk
    return json.loads(data.split(b"\n")[0])


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def write_config(
    path: Path,
    *,
    checkpoint: Path,
    templates: Path,
    port: int,
    prefix: str,
    hostname: str,
    source_ids: Sequence[str],
) -> list[str]:
    """The daemon's configuration (TOML); returns the devices, one per source id."""
    q = json.dumps  # a JSON string is a TOML basic string
    lines = [
        'log_level = "INFO"',
        "[lsl]\nloopback_only = true",
        f"[model]\ncheckpoint = {q(str(checkpoint))}\nhop_seconds = {HOP_SECONDS}",
        f"[templates]\ndirectory = {q(str(templates))}",
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nprefix = {q(prefix)}\npublish_scores = true',
    ]
    devices = [f"h{i:03d}" for i in range(len(source_ids))]
    for device, source_id in zip(devices, source_ids, strict=True):
        lines.append(
            f'[[headsets]]\ndevice = "{device}"\nuser = "{OWNER}"\n'
            f"stream = {{ source_id = {q(source_id)}, host = {q(hostname)} }}"
        )
    path.write_text("\n".join(lines) + "\n")
    return devices


def parse_status(text: str) -> dict[str, float] | None:
    """The ``key=value`` figures of a ``STATUS=`` line (after its last ';'), or None."""
    if not text.startswith("STATUS=") or "rss_mb=" not in text:
        return None
    figures = {}
    for part in text.split(";")[-1].split():
        key, _, value = part.partition("=")
        with contextlib.suppress(ValueError):
            figures[key] = float(value)
    return figures


@contextlib.contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace, as systemd gives ``NOTIFY_SOCKET``; its address."""
    name = f"neuroauth-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.setblocking(False)
        yield sock, "@" + name
    finally:
        sock.close()


# -- one headset count -----------------------------------------------------------------------------


@dataclass
class Observation:
    """What the subscriber and the notify socket received over one run."""

    scores: list[Score] = field(default_factory=list)
    first_scored: dict[str, float] = field(default_factory=dict)  # device -> time.time()
    ready_at: float | None = None  # time.time() of READY=1
    status: dict[str, float] | None = None  # the latest STATUS= figures


@dataclass(frozen=True)
class Interval:
    """The measured interval: its wall-clock bounds and what the processes did over it."""

    start: float
    end: float
    processes: dict[str, ProcessFigures]  # daemon, outlets, subscriber
    status: dict[str, float] | None  # the daemon's last STATUS= figures within it


async def _collect_scores(client, prefix: str, seen: Observation) -> None:
    async for message in client.messages:
        received = time.time()
        topic = str(message.topic)
        device = topic[len(prefix) + 1 : -len("/score")]
        body = json.loads(message.payload)
        seen.scores.append(Score(device, received, float(body["timestamp"]), body.get("score") is None))
        seen.first_scored.setdefault(device, received)


async def _collect_notifications(sock: socket.socket, seen: Observation) -> None:
    loop = asyncio.get_running_loop()
    while True:
        for line in (await loop.sock_recv(sock, 65536)).decode(errors="replace").splitlines():
            if line == "READY=1" and seen.ready_at is None:
                seen.ready_at = time.time()
            figures = parse_status(line)
            if figures is not None:
                seen.status = figures


def _check_running(daemon: subprocess.Popen, log: Path, collectors: Sequence[asyncio.Task]) -> None:
    """Raise when the daemon has exited or a collector has failed (its own exception)."""
    if daemon.poll() is not None:
        raise BenchError(f"neuroauthd exited with status {daemon.returncode}; its log {log}:\n{_tail(log)}")
    import aiomqtt

    for task in collectors:
        if task.done():
            try:
                task.result()
            except aiomqtt.MqttError as exc:
                raise BenchError(f"the subscriber lost the broker ({exc}); see its log") from exc
            raise BenchError(f"the {task.get_name()} collector ended; it should run until the run ends")


async def observe(
    *,
    port: int,
    prefix: str,
    devices: Sequence[str],
    daemon: subprocess.Popen,
    daemon_log: Path,
    outlets_pid: int,
    sock: socket.socket,
    duration: float,
    warmup_timeout: float,
    grace: float,
    progress: Callable[[str], None],
) -> tuple[Observation, Interval]:
    """Scores over the warm-up, ``duration`` seconds and ``grace`` seconds more, and the measured
    interval."""
    import aiomqtt

    seen = Observation()
    started = time.time()
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"neuroauth-bench-{uuid.uuid4().hex[:8]}"
    ) as client:
        await client.subscribe(f"{prefix}/+/score", qos=0)
        tasks = [
            asyncio.create_task(_collect_scores(client, prefix, seen), name="scores"),
            asyncio.create_task(_collect_notifications(sock, seen), name="notifications"),
        ]
        try:
            deadline = time.monotonic() + warmup_timeout
            while len(seen.first_scored) < len(devices) and time.monotonic() < deadline:
                _check_running(daemon, daemon_log, tasks)
                await asyncio.sleep(0.2)
            if len(seen.first_scored) < len(devices):
                progress(
                    f"  warm-up: {len(seen.first_scored)} of {len(devices)} headsets scored within "
                    f"{warmup_timeout:g} s; measuring anyway"
                )
            else:
                progress(f"  warm-up: every headset scored after {time.time() - started:.1f} s")
            watches = {"daemon": ProcessWatch(daemon.pid), "outlets": ProcessWatch(outlets_pid)}
            watches["subscriber"] = ProcessWatch(os.getpid())
            start = time.time()
            end_at = time.monotonic() + duration
            while (remaining := end_at - time.monotonic()) > 0:
                _check_running(daemon, daemon_log, tasks)
                for watch in watches.values():
                    watch.sample()
                await asyncio.sleep(min(PROC_SAMPLE_S, remaining))
            processes = {
                "daemon": watches["daemon"].figures(),
                "outlets": watches["outlets"].figures(),
                "subscriber": watches["subscriber"].figures(),
            }
            interval = Interval(start, time.time(), processes, seen.status)
            await asyncio.sleep(grace)  # the scores of the last windows are still on their way
            _check_running(daemon, daemon_log, tasks)
        finally:
            for task in tasks:
                task.cancel()
            # reaped only: a collector's failure is raised above while it matters, and on the way
            # out (Ctrl-C stops the broker too) it is a consequence, not the cause
            await asyncio.gather(*tasks, return_exceptions=True)
    return seen, interval


def run_count(
    count: int,
    *,
    checkpoint: Path,
    described: dict,
    templates: Path,
    work: Path,
    duration: float,
    warmup_timeout: float,
    max_p99: float,
    progress: Callable[[str], None],
) -> RunResult:
    """Outlets, broker, daemon and subscriber for ``count`` headsets; every process stopped on return.

    The processes run in sessions of their own, so that a Ctrl-C reaches this process only, which
    stops them in order, on any exit: the daemon first (SIGTERM, as systemd stops it: every
    headset locked, ``offline`` published), then the outlets, then the broker.
    """
    binary = local_broker.find()
    if binary is None:
        raise BenchError("mosquitto is not installed; install it (Debian: apt-get install mosquitto)")
    run_dir = work / "runs" / f"{count}-headsets"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    tag = uuid.uuid4().hex[:8]
    hop = HOP_SECONDS
    with contextlib.ExitStack() as stack:
        broker = local_broker.LocalBroker(binary, run_dir)
        broker.start(own_session=True)
        stack.callback(broker.stop)
        outlets_log = run_dir / "outlets.log"
        outlets = start_outlets(count, f"neuroauth-bench-{tag}", described["channels"], outlets_log)
        stack.callback(stop_process, outlets)
        ready = read_ready_line(outlets, "the outlet process", outlets_log, STARTUP_TIMEOUT_S)
        prefix = f"neuroauth-bench-{tag}"
        config = run_dir / "neuroauthd.toml"
        devices = write_config(
            config,
            checkpoint=checkpoint,
            templates=templates,
            port=broker.port,
            prefix=prefix,
            hostname=ready["hostname"],
            source_ids=ready["source_ids"],
        )
        sock, address = stack.enter_context(notify_socket())
        daemon_log = run_dir / "neuroauthd.log"
        with daemon_log.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "neuroauth.daemon.main", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env() | {"NOTIFY_SOCKET": address},
                cwd=run_dir,
                start_new_session=True,
            )
        daemon_started = time.time()
        exit_status: list[int] = []
        stack.callback(lambda: exit_status.append(stop_process(daemon)))
        progress(f"{count} headset(s): outlets up (pid {outlets.pid}), neuroauthd started (pid {daemon.pid})")
        seen, interval = asyncio.run(
            observe(
                port=broker.port,
                prefix=prefix,
                devices=devices,
                daemon=daemon,
                daemon_log=daemon_log,
                outlets_pid=outlets.pid,
                sock=sock,
                duration=duration,
                warmup_timeout=warmup_timeout,
                grace=max_p99,
                progress=progress,
            )
        )
    # every process is stopped here; the daemon's exit status is known
    latency, windows = window_figures(seen.scores, devices, interval.start, interval.end, hop)
    scored = len(seen.first_scored)
    breaks = None
    if scored < count:
        breaks = f"{count - scored} of {count} headsets never scored"
    elif latency is None or latency.p99 > max_p99:
        breaks = f"p99 latency {latency.p99 if latency else float('nan'):.2f} s above {max_p99:g} s"
    log_text = daemon_log.read_text(errors="replace")
    return RunResult(
        headsets=count,
        headsets_scored=scored,
        ready_s=round(seen.ready_at - daemon_started, 2) if seen.ready_at is not None else None,
        warmup_s=round(max(seen.first_scored.values()) - daemon_started, 2) if scored == count else None,
        duration_s=round(interval.end - interval.start, 2),
        latency_s=latency,
        windows=windows,
        daemon=interval.processes["daemon"],
        daemon_cpu_cores_per_headset=round(interval.processes["daemon"].cpu_cores / count, 4),
        outlets=interval.processes["outlets"],
        subscriber=interval.processes["subscriber"],
        daemon_status=interval.status,
        stream_restarts=len(re.findall(r"stream \S+ restarts:", log_text)),
        daemon_exit_status=exit_status[0] if exit_status else None,
        breaks=breaks,
    )


# -- the sweep -------------------------------------------------------------------------------------


def sweep(
    counts: Sequence[int],
    *,
    checkpoint: Path,
    work: Path,
    duration: float,
    warmup_timeout: float,
    max_p99: float,
    progress: Callable[[str], None] = print,
) -> dict:
    """Every count in turn until one breaks; the figures as a JSON-ready dict."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    templates, described = enrolled_templates(checkpoint, work, progress)
    progress(f"device: {DEVICE}")
    runs: list[RunResult] = []
    for count in counts:
        result = run_count(
            count,
            checkpoint=checkpoint,
            described=described,
            templates=templates,
            work=work,
            duration=duration,
            warmup_timeout=warmup_timeout,
            max_p99=max_p99,
            progress=progress,
        )
        runs.append(result)
        progress("  " + summary(result))
        if result.breaks is not None:
            progress(f"stopping the sweep at {count} headsets: {result.breaks}")
            break
    passing = [r.headsets for r in runs if r.breaks is None]
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_at_start": [round(x, 2) for x in load],
        },
        "device": DEVICE,
        "checkpoint": described,
        "settings": {
            "duration_s": duration,
            "warmup_timeout_s": warmup_timeout,
            "max_p99_s": max_p99,
            "hop_seconds": HOP_SECONDS,
            "outlet_rate_hz": bench_outlets.RATE,
            "outlet_chunk_s": bench_outlets.CHUNK_S,
            "owner": OWNER,
        },
        "runs": [asdict(r) for r in runs],
        "largest_passing": max(passing) if passing else 0,
        "stopped_at": runs[-1].headsets if runs and runs[-1].breaks is not None else None,
    }


def summary(r: RunResult) -> str:
    lat = r.latency_s
    latency = (
        f"latency p50 {lat.p50 * 1e3:.0f} ms, p99 {lat.p99 * 1e3:.0f} ms, max {lat.max * 1e3:.0f} ms"
        if lat
        else "no score"
    )
    w, d = r.windows, r.daemon
    return (
        f"{r.headsets} headset(s), {r.headsets_scored} scored: {latency}; windows {w.delivered} of "
        f"{w.expected} ({w.missing} missing, {w.late} late, {w.refused} refused); neuroauthd "
        f"{d.cpu_cores:.2f} cores ({r.daemon_cpu_cores_per_headset:.3f} per headset), {d.rss_mb:.0f} MB, "
        f"{d.threads} threads; outlets {r.outlets.cpu_cores:.2f} cores"
    )


def plot(result: dict, path: Path) -> None:
    """Latency (p50, p99) and CPU (daemon, outlets) against the headset count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if r["latency_s"] is not None]
    n = [r["headsets"] for r in runs]
    hop = result["settings"]["hop_seconds"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(n, [r["latency_s"]["p50"] * 1e3 for r in runs], "o-", label="p50")
    left.plot(n, [r["latency_s"]["p99"] * 1e3 for r in runs], "s-", label="p99")
    left.axhline(hop * 1e3, color="grey", linestyle=":", label="one hop (late beyond)")
    left.set(xlabel="headsets", ylabel="score latency (ms)", title="window end to score received")
    right.plot(n, [r["daemon"]["cpu_cores"] for r in runs], "o-", label="neuroauthd")
    right.plot(n, [r["outlets"]["cpu_cores"] for r in runs], "s-", label="LSL outlets (load generator)")
    right.axhline(result["machine"]["cpu_count"], color="grey", linestyle=":", label="cores")
    right.set(xlabel="headsets", ylabel="CPU (cores)", title="CPU over the measured interval")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(n, [str(count) for count in n])
        axis.set_ylim(bottom=0)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(f"neuroauthd, {result['checkpoint']['file']}, {result['device']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of headset counts"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more counts of at least 1, e.g. 1,16,64")
    return counts


def add_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, *, with_common: bool = True) -> None:
    """The benchmark's options; ``with_common`` adds ``--checkpoint`` and ``--json`` too (the
    ``neuroauth bench`` parser has its own)."""
    p.add_argument(
        "--headsets", type=_counts, default=[1, 16, 64], help="headset counts in turn (default 1,16,64)"
    )
    p.add_argument("--duration", type=positive, default=60.0, help="measured seconds per count (default 60)")
    p.add_argument(
        "--montage",
        choices=sorted(MONTAGE_CHECKPOINTS),
        help="the shipped checkpoint of this montage, its channels streamed (default: default, T7,F8,Cz,P4)",
    )
    p.add_argument("--plot", type=Path, help="write latency and CPU against headsets here (PNG)")
    p.add_argument(
        "--work", type=Path, help=f"enrolled templates and run logs (default {default_work_dir()})"
    )
    p.add_argument(
        "--warmup-timeout",
        type=positive,
        default=120.0,
        help="longest wait for every headset's first score (default 120 s)",
    )
    p.add_argument(
        "--max-p99",
        type=positive,
        default=5.0,
        help="a count whose p99 latency is above this breaks (default 5 s)",
    )
    if with_common:
        p.add_argument("--checkpoint", type=Path, help="checkpoint to serve (instead of --montage)")
        p.add_argument("--json", type=Path, help="write the figures as JSON here")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the sweep the parsed options ask for; print and write the figures."""
    from .atomic import atomic_write_text
    from .daemon.lslconfig import configure_lsl

    configure_lsl(loopback_only=True)  # before anything could touch LSL, here and in every child
    if args.checkpoint is not None and args.montage is not None:
        raise ValueError("give --checkpoint or --montage, not both: a checkpoint's montage is its own")
    checkpoint = args.checkpoint or MONTAGE_CHECKPOINTS[args.montage or "default"]

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def on_sigint(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C reaches the broker and the daemon too. asyncio.run would turn it into a cancellation
    # that can lose the race against the subscriber noticing the broker gone; a handler of our own
    # (asyncio.run leaves one that is not Python's default alone) raises at once.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        result = sweep(
            args.headsets,
            checkpoint=checkpoint,
            work=args.work or default_work_dir(),
            duration=args.duration,
            warmup_timeout=args.warmup_timeout,
            max_p99=args.max_p99,
            progress=progress,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")
        progress(f"figures written to {args.json}")
    if args.plot:
        plot(result, args.plot)
        progress(f"plot written to {args.plot}")
    return 0


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, stopping every process started."""


def main(argv: list[str] | None = None) -> int:
    """``python bench/daemon_scale.py``: the sweep; status 2 on an error a person can act on, 130 on
    Ctrl-C, 143 on SIGTERM, every process it started stopped in each case."""
    parser = argparse.ArgumentParser(prog="daemon_scale.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise _Terminated  # unwinds through every stop of a started process

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run_from_args(args)
    except (NeuroAuthError, ValueError) as exc:
        print(f"daemon_scale: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as exc:
        by = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
        print(f"daemon_scale: stopped by {by}; every process it started is stopped", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
