"""The LSL inlet against real streams: a replayed bundled recording, and small in-process outlets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest
from neuroauth.daemon.inlet import (
    EegInlet,
    StreamLost,
    backoff_delays,
    connect_with_backoff,
    resolve_one,
    unit_scale,
)
from neuroauth.daemon.lslconfig import LOOPBACK_CONFIG, configure_lsl, loopback_env

from neuroauth.config import StreamSelector
from neuroauth.errors import StreamError
from neuroauth.recordings import read_raw

FIND_TIMEOUT = 10.0  # seconds; resolving returns as soon as the stream answers


def find_one(selector: StreamSelector) -> pylsl.StreamInfo:
    info = asyncio.run(resolve_one(selector, FIND_TIMEOUT))
    assert info is not None, f"no stream matches {selector}"
    return info


def pull_for(inlet: EegInlet, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Everything the inlet delivers during ``seconds`` of wall clock."""
    chunks, stamps = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        volts, ts = inlet.pull(512)
        assert volts.shape == (inlet.channel_count, ts.size)
        chunks.append(volts)
        stamps.append(ts)
        time.sleep(0.02)
    return np.concatenate(chunks, axis=1), np.concatenate(stamps)


def pull_until_lost(inlet: EegInlet, timeout: float) -> StreamLost:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            inlet.pull()
        except StreamLost as exc:
            return exc
        time.sleep(0.02)
    pytest.fail(f"the inlet did not report the stream lost within {timeout:g} s")


# --- selector -----------------------------------------------------------------------------


def test_a_selector_matches_a_stream_when_every_field_given_equals_the_streams():
    cap = _Info("Cap", "a1", host="desk")
    assert StreamSelector(source_id="a1").matches(cap)
    assert StreamSelector(name="Cap", type="EEG").matches(cap)
    assert StreamSelector(name="Cap", type="EEG", source_id="a1", host="desk").matches(cap)
    assert not StreamSelector(name="Cap", type="Markers").matches(cap)
    assert not StreamSelector(source_id="a1", host="another-host").matches(cap)
    assert not StreamSelector(name="cap").matches(cap)  # names are compared exactly


@pytest.mark.parametrize(
    ("fields", "message"),
    [({}, "at least one"), ({"name": ""}, "empty"), ({"source_id": "a\nb"}, "line break")],
)
def test_selector_refuses_what_lsl_cannot_query(fields, message):
    with pytest.raises(ValueError, match=message):
        StreamSelector(**fields)


def test_the_configured_selector_is_the_inlets():
    import neuroauth.daemon.inlet

    import neuroauth.config

    assert neuroauth.daemon.inlet.StreamSelector is neuroauth.config.StreamSelector  # one rule, one home
    assert neuroauth.config.HeadsetSettings(device="d", user="u").stream == StreamSelector(type="EEG")


def test_resolve_by_source_id_by_name_and_by_type_and_name(replay):
    stream = replay()
    for selector in (
        StreamSelector(source_id=stream.source_id),
        StreamSelector(name=stream.name),
        StreamSelector(name=stream.name, type="EEG"),
    ):
        assert find_one(selector).source_id() == stream.source_id, selector


def test_a_name_with_quotes_resolves_and_every_field_must_match(replay):
    name = f"""it's a "test" <&> {uuid.uuid4().hex[:8]}"""
    stream = replay(name=name)
    assert find_one(StreamSelector(name=name, type="EEG")).source_id() == stream.source_id
    assert asyncio.run(resolve_one(StreamSelector(name=name, type="Markers"), 1.0)) is None


# --- reading a replayed recording ---------------------------------------------------------


