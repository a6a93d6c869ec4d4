"""A mosquitto broker of our own on 127.0.0.1: the demo's, and the tests'.

It listens on a free loopback port, keeps its configuration and log in a working
folder, and can be stopped and started again on the same port (clients see their
connection drop and come back). Started as root, mosquitto would switch to the
``mosquitto`` user, who cannot read a private working folder, so it stays root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
MOSQUITTO = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
MOSQUITTO_PASSWD = ("mosquitto_passwd", "/usr/bin/mosquitto_passwd")


def find(candidates: tuple[str, ...] = MOSQUITTO) -> str | None:
    """The first of ``candidates`` that is an executable on this machine, or None."""
    for name in candidates:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """One mosquitto process on 127.0.0.1; ``stop()`` and ``start()`` keep the same port."""

    host = "127.0.0.1"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        password_file: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        log_everything: bool = False,
        acl_file: Path | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if password_file else 'true'}",
            "persistence false",
            "log_dest stderr",
        ]
        if log_everything:  # down to each PUBLISH received: tests read the log to count messages
            lines += ["log_type all", "connection_messages true"]
        if tls is not None:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if password_file is not None:
            lines.append(f"password_file {password_file}")
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        if os.geteuid() == 0:
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0, *, own_session: bool = False) -> None:
        """Start the broker and wait until its port accepts connections. With ``own_session`` it
        runs in a session of its own, out of reach of the terminal's Ctrl-C: whoever started it
        stops it, after its clients."""
        if self.process is not None:
            raise RuntimeError("this broker is already running")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=own_session,
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
