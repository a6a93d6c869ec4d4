"""Daemon test fixtures: a bundled recording replayed as a live LSL stream by a subprocess.

Each replay runs ``python -m neuroauth.daemon.replay`` with the loopback-only
LSL configuration in its environment and a source id unique to the test, so
tests never see each other's streams.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from neuroauth.daemon.lslconfig import loopback_env

from neuroauth.paths import BUNDLED_DATA

#: 62 s, 21 channels at 500 Hz: the shortest bundled recording.
RECORDING = BUNDLED_DATA / "Subject00_2.edf"
READY_TIMEOUT = 60.0  # seconds; generous, the machine may be busy
_READY = re.compile(
    r"^replaying .+ as stream (?P<name>.+) \(source_id (?P<source_id>.+)\), (?P<channels>\d+) channels"
)


class ReplayProcess:
    """A replay subprocess: started, killed, restarted under the same name and source id."""

    def __init__(self, recording: Path, name: str, source_id: str, options: Sequence[str], log: Path) -> None:
        self.recording = recording
        self.name = name
        self.source_id = source_id
        self.options = list(options)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_line = ""

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "neuroauth.daemon.replay",
            str(self.recording),
            "--name",
            self.name,
            "--source-id",
            self.source_id,
            *self.options,
        ]

    def start(self) -> ReplayProcess:
        """Start the subprocess and return once it says that its outlet is up."""
        if self.alive:
            raise RuntimeError("the replay is already running")
        with open(self.log, "ab") as stderr:
            self.proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=stderr, env=loopback_env(os.environ)
            )
        self.ready_line = self._read_ready_line()
        match = _READY.match(self.ready_line)
        assert match, f"unexpected first line from the replay: {self.ready_line!r}"
        assert match["name"] == self.name and match["source_id"] == self.source_id, self.ready_line
        return self

    def _read_ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        data = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    pytest.fail(f"replay not ready within {READY_TIMEOUT:g} s; stderr:\n{self.stderr()}")
                if not selector.select(remaining):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    code = self.proc.wait()
                    pytest.fail(
                        f"replay exited with status {code} before it was ready; stderr:\n{self.stderr()}"
                    )
                data += chunk
        return data.decode().splitlines()[0]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``signum`` and return the exit status."""
        assert self.proc is not None
        self.send(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self._release()

    def kill(self) -> None:
        """SIGKILL: the outlet disappears without a goodbye, as when a program crashes."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process must be able to die
            self.proc.kill()
        self.proc.wait(15.0)
        self._release()

    def _release(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def restart(self) -> ReplayProcess:
        self.kill()
        return self.start()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ReplayFactory:
    """Starts replays for one test; every one is killed when the test ends."""

    def __init__(self, test_name: str, log_dir: Path) -> None:
        self._prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)[:60]
        self._log_dir = log_dir
        self.started: list[ReplayProcess] = []

    def unique(self, kind: str = "src") -> str:
        """A name or source id no other test uses."""
        return f"{kind}-{self._prefix}-{uuid.uuid4().hex[:10]}"

    def __call__(
        self,
        recording: Path = RECORDING,
        *,
        name: str | None = None,
        source_id: str | None = None,
        speed: float = 4.0,
        loop: bool = True,
        extra: Sequence[str] = (),
    ) -> ReplayProcess:
        options = ["--speed", str(speed), *(["--loop"] if loop else []), *extra]
        replay = ReplayProcess(
            recording,
            name or self.unique("name"),
            source_id or self.unique("src"),
            options,
            self._log_dir / f"replay-{len(self.started)}.log",
        )
        self.started.append(replay)
        return replay.start()

    def close(self) -> None:
        for replay in self.started:
            replay.kill()


@pytest.fixture
def replay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplayFactory]:
    """``replay(recording=..., speed=4, loop=True, name=None, source_id=None)`` -> a running replay."""
    factory = ReplayFactory(request.node.name, tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def recording() -> Path:
    return RECORDING