def test_inlet_delivers_the_recording_in_volts_at_the_nominal_rate(replay, recording):
    speed = 4.0
    stream = replay(speed=speed)
    raw = read_raw(recording)
    expected = raw.get_data()  # (C, N) volts
    with EegInlet(find_one(StreamSelector(source_id=stream.source_id))) as inlet:
        assert inlet.labels == tuple(raw.ch_names)
        assert inlet.require_labels() == tuple(raw.ch_names)
        assert inlet.units == ("microvolts",) * len(raw.ch_names)
        assert inlet.sfreq == raw.info["sfreq"] == 500.0
        volts, stamps = pull_for(inlet, 1.5)
        received_at = pylsl.local_clock()

    n = stamps.size
    assert n > 1000, f"only {n} samples in 1.5 s at {speed}x 500 Hz"
    # Where the reading started: the sample of the file equal to the first one received.
    matches = np.flatnonzero(np.abs(expected - volts[:, :1]).max(axis=0) < 1e-9)
    assert matches.size == 1, f"the first sample received matches {matches.size} samples of the file"
    index = (matches[0] + np.arange(n)) % expected.shape[1]
    # float32 microvolts on the wire: relative error below 2**-24 (plus rounding of the scaling).
    np.testing.assert_allclose(volts, expected[:, index], rtol=2.0**-23, atol=0)

    period = 1.0 / (500.0 * speed)
    steps = np.diff(stamps)
    assert (steps > 0).all()
    assert np.median(steps) == pytest.approx(period, rel=1e-3)
    assert (stamps[-1] - stamps[0]) / (n - 1) == pytest.approx(period, rel=1e-3)
    assert steps.max() < 3 * period, "a gap in the timestamps of a local replay"
    assert 0 <= received_at - stamps[-1] < 1.0, "timestamps are not on this machine's LSL clock"


def test_killed_replay_is_reported_lost_and_a_restart_is_picked_up(replay):
    stream = replay()
    selector = StreamSelector(source_id=stream.source_id)
    inlet = EegInlet(find_one(selector))
    pull_for(inlet, 0.3)
    assert inlet.samples_received > 0

    stream.kill()
    lost = pull_until_lost(inlet, timeout=10.0)
    assert (lost.name, lost.source_id) == (stream.name, stream.source_id)
    assert stream.source_id in str(lost)
    inlet.close()

    stream.start()  # the same name and source id, a new outlet
    again = asyncio.run(asyncio.wait_for(connect_with_backoff(selector, min_delay=0.1, max_delay=0.5), 30))
    with again:
        volts, _ = pull_for(again, 0.5)
        assert volts.shape[1] > 0


def test_a_silent_stream_shows_as_a_stall(replay):
    stream = replay()
    with EegInlet(find_one(StreamSelector(source_id=stream.source_id))) as inlet:
        pull_for(inlet, 0.3)
        assert inlet.seconds_since_last_sample() < 0.5
        stream.send(signal.SIGSTOP)  # the connection stays open, no sample comes
        try:
            deadline = time.monotonic() + 10.0
            while inlet.seconds_since_last_sample() < 1.0:
                assert time.monotonic() < deadline, "pulls kept returning samples from a stopped outlet"
                inlet.pull()
                time.sleep(0.05)
        finally:
            stream.send(signal.SIGCONT)
        deadline = time.monotonic() + 10.0
        while inlet.seconds_since_last_sample() >= 0.5:
            assert time.monotonic() < deadline, "samples did not resume after the outlet continued"
            inlet.pull()
            time.sleep(0.05)


def test_connect_with_backoff_waits_for_a_stream_that_starts_later(replay):
    source_id = replay.unique()
    retries: list[tuple[str, float]] = []

    async def scenario() -> EegInlet:
        task = asyncio.create_task(
            connect_with_backoff(
                StreamSelector(source_id=source_id),
                lambda problem, delay: retries.append((problem, delay)),
                resolve_timeout=0.3,
                min_delay=0.1,
                max_delay=0.5,
            )
        )
        deadline = time.monotonic() + 20.0
        while not retries:
            assert time.monotonic() < deadline, "no retry reported while no stream exists"
            await asyncio.sleep(0.05)
        assert not task.done()
        await asyncio.to_thread(replay, source_id=source_id)
        return await asyncio.wait_for(task, 30)

    with asyncio.run(scenario()) as inlet:
        assert inlet.source_id == source_id
        volts, _ = pull_for(inlet, 0.3)
        assert volts.shape[1] > 0
    problem, delay = retries[0]
    assert source_id in problem and "found within 0.3 s" in problem, problem
    assert 0.1 <= delay <= 0.5, delay


def test_connect_with_backoff_can_be_cancelled():
    async def scenario() -> None:
        task = asyncio.create_task(
            connect_with_backoff(StreamSelector(source_id=f"absent-{uuid.uuid4().hex}"), resolve_timeout=0.3)
        )
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_backoff_doubles_up_to_the_cap_with_jitter():
    delays = backoff_delays(0.5, 10.0, random.Random(1))
    first = [next(delays) for _ in range(30)]
    assert all(0.5 <= d <= 10.0 for d in first)
    assert first[0] == 0.5  # drawn from [0.25, 0.5], raised to the minimum
    assert all(5.0 <= d <= 10.0 for d in first[5:])  # capped: 0.5 * 2**5 > 10
    assert len(set(first[5:])) > 1
    with pytest.raises(ValueError):
        next(backoff_delays(2.0, 1.0))


