"""``neuroauthd``'s exit statuses, in process: what systemd sees when the service ends."""

from __future__ import annotations

import logging

import pytest
from neuroauth.daemon import main as daemon_main


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "neuroauthd.toml"
    path.write_text(
        f'[templates]\ndirectory = "{tmp_path / "templates"}"\n\n'
        '[[headsets]]\ndevice = "eeg1"\nuser = "alice"\nstream = { source_id = "cap-1" }\n'
    )
    return path


def test_an_unexpected_error_exits_with_the_fatal_status_and_says_why(config, monkeypatch, caplog):
    async def broken(settings, path):
        raise ExceptionGroup("tasks", [RuntimeError("a bug nobody handled")])

    monkeypatch.setattr(daemon_main, "serve", broken)
    monkeypatch.setattr(daemon_main, "_hold_stop_signals", lambda: None)  # leave pytest's handlers be
    with caplog.at_level(logging.CRITICAL, logger=daemon_main.__name__):
        assert daemon_main.main(["--config", str(config)]) == daemon_main.FATAL_STATUS == 70
    (record,) = caplog.records
    assert "unexpected error; exiting with status 70" in record.getMessage()
    assert "a bug nobody handled" in caplog.text  # the traceback is in the journal


def test_a_refused_part_exits_with_status_2_naming_it(config, monkeypatch, capsys):
    from neuroauth.errors import TemplateError

    async def refused(settings, path):
        raise TemplateError("template alice.template.json is not signed with this installation's key")

    monkeypatch.setattr(daemon_main, "serve", refused)
    monkeypatch.setattr(daemon_main, "_hold_stop_signals", lambda: None)
    assert daemon_main.main(["--config", str(config)]) == 2
    assert "neuroauthd: template alice.template.json is not signed" in capsys.readouterr().err


def test_stop_signals_that_come_early_are_held(monkeypatch):
    import os
    import signal

    previous = {sig: signal.getsignal(sig) for sig in daemon_main.STOP_SIGNALS}
    monkeypatch.setattr(daemon_main, "_early_signals", [])
    try:
        daemon_main._hold_stop_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert daemon_main._early_signals == [signal.SIGTERM, signal.SIGHUP]
