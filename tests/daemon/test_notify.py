"""The systemd notification protocol against a real AF_UNIX datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest
from neuroauth.daemon.notify import Notifier


@pytest.fixture
def listener(tmp_path):
    """A datagram socket bound to a path, as systemd's notification socket is."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield path, sock


def _receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_reach_the_socket_from_the_environment(listener, monkeypatch):
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier()
    assert notifier.enabled

    assert notifier.ready(status="broker connected\nheadset eeg1 streaming")
    assert _receive(sock) == ["READY=1", "STATUS=broker connected headset eeg1 streaming"]
    assert notifier.status("eeg1: OWNER")
    assert _receive(sock) == ["STATUS=eeg1: OWNER"]
    assert notifier.watchdog()
    assert _receive(sock) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert _receive(sock) == ["STOPPING=1"]


def test_abstract_socket_name():
    name = f"neuroauth-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert _receive(sock) == ["READY=1"]


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None


def test_send_failure_is_logged_not_raised(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.WARNING, logger="neuroauth.daemon.notify"):
        assert notifier.ready() is False
    assert "cannot notify systemd" in caplog.text


def test_unsupported_address_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="neuroauth.daemon.notify"):
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "NOTIFY_SOCKET" in caplog.text


def test_watchdog_interval():
    me = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    assert Notifier({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": me}).watchdog_interval() == 0.5
    # The watchdog is meant for another process (e.g. the service's main process, not a child).
    other = str(os.getpid() + 1)
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": other}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert Notifier({}).watchdog_interval() is None
