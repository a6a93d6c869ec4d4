"""``neuroauth replay``: the command in a subprocess, the Replayer in this process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import uuid

import numpy as np
import pytest
from neuroauth.daemon.inlet import EegInlet, StreamLost, resolve_one
from neuroauth.daemon.replay import Replayer, main, register

from neuroauth.config import StreamSelector
from neuroauth.recordings import read_raw


def open_inlet(source_id: str) -> EegInlet:
    info = asyncio.run(resolve_one(StreamSelector(source_id=source_id), 10.0))
    assert info is not None
    return EegInlet(info)


def wait_for_samples(inlet: EegInlet, count: int, timeout: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    chunks, stamps = [], []
    deadline = time.monotonic() + timeout
    while sum(s.size for s in stamps) < count:
        assert time.monotonic() < deadline, f"fewer than {count} samples within {timeout:g} s"
        volts, ts = inlet.pull(512)
        chunks.append(volts)
        stamps.append(ts)
        time.sleep(0.02)
    return np.concatenate(chunks, axis=1), np.concatenate(stamps)


def expect_lost(inlet: EegInlet, timeout: float = 10.0) -> StreamLost:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            inlet.pull()
        except StreamLost as exc:
            return exc
        time.sleep(0.02)
    pytest.fail(f"the stream was not reported lost within {timeout:g} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_replay_cleanly(replay, signum):
    stream = replay()
    assert stream.ready_line.endswith("21 channels at 500 Hz")
    with open_inlet(stream.source_id) as inlet:
        wait_for_samples(inlet, 100)
        assert stream.stop(signum) == 0, stream.stderr()
        expect_lost(inlet)  # the outlet was destroyed, not abandoned
    assert "Traceback" not in stream.stderr()


def test_without_loop_the_replay_ends_by_itself(replay, recording):
    stream = replay(speed=50.0, loop=False)  # 62 s of signal in about 1.2 s
    assert stream.proc is not None
    assert stream.proc.wait(30) == 0, stream.stderr()


def test_replayer_in_process_serves_the_file_and_stops(recording):
    source_id = f"in-process-{uuid.uuid4().hex}"
    replayer = Replayer(recording, source_id=source_id, speed=4.0, loop=True)
    assert replayer.channel_count == 21 and replayer.sfreq == 500.0
    info = replayer.stream_info()
    units = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty():
        units.append(channel.child_value("unit"))
        channel = channel.next_sibling("channel")
    assert units == ["microvolts"] * 21

    expected = read_raw(recording).get_data()  # (C, N) volts
    with replayer.start():
        assert replayer.running
        with open_inlet(source_id) as inlet:
            assert inlet.labels == replayer.labels
            volts, _ = wait_for_samples(inlet, 200)
            start = np.flatnonzero(np.abs(expected - volts[:, :1]).max(axis=0) < 1e-9)
            assert start.size == 1
            n = volts.shape[1]
            np.testing.assert_allclose(volts, expected[:, start[0] : start[0] + n], rtol=2.0**-23, atol=0)
            replayer.stop()
            assert not replayer.running
            expect_lost(inlet)


def test_replayer_pushes_every_sample_once_without_loop(recording):
    replayer = Replayer(recording, source_id=f"to-the-end-{uuid.uuid4().hex}", speed=100.0)
    with replayer.start():
        assert replayer.wait(30), "the replay did not reach the end of the recording"
    assert replayer.samples_pushed == replayer.microvolts.shape[0] == read_raw(recording).n_times


def test_replay_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="neuroauth")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", "rec.edf", "--speed", "2.5", "--loop", "--source-id", "cap-1"])
    assert (args.command, args.speed, args.loop, args.source_id, args.type) == (
        "replay",
        2.5,
        True,
        "cap-1",
        "EEG",
    )
    assert (args.chunk_ms, args.lan, args.name) == (40.0, False, None)

    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "rec.edf", "--speed", "0"])
    assert "must be positive" in capsys.readouterr().err

    assert main([str(tmp_path / "absent.edf")]) == 2
    assert "absent.edf" in capsys.readouterr().err
    assert main([str(tmp_path / "notes.txt")]) == 2
    assert "extension" in capsys.readouterr().err
