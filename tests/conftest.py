"""Shared fixtures: the bundled recordings and a small model trained on them.

LSL is configured loopback-only here, before anything can load liblsl.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from neuroauth.daemon.lslconfig import loopback_config_path  # imports pylsl, loads no liblsl config

# Every test and every process a test starts stays on 127.0.0.1, whatever the environment says.
os.environ["LSLAPICFG"] = str(loopback_config_path())


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from neuroauth.paths import BUNDLED_DATA

    return BUNDLED_DATA


@pytest.fixture(scope="session")
def bundled_4ch(bundled_dir):
    """The five bundled subjects, default montage, loaded at the model rate."""
    from neuroauth.models.montage import DEFAULT_MONTAGE
    from neuroauth.models.preprocess import SignalSpec
    from neuroauth.training.data import find_sessions, load_sessions

    return load_sessions(find_sessions(bundled_dir), DEFAULT_MONTAGE, SignalSpec())


@pytest.fixture(scope="session")
def tiny_checkpoint(bundled_4ch, tmp_path_factory) -> Path:
    """A checkpoint trained for a few steps on the bundled data (fast, not good)."""
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
    from neuroauth.training.train import TrainOptions, train

    options = TrainOptions(
        stage1=DenoiserTraining(steps=6, batch=8, val_every=3, val_examples=16),
        search=SpectralSearch(pca_dims=(8, 16), shrinkages=(0.5,), splits=2),
        val_subjects=1,
    )
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train(bundled_4ch, options, out, resume=False, progress=False)
    return out


# A real MQTT broker ------------------------------------------------------------------

_MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto")
_MOSQUITTO_PASSWD_PATHS = ("mosquitto_passwd", "/usr/bin/mosquitto_passwd")


def _which(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """One mosquitto process on 127.0.0.1; ``stop()`` and ``start()`` keep the same port."""

    host = "127.0.0.1"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        password_file: Path | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if password_file else 'true'}",
            "persistence false",
            "log_dest stderr",
            # Everything, down to each PUBLISH received: tests read the log to count messages.
            "log_type all",
            "connection_messages true",
        ]
        if tls is not None:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if password_file is not None:
            lines.append(f"password_file {password_file}")
        if os.geteuid() == 0:
            # Started as root, mosquitto would switch to the 'mosquitto' user, who cannot
            # read the test's private directory.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.process is not None:
            raise RuntimeError("this broker is already running")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"mosquitto exited at start:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout} s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Terminate the broker (kill it if it lingers); clients see their connection drop."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def mosquitto(tmp_path_factory):
    """Start real brokers: ``broker = mosquitto()``, ``mosquitto(users={"name": "password"})``
    or ``mosquitto(tls=(certfile, keyfile))`` for a TLS listener.

    Each broker listens on its own free 127.0.0.1 port; all are stopped at teardown.
    """
    binary = _which(_MOSQUITTO_PATHS)
    if binary is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    brokers: list[Mosquitto] = []

    def start(users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> Mosquitto:
        workdir = tmp_path_factory.mktemp("mosquitto")
        password_file = None
        if users:
            tool = _which(_MOSQUITTO_PASSWD_PATHS)
            if tool is None:
                pytest.skip("mosquitto_passwd is not installed (it comes with the mosquitto package)")
            password_file = workdir / "passwd"
            password_file.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run([tool, "-b", str(password_file), name, password], check=True)
        broker = Mosquitto(binary, workdir, password_file, tls)
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()