# --- stream descriptions: small outlets in this process -----------------------------------


def make_outlet(
    labels: list[str] | None,
    units: list[str] | None,
    *,
    channels: int = 2,
    rate: float = 100.0,
    fmt: int = pylsl.cf_float32,
) -> tuple[pylsl.StreamOutlet, str]:
    source_id = f"desc-{uuid.uuid4().hex}"
    info = pylsl.StreamInfo("desc-test", "EEG", channels, rate, fmt, source_id)
    if labels is not None or units is not None:
        node = info.desc().append_child("channels")
        for i in range(channels):
            channel = node.append_child("channel")
            if labels is not None:
                channel.append_child_value("label", labels[i])
            if units is not None:
                channel.append_child_value("unit", units[i])
    return pylsl.StreamOutlet(info), source_id


def test_unit_names_and_symbols():
    for unit in ("microvolts", "Microvolt", "uV", "µV", "μV"):
        assert unit_scale(unit) == 1e-6, unit
    for unit in ("volts", "V"):
        assert unit_scale(unit) == 1.0, unit
    for unit in ("millivolts", "mV"):
        assert unit_scale(unit) == 1e-3, unit
    for unit in ("MV", "counts", "uA"):
        assert unit_scale(unit) is None, unit


def test_samples_are_scaled_by_their_unit():
    outlet, source_id = make_outlet(["Cz", "Pz"], ["millivolts", "V"])
    with EegInlet(find_one(StreamSelector(source_id=source_id))) as inlet:
        assert inlet.scale.tolist() == [1e-3, 1.0]
        sent = np.array([[1.5, -2.0], [3.0, 0.25]], dtype=np.float32)  # (N, C)
        outlet.push_chunk(sent)
        volts = np.empty((2, 0))
        deadline = time.monotonic() + 10.0
        while volts.shape[1] < 2 and time.monotonic() < deadline:
            got, _ = asyncio.run(inlet.pull_async(8, timeout=0.5))
            volts = np.concatenate([volts, got], axis=1)
    np.testing.assert_allclose(volts, [[1.5e-3, 3.0e-3], [-2.0, 0.25]])


def test_a_missing_unit_is_taken_as_microvolts_and_reported_once(caplog):
    _outlet, source_id = make_outlet(["Cz", "Pz"], None)
    selector = StreamSelector(source_id=source_id)
    with caplog.at_level(logging.WARNING, logger="neuroauth.daemon.inlet"):
        for _ in range(2):  # a reconnection does not repeat the warning
            with EegInlet(find_one(selector)) as inlet:
                assert inlet.scale.tolist() == [1e-6, 1e-6]
                assert inlet.units == ("microvolts", "microvolts")
    warnings = [r for r in caplog.records if "assuming microvolts" in r.getMessage()]
    assert len(warnings) == 1
    assert source_id in warnings[0].getMessage()


def test_a_stream_without_labels_opens_but_says_why_it_cannot_be_mapped():
    _outlet, source_id = make_outlet(None, None, channels=3)
    with EegInlet(find_one(StreamSelector(source_id=source_id))) as inlet:
        assert inlet.labels is None and inlet.channel_count == 3
        with pytest.raises(StreamError, match=r"3 channels but describes no channel labels"):
            inlet.require_labels()


def test_a_stream_of_more_channels_than_any_headset_is_refused():
    _outlet, source_id = make_outlet(None, None, channels=600)
    with pytest.raises(StreamError, match="announces 600 channels at 100 Hz; an EEG headset has 1 to 512"):
        EegInlet(find_one(StreamSelector(source_id=source_id)))


def test_a_label_given_twice_is_not_guessed_between():
    _outlet, source_id = make_outlet(["T7", "Cz", "T7"], None, channels=3)
    with EegInlet(find_one(StreamSelector(source_id=source_id))) as inlet:
        assert inlet.labels is None
        with pytest.raises(StreamError, match=r"3 channels but labels 'T7' more than once"):
            inlet.require_labels()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": ["microvolts", "counts"]}, r"channel\(s\) 2 \('counts'\)"),
        ({"rate": pylsl.IRREGULAR_RATE}, "no regular sampling rate"),
        ({"fmt": pylsl.cf_string}, "carries text"),
    ],
)
def test_unusable_streams_are_refused(kwargs, message):
    options = dict(kwargs)
    _outlet, source_id = make_outlet(["Cz", "Pz"], options.pop("units", None), **options)
    with pytest.raises(StreamError, match=message):
        EegInlet(find_one(StreamSelector(source_id=source_id)))


