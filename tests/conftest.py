"""Shared fixtures: the bundled recordings and a small model trained on them.

LSL is configured loopback-only here, before anything can load liblsl.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from neuroauth.daemon.lslconfig import loopback_config_path  # imports pylsl, loads no liblsl config

from neuroauth import local_broker

# Every test and every process a test starts stays on 127.0.0.1, whatever the environment says.
os.environ["LSLAPICFG"] = str(loopback_config_path())


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from neuroauth.paths import BUNDLED_DATA

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


# A real MQTT broker ------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path_factory):
    """Start real brokers: ``broker = mosquitto()``, ``mosquitto(users={"name": "password"}, acl=path)``
    or ``mosquitto(tls=(certfile, keyfile))`` for a TLS listener.

    Each broker listens on its own free 127.0.0.1 port; all are stopped at teardown.
    """
    binary = local_broker.find()
    if binary is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    brokers: list[local_broker.LocalBroker] = []

    def start(
        users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None, acl: Path | None = None
    ) -> local_broker.LocalBroker:
        workdir = tmp_path_factory.mktemp("mosquitto")
        password_file = None
        if users:
            tool = local_broker.find(local_broker.MOSQUITTO_PASSWD)
            if tool is None:
                pytest.skip("mosquitto_passwd is not installed (it comes with the mosquitto package)")
            password_file = workdir / "passwd"
            password_file.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run([tool, "-b", str(password_file), name, password], check=True)
        broker = local_broker.LocalBroker(
            binary, workdir, password_file, tls, log_everything=True, acl_file=acl
        )
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()
