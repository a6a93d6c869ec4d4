"""LSL sample buffers at volume through the inlet's conversion to volts and into the engine.

:meth:`EegInlet.pull` runs over a stand-in for ``pylsl.StreamInlet`` that fills the buffer it is
handed as liblsl does, so every channel format, value and timestamp is tried without LSL traffic.
The volts are what the inlet's units say, and the engine refuses or handles them.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from address_space import capped_address_space
from factories import make_model
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from neuroauth.daemon.inlet import EegInlet, unit_scale
from neuroauth.models.streaming import EngineConfig, StreamingEngine
from properties import examples

NAMES = ["Fp1", "T7", "F8", "Cz", "P4", "O1"]  # the stream's channels: the montage and two more
LSL_DTYPES = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64]  # pylsl's channel formats


@pytest.fixture(scope="module")
def model():
    return make_model()


class FakeLslInlet:
    """Stands in for ``pylsl.StreamInlet``: ``pull_chunk`` fills the buffer it is given, as liblsl does."""

    def __init__(self, samples: np.ndarray, stamps: list[float]) -> None:
        self.samples, self.stamps = samples, stamps

    def pull_chunk(self, timeout: float = 0.0, max_samples: int = 1024, dest_obj=None):
        n = min(max_samples, len(self.stamps))
        dest_obj[:n] = self.samples[:n]
        stamps, self.samples, self.stamps = self.stamps[:n], self.samples[n:], self.stamps[n:]
        return None, stamps


def inlet_over(samples: np.ndarray, stamps: list[float], units: list[str]) -> EegInlet:
    """An :class:`EegInlet` as its constructor leaves it, reading from :class:`FakeLslInlet`."""
    inlet = EegInlet.__new__(EegInlet)
    inlet.name, inlet.source_id = "fake", "fake-1"
    inlet.channel_count = samples.shape[1]
    inlet.scale = np.array([unit_scale(u) for u in units])
    inlet._dtype = samples.dtype.type
    inlet._inlet = FakeLslInlet(samples, stamps)
    inlet._lock = threading.Lock()
    inlet._buffer = np.empty((0, inlet.channel_count), dtype=inlet._dtype)
    inlet._last_sample_at = 0.0
    inlet.samples_received = 0
    return inlet


units = st.sampled_from(["V", "mV", "uV", "µV", "microvolts", "nanovolt"])


@st.composite
def lsl_buffers(draw) -> tuple[np.ndarray, list[float], list[str]]:
    dtype = draw(st.sampled_from(LSL_DTYPES))
    n = draw(st.integers(0, 40))
    samples = draw(
        hnp.arrays(dtype, (n, len(NAMES)), elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True))
    )
    stamps = draw(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n))
    return samples, stamps, draw(st.lists(units, min_size=len(NAMES), max_size=len(NAMES)))


@examples(150)
@given(buffer=lsl_buffers())
def test_lsl_samples_of_every_format_become_volts_the_engine_refuses_or_handles(model, buffer):
    samples, stamps, channel_units = buffer
    inlet = inlet_over(samples, stamps, channel_units)
    volts, timestamps = inlet.pull(max_samples=64)
    assert volts.dtype == np.float64 and volts.shape == (len(NAMES), len(stamps))
    scale = np.array([unit_scale(u) for u in channel_units])[:, None]
    np.testing.assert_array_equal(volts, samples.T.astype(np.float64) * scale)
    engine = StreamingEngine(model, EngineConfig(rate_tolerance=None))
    engine.add_stream("s", NAMES, 250.0)
    with capped_address_space():
        engine.push("s", volts, timestamps)
        outcome = engine.advance()
    finite = timestamps[np.isfinite(timestamps)]
    latest = float(finite.max()) if finite.size else -math.inf
    for window in outcome.windows:  # as the engine's own tests check in full
        assert math.isfinite(window.timestamp) and window.timestamp <= latest + 1.0
        assert window.problems if window.embedding is None else np.isfinite(window.embedding).all()


@examples(200)
@given(
    unit=st.text(max_size=12) | st.sampled_from(["V", "mV", "uV", "µV", "μV", "nV", " Volts ", "MV", "uv"])
)
def test_any_unit_is_a_voltage_factor_or_none(unit):
    factor = unit_scale(unit)
    assert factor is None or factor in (1.0, 1e-3, 1e-6, 1e-9)
