"""Shared fixtures: the bundled recordings and a small model trained on them.

LSL is configured loopback-only here, before anything can load liblsl.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_LSL_CONFIG = """[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
AddressesOverride = {127.0.0.1}
TTLOverride = 0
[lab]
KnownPeers = {127.0.0.1}
"""
_cfg = Path(tempfile.gettempdir()) / f"neuroauth-tests-lsl-{os.getpid()}.cfg"
_cfg.write_text(_LSL_CONFIG)
os.environ["LSLAPICFG"] = str(_cfg)


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from neuroauth.cli import BUNDLED_DATA

    return BUNDLED_DATA


@pytest.fixture(scope="session")
def bundled_4ch(bundled_dir):
    """The five bundled subjects, default montage, loaded at the model rate."""
    from neuroauth.models.montage import DEFAULT_MONTAGE
    from neuroauth.models.preprocess import SignalSpec
    from neuroauth.training.data import find_sessions, load_sessions

    return load_sessions(find_sessions(bundled_dir), DEFAULT_MONTAGE, SignalSpec())


@pytest.fixture(scope="session")
def tiny_checkpoint(bundled_4ch, tmp_path_factory) -> Path:
    """A checkpoint trained for a few steps on the bundled data (fast, not good)."""
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
    from neuroauth.training.train import TrainOptions, train

    options = TrainOptions(
        stage1=DenoiserTraining(steps=6, batch=8, val_every=3, val_examples=16),
        search=SpectralSearch(pca_dims=(8, 16), shrinkages=(0.5,), splits=2),
        val_subjects=1,
    )
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train(bundled_4ch, options, out, resume=False, progress=False)
    return out
