"""Chunks at volume into the streaming engine: any shape, dtype, value or timestamps is refused with
a :class:`NeuroAuthError` or handled (a restart, a refused window), never another exception.

Below LSL: chunks go to :meth:`StreamingEngine.push` as the daemon hands them over from the inlet
(volts ``(C, N)``, timestamps ``(N,)``); ``tests/daemon/test_inlet_properties.py`` feeds it through
the inlet's conversion. Every run is capped in address space (``address_space.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from address_space import capped_address_space
from factories import make_model
from hypothesis import event, example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from neuroauth.models.streaming import EngineConfig, StreamingEngine
from properties import examples

from neuroauth.errors import NeuroAuthError, StreamError

MONTAGE = ("T7", "F8", "Cz", "P4")
NAMES = ["Fp1", "T7", "F8", "Cz", "P4", "O1"]  # the stream's channels: the montage and two more


@pytest.fixture(scope="module")
def model():
    return make_model()


# -- chunks of any shape and dtype

LSL_DTYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64]  # pylsl's channel formats
dtypes = st.sampled_from([*LSL_DTYPES, np.float16, np.uint8, np.uint64, np.bool_])
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8) | st.sampled_from(
    [(6, 0), (0, 5), (6, 1), (5, 10), (7, 10), (6, 300), (10, 6), (1, 6)]
)


@st.composite
def arrays(draw, shape=shapes) -> np.ndarray:
    dtype = draw(dtypes)
    return draw(hnp.arrays(dtype, draw(shape), elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True)))


@examples(150)
@given(volts=arrays(), timestamps=arrays())
def test_a_chunk_of_any_shape_and_dtype_is_refused_or_queued(model, volts, timestamps):
    engine = StreamingEngine(model, EngineConfig(rate_tolerance=None))
    engine.add_stream("s", NAMES, 250.0)
    with capped_address_space():
        try:
            engine.push("s", volts, timestamps)
        except StreamError as exc:
            assert "'s'" in str(exc)
            assert volts.ndim != 2 or volts.shape[0] != len(NAMES) or timestamps.shape != volts.shape[1:]
        outcome = engine.advance()
    finite = timestamps[np.isfinite(timestamps.astype(np.float64))]
    assert_handled(outcome, float(finite.max()) if finite.size else -math.inf)
    assert engine.pending_samples()["s"] <= math.ceil(engine.config.max_backlog_seconds * 250.0)


def assert_handled(outcome, latest: float) -> None:
    """Each window is scored from finite numbers or refused with its problems, stamped with a finite
    time no later than the latest sample received; each restart says why."""
    for window in outcome.windows:
        assert math.isfinite(window.timestamp) and window.timestamp <= latest + 1.0, window.timestamp
        if window.embedding is None:
            assert window.problems
        else:
            assert not window.problems and np.isfinite(window.embedding).all()
            assert abs(np.linalg.norm(window.embedding) - 1.0) < 1e-3
    for restart in outcome.restarts:
        assert restart.reason and restart.stream


# -- a stream's life: chunks of samples with faults, timestamps with faults

RATES = st.sampled_from([128.0, 200.0, 250.0, 256.0, 500.0])
faults = st.sampled_from(["nan", "inf", "huge", "flat", "rail", "none", "none", "none"])
clock_faults = st.sampled_from(
    ["back", "duplicate", "still", "jump", "future", "nan", "inf", "huge", "none", "none", "none"]
)


@st.composite
def chunks(draw) -> list[tuple[int, str, str]]:
    """(samples, sample fault, timestamp fault) for each chunk of a stream."""
    n = st.integers(0, 700) | st.sampled_from([1, 250, 256, 2500])
    return draw(st.lists(st.tuples(n, faults, clock_faults), min_size=1, max_size=8))


def chunk(rng: np.random.Generator, n: int, fault: str, channels: int) -> np.ndarray:
    volts = rng.normal(0.0, 20e-6, (channels, n))  # EEG-like: tens of microvolts
    if n and fault != "none":
        i, c = int(rng.integers(n)), int(rng.integers(channels))
        value = {"nan": np.nan, "inf": -np.inf, "huge": 1e12, "flat": 0.0, "rail": 0.1}[fault]
        if fault in ("flat", "rail"):
            volts[c, i:] = value
        else:
            volts[c, i] = value
    return volts


def stamps(rng: np.random.Generator, t0: float, n: int, rate: float, fault: str) -> tuple[np.ndarray, int]:
    """Timestamps of ``n`` samples from ``t0``, and the index where ``fault`` starts."""
    ts = t0 + np.arange(n) / rate
    i = int(rng.integers(n)) if n else 0
    if n and fault != "none":
        if fault == "back":
            ts[i:] -= 0.5
        elif fault == "duplicate":
            ts[i:] = ts[i]
        elif fault == "still":
            ts[:] = t0
        elif fault == "jump":
            ts[i:] += 3.0
        elif fault == "future":
            ts[i:] += 3600.0
        elif fault == "huge":
            ts[i:] = 1e300
        else:
            ts[i] = np.nan if fault == "nan" else np.inf
    return ts, i


@pytest.mark.slow
@examples(120)
@given(plan=chunks(), rate=RATES, seed=st.integers(0, 2**32 - 1), check_rate=st.booleans())
@example(
    plan=[(2500, "none", "none"), (10, "none", "nan"), (1500, "none", "none")],
    rate=250.0,
    seed=0,
    check_rate=False,
)
def test_a_stream_with_faults_restarts_or_is_scored_never_raises(model, plan, rate, seed, check_rate):
    rng = np.random.default_rng(seed)
    engine = StreamingEngine(model, EngineConfig(rate_tolerance=0.05 if check_rate else None))
    engine.add_stream("s", NAMES, rate)
    t0, latest, last = 1000.0, -math.inf, math.nan  # last: the previous chunk's last timestamp
    for n, fault, clock in plan:
        volts = chunk(rng, n, fault, len(NAMES))
        ts, at = stamps(rng, t0, n, rate, clock)
        with capped_address_space():
            engine.push("s", volts, ts)
            outcome = engine.advance()
        finite = ts[np.isfinite(ts)]
        latest = max(latest, float(finite.max()) if finite.size else latest)
        assert_handled(outcome, latest)
        for window in outcome.windows:
            event("a window scored" if window.ok else "a window refused")
        if outcome.restarts:
            event("a restart")
        picked = volts[[NAMES.index(name) for name in MONTAGE]]
        if not np.isfinite(picked).all() or np.abs(picked).max(initial=0.0) > 0.2:
            assert outcome.restarts, f"a {fault} sample passed without a restart"
        if clock in ("back", "jump", "future") and n and (at > 0 or math.isfinite(last)):
            assert outcome.restarts, f"timestamps that {clock} passed without a restart"
        assert engine.pending_samples()["s"] <= math.ceil(engine.config.max_backlog_seconds * rate)
        if n:
            last = float(ts[-1])
        t0 = last + 1.0 / rate if math.isfinite(last) and last < 1e12 else t0 + n / rate


# -- streams that announce anything


names = st.lists(st.text(max_size=6) | st.sampled_from([*MONTAGE, "EEG T3", "cz", "T7-REF", ""]), max_size=8)
announced_rates = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -250.0, 5e-324, 1e-300, 0.001, 0.5, 1.0, 100.3, 333.3333, 20_000.0, 1e12]
)


@examples(150)
@given(channels=names, rate=announced_rates)
@example(channels=["T7", "F8", "Cz", "P4"], rate=0.001)  # found: ValueError at every advance
@example(channels=["T7", "F8", "Cz", "P4"], rate=2.2250738585e-313)  # found: OverflowError
def test_a_stream_announcing_any_channels_and_rate_is_refused_or_served(model, channels, rate):
    engine = StreamingEngine(model, EngineConfig(rate_tolerance=None))
    with capped_address_space():
        try:
            engine.add_stream("s", channels, rate)
        except NeuroAuthError as exc:
            assert "'s'" in str(exc)
            return
        n = max(1, min(int(rate * 5), 2000))  # up to 5 s of samples
        engine.push("s", np.zeros((len(channels), n)) + 1e-5, 1000.0 + np.arange(n) / rate)
        outcome = engine.advance()
    assert_handled(outcome, 1000.0 + n / rate)
