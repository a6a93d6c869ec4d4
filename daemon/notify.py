"""The systemd notification protocol (``Type=notify``, watchdog), without a dependency.

systemd passes the address of a datagram socket in ``NOTIFY_SOCKET``: a file system
path, or an abstract socket name written with a leading ``@``. Each message is one
datagram of ``KEY=VALUE`` lines. Without ``NOTIFY_SOCKET`` (not started by systemd,
or in a test) every call does nothing. A failed send is logged, never raised: the
service keeps running and systemd's own timeouts take over.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` to systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = self._address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")

    @staticmethod
    def _address(raw: str) -> str | bytes | None:
        if not raw:
            return None
        if raw.startswith("@"):
            # An abstract socket: a leading NUL byte instead of '@', no file behind it.
            return b"\0" + raw[1:].encode()
        if raw.startswith("/"):
            return raw
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; not notifying systemd", raw)
        return None

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one message; True if it was sent."""
        if not fields:
            raise ValueError("a notification needs at least one KEY=VALUE field")
        if self.address is None:
            return False
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %r (%s): %s", self.address, fields[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The service is up (``READY=1``), optionally with a status line."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify(_status_field(text))

    def watchdog(self) -> bool:
        """Tell the watchdog the service is alive (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """The service is shutting down (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None when no watchdog watches this process.

        Send :meth:`watchdog` at least every half of it, as systemd recommends.
        """
        raw = self._watchdog_usec
        if not raw:
            return None
        pid = self._watchdog_pid
        if pid:
            if not pid.isdigit():
                log.warning("ignoring the watchdog: WATCHDOG_PID=%r is not a process id", pid)
                return None
            if int(pid) != os.getpid():
                return None
        try:
            usec = int(raw)
        except ValueError:
            usec = 0
        if usec <= 0:
            log.warning("ignoring the watchdog: WATCHDOG_USEC=%r is not a positive integer", raw)
            return None
        return usec / 1_000_000


def _status_field(text: str) -> str:
    # One message, one line per field: a newline inside would start a bogus field.
    return "STATUS=" + " ".join(text.splitlines())
