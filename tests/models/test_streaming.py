"""The streaming engine equals the offline pipeline, batched or alone, and restarts by its policy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.montage import resolve_montage
from neuroauth.models.preprocess import preprocess
from neuroauth.models.streaming import EngineConfig, StreamingEngine
from neuroauth.training.protocol import denoise, embed, windows_of
from scipy import signal

from neuroauth.errors import MontageError, StreamError
from neuroauth.recordings import read_raw

T0 = 5000.0  # LSL time of each test recording's first sample
# The timestamps made here are exact, so most tests skip the delivered-rate check, which
# withholds a stream's windows until 4.5 s of timestamps have confirmed its rate.
EXACT = EngineConfig(rate_tolerance=None)


@pytest.fixture(scope="module")
def model():
    from neuroauth.paths import SHIPPED_CHECKPOINT

    return load_checkpoint(SHIPPED_CHECKPOINT)


@pytest.fixture(scope="module")
def recording(bundled_dir):
    """20 s of a bundled recording at its own 500 Hz, every channel (volts), and the names."""
    raw = read_raw(sorted(bundled_dir.glob("*_2.edf"))[0])
    return raw.get_data()[:, : 500 * 20].astype(np.float64), list(raw.ch_names)


def offline(model, volts, names, rate):
    """Embeddings of the windows of the whole-recording pipeline (evaluate's code path)."""
    picks = resolve_montage(model.montage, names)
    y = denoise(model, preprocess(volts[picks], rate, model.spec))
    return embed(model.embedder, windows_of(y, model.spec.sfreq, model.spec.window))


def feed(engine, key, volts, rate, sizes, t0=T0):
    """Push ``volts`` in chunks of ``sizes`` (cycled), advancing after each; all windows of ``key``."""
    out, i, k = [], 0, 0
    while i < volts.shape[1]:
        n = sizes[k % len(sizes)]
        stop = min(i + n, volts.shape[1])
        engine.push(key, volts[:, i:stop], t0 + np.arange(i, stop) / rate)
        out += [w for w in engine.advance().windows if w.stream == key]
        i, k = stop, k + 1
    return out


@pytest.mark.parametrize("rate", [500, 250, 256, 200])
def test_chunked_stream_equals_offline_pipeline(model, recording, rate):
    volts, names = recording
    if rate != 500:
        volts = signal.resample_poly(volts, rate, 500, axis=1)
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("s", names, rate)
    sizes = np.random.default_rng(rate).integers(1, 300, size=500).tolist()
    windows = feed(engine, "s", volts, rate, sizes)
    expected = offline(model, volts, names, rate)
    assert len(windows) == len(expected) > 10
    assert all(w.ok for w in windows)
    got = np.stack([w.embedding for w in windows])
    assert np.abs(got - expected).max() <= 1e-4
    # every hop a window; its timestamp is that of its last sample
    ends = np.array([w.end for w in windows])
    assert (np.diff(ends) == 200).all() and ends[0] == 800
    stamps = np.array([w.timestamp for w in windows])
    assert np.allclose(stamps - T0, (ends - 1) / 200.0, atol=0.5 / rate)


def test_streams_batched_together_equal_each_alone(model, recording):
    """Streams joining and leaving at any time get what they would get alone."""
    volts, names = recording
    n = volts.shape[1]
    parts = {"a": volts[:, : n // 2], "b": volts[:, n // 4 :], "c": volts[::-1].copy()[:, : n // 3]}
    c_names = names[::-1]
    alone = {}
    for key, v in parts.items():
        engine = StreamingEngine(model, EXACT)
        engine.add_stream(key, c_names if key == "c" else names, 500)
        alone[key] = feed(engine, key, v, 500, [250])
    engine = StreamingEngine(model, EXACT)
    got = {key: [] for key in parts}
    pos = dict.fromkeys(parts, 0)
    for tick in range(2 * n // 250):
        if tick == 0:
            engine.add_stream("a", names, 500)
        if tick == 3:
            engine.add_stream("b", names, 500)
        if tick == 5:
            engine.add_stream("c", c_names, 500)
        for key in engine.streams:
            v = parts[key]
            if pos[key] >= v.shape[1]:
                engine.remove_stream(key)
                continue
            stop = min(pos[key] + 250, v.shape[1])
            engine.push(key, v[:, pos[key] : stop], T0 + np.arange(pos[key], stop) / 500)
            pos[key] = stop
        for w in engine.advance().windows:
            got[w.stream].append(w)
    for key in parts:
        assert len(got[key]) == len(alone[key]) > 0
        diff = np.stack([w.embedding for w in got[key]]) - np.stack([w.embedding for w in alone[key]])
        assert np.abs(diff).max() <= 1e-4
        assert [w.timestamp for w in got[key]] == pytest.approx([w.timestamp for w in alone[key]])


def test_nan_samples_restart_the_stream(model, recording, caplog):
    volts, names = recording
    bad = volts.copy()
    cut = 500 * 8 + 123
    bad[resolve_montage(model.montage, names)[1], cut] = np.nan
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("s", names, 500)
    restarts, windows = [], []
    for i in range(0, bad.shape[1], 100):
        engine.push("s", bad[:, i : i + 100], T0 + np.arange(i, min(i + 100, bad.shape[1])) / 500)
        result = engine.advance()
        restarts += result.restarts
        windows += result.windows
    assert len(restarts) == 1 and "NaN" in restarts[0].reason
    assert restarts[0].timestamp == pytest.approx(T0 + (cut - 1) / 500)
    assert "restarts" in caplog.text
    # the stream starts afresh at the sample after the NaN
    restart_at = cut + 1
    before = [w for w in windows if w.timestamp < T0 + cut / 500]
    after = [w for w in windows if w.timestamp > T0 + cut / 500]
    assert len(before) == 5  # windows ending at 4 .. 8 s
    expected = offline(model, volts[:, restart_at:], names, 500)
    assert len(after) == len(expected)
    assert np.abs(np.stack([w.embedding for w in after]) - expected).max() <= 1e-4
    assert after[0].timestamp == pytest.approx(T0 + restart_at / 500 + 4 - 1 / 200, abs=2e-3)


@pytest.mark.parametrize(("value", "reason"), [(np.inf, "infinite"), (1e12, "beyond"), (-3.0, "beyond")])
def test_impossible_values_restart_the_stream(model, recording, value, reason):
    volts, names = recording
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("s", names, 500)
    chunk = volts[:, :500].copy()
    chunk[resolve_montage(model.montage, names)[0], 10] = value
    chunk[0, 20] = np.nan  # a channel the model does not use is no reason to restart
    engine.push("s", chunk, T0 + np.arange(500) / 500)
    (restart,) = engine.advance().restarts
    assert reason in restart.reason


@pytest.mark.parametrize(("jump", "reason"), [(2.0, "gap"), (-1.0, "stepped back")])
def test_broken_timestamps_restart_the_stream(model, recording, jump, reason):
    volts, names = recording
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("s", names, 500)
    ts = T0 + np.arange(3000) / 500
    ts[1500:] += jump
    engine.push("s", volts[:, :1500], ts[:1500])
    engine.push("s", volts[:, 1500:3000], ts[1500:3000])
    (restart,) = engine.advance().restarts
    assert reason in restart.reason
    # small jitter in the timestamps is no break
    engine.push("s", volts[:, 3000:3500], ts[2999] + 1 / 500 + np.arange(500) / 500 + 0.003)
    assert engine.advance().restarts == []


def test_timestamps_standing_still_restart_the_stream_once(model, recording):
    """A clock stepped back by 1 s reaches the engine as one timestamp repeated for 1 s of samples
    (LSL keeps timestamps ascending): one restart, and the delivered-rate check, on as shipped,
    is not misled by the repeated timestamps."""
    volts, names = recording
    engine = StreamingEngine(model)
    engine.add_stream("s", names, 500)
    still, after = 500, 500 * 12
    end = 1000 + still + after
    ts = T0 + np.arange(end) / 500
    ts[1000 : 1000 + still] = ts[1000]
    ts[1000 + still :] = ts[1000] + np.arange(1, after + 1) / 500  # then ascending again
    restarts, windows = [], []
    for i in range(0, end, 100):  # the still run spans many pushes
        engine.push("s", volts[:, i : min(i + 100, end)], ts[i : i + 100])
        result = engine.advance()
        restarts += result.restarts
        windows += result.windows
    (restart,) = restarts
    assert "stood still" in restart.reason
    assert windows and all(w.timestamp > ts[1000] for w in windows), "windows of the stuck samples"
    # a few samples sharing a timestamp (a device stamping each chunk once) are no break
    engine.push("s", volts[:, end : end + 64], np.full(64, ts[-1] + 1 / 500))
    assert engine.advance().restarts == []


def test_backlog_overflow_drops_the_oldest_and_restarts(model, recording, caplog):
    volts, names = recording
    engine = StreamingEngine(model, EngineConfig(max_backlog_seconds=5.0, rate_tolerance=None))
    engine.add_stream("s", names, 500)
    with caplog.at_level(logging.WARNING):
        engine.push("s", volts[:, : 500 * 12], T0 + np.arange(500 * 12) / 500)
    result = engine.advance()
    (restart,) = result.restarts
    assert "backlog" in restart.reason and "7.0 s were dropped" in restart.reason
    assert "backlog" in caplog.text
    # the newest 5 s are kept and served as a fresh stream: windows at 4 s and 5 s of it
    expected = offline(model, volts[:, 500 * 7 : 500 * 12], names, 500)
    assert len(result.windows) == len(expected) == 2
    assert np.abs(np.stack([w.embedding for w in result.windows]) - expected).max() <= 1e-4
    assert result.windows[-1].timestamp == pytest.approx(T0 + 12 - 1 / 200, abs=2e-3)


def test_flat_channel_windows_are_refused_not_embedded(model, recording):
    volts, names = recording
    flat = volts[:, : 500 * 8].copy()
    picks = resolve_montage(model.montage, names)
    flat[picks[2], 500 * 3 :] = 12e-6  # Cz stuck at a constant from 3 s on
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("s", names, 500)
    windows = feed(engine, "s", flat, 500, [200])
    assert len(windows) == 5
    assert windows[0].ok
    assert not windows[-1].ok  # the window from 4 s to 8 s
    assert any("Cz flat" in p for p in windows[-1].problems)


def test_bad_streams_are_refused_with_their_name(model, recording):
    volts, names = recording
    engine = StreamingEngine(model, EXACT)
    with pytest.raises(MontageError, match=r"stream 'x'.*T7"):
        engine.add_stream("x", [n for n in names if "T3" not in n], 500)
    with pytest.raises(StreamError, match=r"stream 'y'.*333"):
        engine.add_stream("y", names, 333.3)
    engine.add_stream("z", names, 500)
    with pytest.raises(StreamError, match="already"):
        engine.add_stream("z", names, 500)
    with pytest.raises(StreamError, match=r"stream 'z'.*expected \(21, N\)"):
        engine.push("z", volts[:4, :10], T0 + np.arange(10) / 500)
    with pytest.raises(StreamError, match="not registered"):
        engine.push("nobody", volts[:, :10], T0 + np.arange(10) / 500)
    with pytest.raises(ValueError, match="whole number of samples"):
        StreamingEngine(model, EngineConfig(hop_seconds=0.0033))


@pytest.mark.parametrize("true_rate", [250.0, 1000.0])
def test_a_stream_delivering_another_rate_than_announced_restarts(model, recording, true_rate):
    volts, names = recording
    engine = StreamingEngine(model)
    engine.add_stream("s", names, 500)
    restarts, windows = [], []
    for i in range(0, volts.shape[1], 250):  # timestamps tell the truth: true_rate samples per second
        chunk = volts[:, i : i + 250]
        engine.push("s", chunk, T0 + (i + np.arange(chunk.shape[1])) / true_rate)
        result = engine.advance()
        restarts += result.restarts
        windows += result.windows
    assert restarts and all("announces 500 Hz" in r.reason for r in restarts)
    assert f"arrive at {true_rate:.1f} Hz" in restarts[0].reason
    assert windows == []  # restarted every few seconds: never a full window of such a stream


def test_rate_jitter_within_tolerance_is_accepted_and_the_check_can_be_off(model, recording):
    volts, names = recording
    rng = np.random.default_rng(0)
    # 2 % fast, and every chunk's timestamps late by up to 30 ms, as pushes from a real headset are
    late = np.repeat(rng.uniform(0, 0.03, volts.shape[1] // 250 + 1), 250)[: volts.shape[1]]
    stamps = np.maximum.accumulate(T0 + np.arange(volts.shape[1]) / 510.0 + late)  # the inlet monotonizes
    engine = StreamingEngine(model)
    engine.add_stream("s", names, 500)
    restarts = []
    for i in range(0, volts.shape[1], 250):
        engine.push("s", volts[:, i : i + 250], stamps[i : i + 250])
        restarts += engine.advance().restarts
    assert restarts == []
    fast = StreamingEngine(model, EXACT)  # a replay at twice real time, the check off
    fast.add_stream("s", names, 500)
    windows = feed(fast, "s", volts, 1000.0, [250])
    assert len(windows) > 10 and all(w.ok for w in windows)


def test_windows_wait_for_the_rate_to_be_confirmed(model, recording):
    """With the rate check on, the window at 4 s is withheld; from 5 s on, the same windows."""
    volts, names = recording
    checked = StreamingEngine(model)
    checked.add_stream("s", names, 500)
    windows = feed(checked, "s", volts, 500, [100])
    expected = offline(model, volts, names, 500)
    assert [w.end for w in windows] == list(range(1000, 200 * 20 + 1, 200))
    assert np.abs(np.stack([w.embedding for w in windows]) - expected[1:]).max() <= 1e-4


def test_small_chunks_are_preprocessed_once_a_hop_yet_windows_come_as_soon_as_due(
    model, recording, monkeypatch
):
    """Pushed a few samples at a time, as a live inlet delivers them, a stream is pre-processed only when a
    hop of samples waits (small chunks cost as much as large ones), and still each window comes out of the
    first advance after the push that completed it."""
    from neuroauth.models import preprocess as preprocess_module

    volts, names = recording
    rate, chunk = 256, 5
    volts = signal.resample_poly(volts, rate, 500, axis=1)[:, : rate * 10]
    calls = []
    stages = preprocess_module.Preprocessor.stages
    monkeypatch.setattr(
        preprocess_module.Preprocessor, "stages", lambda self, x: calls.append(1) or stages(self, x)
    )
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("s", names, rate)
    pushed_when = []  # input samples pushed when each window came out
    for i in range(0, volts.shape[1], chunk):
        stop = min(i + chunk, volts.shape[1])
        engine.push("s", volts[:, i:stop], T0 + np.arange(i, stop) / rate)
        pushed_when += [stop for _ in engine.advance().windows]
    ends = np.arange(800, 800 + 200 * len(pushed_when), 200)  # model-rate samples at each window's end
    needed = np.ceil(ends * rate / 200)  # input samples a window's end needs, at the least
    assert len(pushed_when) == 7
    assert (np.array(pushed_when) - needed < chunk + 3).all(), list(zip(pushed_when, needed, strict=True))
    pushes = -(-volts.shape[1] // chunk)
    assert len(calls) <= volts.shape[1] / rate + 2 < pushes / 20, (len(calls), pushes)


def test_an_offset_moves_a_streams_windows_within_the_hop_and_changes_nothing_else(model, recording):
    """Streams that start together are given offsets so that their windows, and the work, spread over the
    hop; a window of a stream with an offset is the offline window ending at the same sample."""
    from neuroauth.models.preprocess import sliding_windows

    volts, names = recording
    engine = StreamingEngine(model, EXACT)
    engine.add_stream("early", names, 500)
    engine.add_stream("late", names, 500, offset_seconds=0.25)
    windows = {"early": [], "late": []}
    for i in range(0, volts.shape[1], 20):  # 40 ms chunks, as an inlet delivers them
        for key in windows:
            engine.push(key, volts[:, i : i + 20], T0 + np.arange(i, min(i + 20, volts.shape[1])) / 500)
        for w in engine.advance().windows:
            windows[w.stream].append(w)
    early, late = (np.array([w.end for w in windows[k]]) for k in ("early", "late"))
    assert early[0] == 800 and late[0] == 850 and (np.diff(late) == 200).all()
    picks = resolve_montage(model.montage, names)
    y = denoise(model, preprocess(volts[picks], 500, model.spec))
    expected = embed(model.embedder, sliding_windows(y, 800, 200, start=50))
    got = np.stack([w.embedding for w in windows["late"]])
    assert len(got) == len(expected) and np.abs(got - expected).max() <= 1e-4