# --- liblsl configuration -----------------------------------------------------------------
# liblsl logs the source of its configuration on stderr when it reads it; that line, and the
# IPv6 ports an outlet reports (0 when IPv6 is disabled), show which configuration a process got.
# Every child process below also finds the loopback configuration as lsl_api.cfg in its working
# directory, so that a failure of configure_lsl stays on 127.0.0.1 (and shows as "loaded from
# lsl_api.cfg").

PROBE = r"""
import os, re, sys
import pylsl  # loads liblsl, which reads its configuration only when a stream is described
from neuroauth.daemon.lslconfig import configure_lsl
source_id = sys.argv[1]
configure_lsl(True)
info = pylsl.StreamInfo("cfg-probe", "Test", 1, 10.0, pylsl.cf_float32, source_id)
outlet = pylsl.StreamOutlet(info)
found = pylsl.resolve_byprop("source_id", source_id, timeout=10.0)
xml = outlet.get_info().as_xml()
v6 = re.search(r"<v6service_port>(\d+)</v6service_port>", xml).group(1)
print(len(found), v6, os.environ.get("LSLAPICFG", ""))
"""


def run_probe(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[list[str], str]:
    (tmp_path / "lsl_api.cfg").write_text(LOOPBACK_CONFIG)
    result = subprocess.run(
        [sys.executable, "-c", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), result.stderr


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """The test environment without LSLAPICFG, with a private runtime directory of its own."""
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    return env


def test_configure_lsl_takes_effect_after_pylsl_is_imported(tmp_path, bare_env):
    written = Path(bare_env["XDG_RUNTIME_DIR"]) / "neuroauth-lsl-loopback.cfg"
    (found, v6_port, lslapicfg), stderr = run_probe(tmp_path, bare_env, PROBE, uuid.uuid4().hex)
    assert lslapicfg == str(written)
    assert written.read_text() == LOOPBACK_CONFIG
    assert found == "1"  # the process still resolves its own stream over loopback
    assert v6_port == "0"  # IPv6 = disable: the configuration was loaded
    assert "Configuration loaded from" not in stderr and " INFO|" not in stderr  # liblsl logs errors only


# LOOPBACK_CONFIG with liblsl's INFO lines on: "Configuration loaded from <file>" says which file it read
TALKATIVE_CONFIG = LOOPBACK_CONFIG.replace("level = -2", "level = 0")


def test_configure_lsl_keeps_a_configuration_named_by_the_environment(tmp_path, bare_env):
    mine = tmp_path / "mine.cfg"
    mine.write_text(TALKATIVE_CONFIG)
    env = {**bare_env, "LSLAPICFG": str(mine)}
    (found, _, lslapicfg), stderr = run_probe(tmp_path, env, PROBE, uuid.uuid4().hex)
    assert lslapicfg == str(mine)
    assert f"Configuration loaded from {mine}" in stderr
    assert found == "1"
    assert not (Path(bare_env["XDG_RUNTIME_DIR"]) / "neuroauth-lsl-loopback.cfg").exists()


@pytest.mark.parametrize("order", ["before", "after"])
def test_set_config_content_works_only_before_the_first_stream_description(tmp_path, order):
    # For the record: the alternative to LSLAPICFG. Content set before any stream is described
    # wins over LSLAPICFG; set afterwards, it is ignored without an error.
    env_file = tmp_path / "env.cfg"
    env_file.write_text(TALKATIVE_CONFIG)
    env = {**os.environ, "LSLAPICFG": str(env_file)}
    set_content = f"pylsl.set_config_content({TALKATIVE_CONFIG!r})"
    describe = "info = pylsl.StreamInfo('x', 'Test', 1, 10.0, pylsl.cf_float32, 'cfg-content')"
    steps = [set_content, describe] if order == "before" else [describe, set_content, describe]
    _, stderr = run_probe(tmp_path, env, "\n".join(["import pylsl", *steps]))
    loaded = re.findall(r"Configuration loaded from (.+)", stderr)
    assert loaded == (["content"] if order == "before" else [str(env_file)])


def test_configure_lsl_refuses_an_unreadable_configuration_file(tmp_path, monkeypatch):
    missing = tmp_path / "missing.cfg"
    monkeypatch.setenv("LSLAPICFG", str(missing))
    with pytest.raises(StreamError, match=re.escape(str(missing))):
        configure_lsl(True)
    with pytest.raises(StreamError, match="cannot be read"):
        loopback_env({"LSLAPICFG": str(missing)})


def test_loopback_env_for_child_processes(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    base = {"PATH": "/usr/bin"}
    env = loopback_env(base)
    assert base == {"PATH": "/usr/bin"}
    assert env["PATH"] == "/usr/bin"
    assert Path(env["LSLAPICFG"]).read_text() == LOOPBACK_CONFIG
    mine = tmp_path / "mine.cfg"
    mine.write_text(LOOPBACK_CONFIG)
    assert loopback_env({"LSLAPICFG": str(mine)})["LSLAPICFG"] == str(mine)


# --- a stream is one stream: two that match are refused, never chosen between -----------------


def test_two_streams_matching_one_selector_are_refused_naming_both(replay):
    from neuroauth.daemon.inlet import AmbiguousStream

    first = replay()
    selector = StreamSelector(source_id=first.source_id)
    assert asyncio.run(resolve_one(selector, FIND_TIMEOUT)).source_id() == first.source_id
    impostor = replay(source_id=first.source_id, name="an imitation")  # same source id, another program
    with pytest.raises(
        AmbiguousStream, match=r"2 LSL streams match .*an imitation.*pin the headset's stream"
    ):
        asyncio.run(resolve_one(selector, FIND_TIMEOUT))
    problems = []

    async def connect():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(4.0):
                await connect_with_backoff(selector, lambda p, d: problems.append(p), resolve_timeout=2.0)

    asyncio.run(connect())
    assert problems and "2 LSL streams match" in problems[0], problems
    impostor.stop()
    assert asyncio.run(resolve_one(selector, FIND_TIMEOUT)).source_id() == first.source_id


def test_the_host_pins_a_stream(replay):
    import socket

    stream = replay()
    here = asyncio.run(resolve_one(StreamSelector(source_id=stream.source_id), FIND_TIMEOUT)).hostname()
    assert here == socket.gethostname()
    assert asyncio.run(resolve_one(StreamSelector(source_id=stream.source_id, host=here), FIND_TIMEOUT))
    elsewhere = StreamSelector(source_id=stream.source_id, host="another-host")
    assert asyncio.run(resolve_one(elsewhere, 1.0)) is None


class _Info:
    """What a lookup answers for one stream, as far as selectors look."""

    def __init__(self, name: str, source_id: str, host: str = "desk", kind: str = "EEG") -> None:
        self._fields = {
            "name": name,
            "type": kind,
            "source_id": source_id,
            "hostname": host,
            "uid": source_id,
        }

    def __getattr__(self, field: str):
        return lambda: self._fields[field]


def test_headsets_waiting_together_share_one_lookup(monkeypatch):
    """Sixty-four headsets looking for their streams at once send one lookup, not sixty-four (liblsl
    lookups running side by side miss streams), and each finds its own; a selector matching two is refused."""
    from neuroauth.daemon import inlet

    answer = [_Info(f"cap-{i}", f"src-{i}") for i in range(64)] + [_Info("twin", "x"), _Info("twin", "y")]
    lookups = []

    def resolve_streams(wait_time):
        lookups.append(wait_time)
        time.sleep(0.2)
        return answer

    monkeypatch.setattr(inlet.pylsl, "resolve_streams", resolve_streams)

    async def scenario():
        directory = inlet.StreamDirectory()
        found = await asyncio.gather(
            *(
                inlet.resolve_one(StreamSelector(source_id=f"src-{i}", host="desk"), 5.0, directory)
                for i in range(64)
            )
        )
        assert [f.source_id() for f in found] == [f"src-{i}" for i in range(64)]
        assert (
            await inlet.resolve_one(StreamSelector(source_id="src-3", host="elsewhere"), 0.0, directory)
            is None
        )
        with pytest.raises(inlet.AmbiguousStream, match="2 LSL streams match"):
            await inlet.resolve_one(StreamSelector(name="twin"), 5.0, directory)

    asyncio.run(scenario())
    assert len(lookups) == 1, lookups
