"""The benchmark's own logic (its figures come from `neuroauth bench`, not from tests)."""

from __future__ import annotations

import pytest
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.montage import DEFAULT_MONTAGE
from neuroauth.models.preprocess import SignalSpec
from neuroauth.models.streaming import StreamingEngine
from neuroauth.training.data import find_sessions, load_recording

from neuroauth.bench import largest_passing, stream_equivalence


@pytest.mark.parametrize("capacity", [0, 7, 8, 100, 1000])
def test_largest_passing_finds_the_capacity_within_six_percent(capacity):
    calls = []

    def passes(n):
        calls.append(n)
        return n <= capacity

    found = largest_passing(passes)
    assert found <= capacity
    assert capacity - found <= max(1, capacity // 16) or (capacity < 8 and found == 0)
    assert len(calls) < 20


def test_stream_equivalence_on_real_eeg_within_1e5(bundled_dir):
    from neuroauth.paths import SHIPPED_CHECKPOINT

    model = load_checkpoint(SHIPPED_CHECKPOINT)
    rec = load_recording(find_sessions(bundled_dir)[0].probe, DEFAULT_MONTAGE, SignalSpec())
    errors = stream_equivalence(model, rec.preprocessed()[:, :2000])
    assert set(errors) == {"mamba", "no_mamba"}
    assert max(errors.values()) <= 1e-5


def test_state_bytes_counts_each_streams_buffers():
    from neuroauth.paths import SHIPPED_CHECKPOINT

    model = load_checkpoint(SHIPPED_CHECKPOINT)
    engine = StreamingEngine(model)
    engine.add_stream("a", model.montage, 200)
    one = engine.state_bytes()
    ring = 3 * 4 * engine.ring_capacity * 4  # raw, filtered, denoised float32
    assert ring < one < ring + 200_000
    engine.add_stream("b", model.montage, 200)
    assert engine.state_bytes() == 2 * one
