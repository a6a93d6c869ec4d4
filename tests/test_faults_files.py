"""Hostile and damaged files meet the daemon: refused by name with the fix, nothing in them run.

The library-level refusals are tested beside the code (tests/models/test_checkpoint.py,
tests/enroll/test_store.py, tests/daemon/test_config.py). Here ``neuroauthd`` runs as a
real subprocess (``python -m neuroauth.daemon.main``) against such files: every case
with ``--validate-config``, and the service itself with a hostile checkpoint, with all
the bad templates at once and with a bad configuration (the service loads its files
through the same code as the validation, before anything else). Its MQTT broker
address is a listening socket of the test, so "it refused before connecting" is
checked, not assumed; a control test shows that the same socket sees the daemon
connect when the files are good.
Pickled files carry an object whose unpickling would create a marker file: the
marker must not appear, and a control unpickles the same bytes without restriction
to show that it would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_template
from neuroauth.daemon.lslconfig import loopback_env
from neuroauth.enroll.store import TemplateStore
from neuroauth.enroll.template import FORMAT_VERSION
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.denoiser import DenoiserConfig
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.data import Recording
from neuroauth.training.denoiser_training import DenoiserTraining, train_denoiser

from neuroauth.paths import SHIPPED_CHECKPOINT

DAEMON_TIMEOUT = 60.0  # seconds; generous (a refusal takes a few), the machine may be busy
STARTING = "neuroauthd starting"  # logged once the checkpoint and templates are loaded


class WritesMarker:
    """Unpickling this calls ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@dataclass(frozen=True)
class Shipped:
    identity: str
    dim: int
    payload: dict  # the checkpoint file's plain containers, to derive damaged copies from


@pytest.fixture(scope="module")
def shipped() -> Shipped:
    model = load_checkpoint(SHIPPED_CHECKPOINT)
    payload = torch.load(SHIPPED_CHECKPOINT, map_location="cpu", weights_only=True)
    return Shipped(model.identity(), model.embedder.dim, payload)


def resign(path: Path, edit) -> None:
    """Edit a template's content and write a matching digest and signature (as a faulty writer holding the
    installation key would): the file is consistent, its arrays are not."""
    from neuroauth.enroll.template_key import default_key_file, load_key, sign

    document = json.loads(path.read_text())
    content = json.loads(document["content"])
    edit(content)
    document["content"] = json.dumps(content)
    document["sha256"] = hashlib.sha256(document["content"].encode()).hexdigest()
    document["hmac_sha256"] = sign(load_key(default_key_file(path.parent)), document["content"])
    path.write_text(json.dumps(document))


class Broker:
    """A listening socket on 127.0.0.1 where the daemon's MQTT broker would be; records connections."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.port = self.socket.getsockname()[1]

    def connected(self, wait: float = 0.0) -> bool:
        """Whether a client has connected (waiting up to ``wait`` seconds for one)."""
        if wait > 0:
            self.socket.settimeout(wait)
        else:
            self.socket.setblocking(False)
        try:
            client, _ = self.socket.accept()
        except (BlockingIOError, TimeoutError):
            return False
        client.close()
        return True

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def broker():
    b = Broker()
    yield b
    b.close()


@pytest.fixture
def daemon_env(tmp_path) -> dict[str, str]:
    """This environment without any NEUROAUTH_* or systemd variable, loopback-only LSL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("NEUROAUTH_") and k not in ("STATE_DIRECTORY", "NOTIFY_SOCKET")
    }
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # on a busy machine, threads waiting for a core slow small work a lot
    return loopback_env(env)


def write_config(
    tmp_path: Path, port: int, checkpoint: Path, templates: Path, users: list[str], name: str = "c.toml"
) -> Path:
    lines = [
        f'[model]\ncheckpoint = "{checkpoint}"',
        f'[templates]\ndirectory = "{templates}"',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}',
    ]
    for i, user in enumerate(users):
        lines.append(
            f'[[headsets]]\ndevice = "eeg{i}"\nuser = "{user}"\nstream = {{ source_id = "src-{i}" }}'
        )
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        command = " ".join(self.argv)
        return f"$ {command}\nexit status {self.returncode}\nstdout:\n{self.stdout}stderr:\n{self.stderr}"


def run_daemons(configs: list[tuple[Path, bool]], env: dict[str, str]) -> list[Run]:
    """Run ``neuroauthd --config C [--validate-config]`` for each ``(C, validate)``, concurrently."""
    started = []
    for config, validate in configs:
        argv = [sys.executable, "-m", "neuroauth.daemon.main", "--config", str(config)]
        argv += ["--validate-config"] if validate else []
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        started.append((argv, process))
    runs = []
    for argv, process in started:
        try:
            out, err = process.communicate(timeout=DAEMON_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            pytest.fail(
                f"neuroauthd did not exit within {DAEMON_TIMEOUT:g} s:\n{err.decode(errors='replace')}"
            )
        runs.append(
            Run(argv[2:], process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
        )
    return runs


def assert_refused(run: Run, broker: Broker, *expected: str) -> None:
    """Exit status 2, every ``expected`` text in stderr, and the service never started."""
    assert run.returncode == 2, run
    missing = [text for text in expected if text not in run.stderr]
    assert not missing, f"not in the daemon's message: {missing}\n{run}"
    assert STARTING not in run.stderr, f"the daemon started:\n{run}"
    assert not broker.connected(), f"the daemon connected to the broker before refusing:\n{run}"


# Controls ------------------------------------------------------------------------------


@pytest.mark.slow
def test_with_good_files_the_daemon_validates_and_connects(tmp_path, shipped, broker, daemon_env):
    """Without this, the refusals below could come from a broken set-up rather than from the files."""
    templates = tmp_path / "templates"
    TemplateStore(templates).save(make_template("alice", shipped.identity, shipped.dim))
    config = write_config(tmp_path, broker.port, SHIPPED_CHECKPOINT, templates, ["alice"])
    argv = [sys.executable, "-m", "neuroauth.daemon.main", "--config", str(config)]
    log = tmp_path / "daemon.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            argv, env=daemon_env, stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL
        )
    try:
        (validated,) = run_daemons([(config, True)], daemon_env)
        connected = broker.connected(wait=DAEMON_TIMEOUT)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    assert validated.returncode == 0 and "is valid: eeg0 (owner alice)" in validated.stdout, validated
    assert connected, f"the daemon never connected to its broker:\n{log.read_text(errors='replace')}"
    assert STARTING in log.read_text(errors="replace")


# Checkpoints ---------------------------------------------------------------------------


def pickled_checkpoint(shipped: Shipped, path: Path, marker: Path) -> None:
    torch.save(dict(shipped.payload, extra=WritesMarker(marker)), path)


def truncated_checkpoint(shipped: Shipped, path: Path, marker: Path) -> None:
    data = SHIPPED_CHECKPOINT.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def reshaped_checkpoint(shipped: Shipped, path: Path, marker: Path) -> None:
    from neuroauth.models.checkpoint import _digest

    tensors = dict(shipped.payload["tensors"])
    tensors["denoiser.inp.weight"] = torch.zeros(3, 3, 3)
    # its digest recomputed, as whoever edits a file can: the shapes are checked all the same
    identity = _digest(json.loads(shipped.payload["config"]), tensors)
    torch.save(dict(shipped.payload, tensors=tensors, identity=identity), path)


def future_checkpoint(shipped: Shipped, path: Path, marker: Path) -> None:
    torch.save(dict(shipped.payload, format_version=2), path)


CHECKPOINTS = {
    # case: (how to make it, what the message says, the fix it gives)
    "pickled-object": (
        pickled_checkpoint,
        "holds pickled objects",
        "Use a checkpoint written by `neuroauth train`",
    ),
    "truncated": (truncated_checkpoint, "is damaged or truncated", "restore it or train again"),
    "wrong-shapes": (
        reshaped_checkpoint,
        "wrong shape: denoiser.inp.weight",
        "Retrain it with `neuroauth train`",
    ),
    "format-version-2": (
        future_checkpoint,
        "has format version 2",
        "Retrain it with this version (`neuroauth train`)",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_a_bad_checkpoint_stops_the_daemon_before_it_connects(case, tmp_path, shipped, broker, daemon_env):
    make, reason, fix = CHECKPOINTS[case]
    checkpoint, marker = tmp_path / f"{case}.pt", tmp_path / "code-ran"
    make(shipped, checkpoint, marker)
    templates = tmp_path / "templates"
    TemplateStore(templates).save(make_template("alice", shipped.identity, shipped.dim))
    config = write_config(tmp_path, broker.port, checkpoint, templates, ["alice"])

    modes = [True, False] if case == "pickled-object" else [True]
    for run in run_daemons([(config, validate) for validate in modes], daemon_env):
        assert_refused(run, broker, f"model.checkpoint: checkpoint {checkpoint} ", reason, fix)
    assert not marker.exists(), "loading the checkpoint ran code from it"
    if case == "pickled-object":  # the same bytes do run code when unpickled without restriction
        torch.load(checkpoint, weights_only=False)
        assert marker.exists()


# Templates -----------------------------------------------------------------------------


def pickled_template(path: Path, marker: Path, shipped: Shipped) -> None:
    path.write_bytes(pickle.dumps(WritesMarker(marker)))


def truncated_template(path: Path, marker: Path, shipped: Shipped) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def reshaped_template(path: Path, marker: Path, shipped: Shipped) -> None:
    def drop_a_column(content: dict) -> None:
        spec = content["arrays"]["support_vectors"]
        rows, cols = spec["shape"]
        array = np.frombuffer(base64.b64decode(spec["base64"]), "<f8").reshape(rows, cols)[:, :-1]
        spec["shape"] = [rows, cols - 1]
        spec["base64"] = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()

    resign(path, drop_a_column)


def future_template(path: Path, marker: Path, shipped: Shipped) -> None:
    document = json.loads(path.read_text())
    document["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(document))


def extreme_template(path: Path, marker: Path, shipped: Shipped) -> None:
    def extreme(content: dict) -> None:  # finite, consistent, signed: and it would overflow every score
        content["fusion"]["cosine_std"] = 1e308

    resign(path, extreme)


def other_dimension_template(path: Path, marker: Path, shipped: Shipped) -> None:
    user = path.name.removesuffix(".template.json")  # it names the right checkpoint, but is not of it
    TemplateStore(path.parent).save(make_template(user, shipped.identity, shipped.dim + 3))


def other_checkpoint_template(path: Path, marker: Path, shipped: Shipped) -> None:
    user = path.name.removesuffix(".template.json")
    TemplateStore(path.parent).save(make_template(user, "0123456789abcdef", shipped.dim))


def edited_template(path: Path, marker: Path, shipped: Shipped) -> None:
    document = json.loads(path.read_text())
    assert '"n_windows": 40' in document["content"]
    document["content"] = document["content"].replace('"n_windows": 40', '"n_windows": 4000')
    path.write_text(json.dumps(document))


TEMPLATES = {
    # user: (how to damage their template, what the message says, the fix it gives)
    "pickled": (
        pickled_template,
        "is damaged or truncated",
        "enroll again (`neuroauth enroll --user pickled`)",
    ),
    "truncated": (
        truncated_template,
        "is damaged or truncated",
        "enroll again (`neuroauth enroll --user truncated`)",
    ),
    "reshaped": (
        reshaped_template,
        "array shapes disagree",
        "enroll again (`neuroauth enroll --user reshaped`)",
    ),
    "future": (
        future_template,
        f"has format version {FORMAT_VERSION + 1}",
        "Enroll again with this version (`neuroauth enroll --user future`)",
    ),
    "other-checkpoint": (
        other_checkpoint_template,
        "was made with checkpoint 0123456789abcdef",
        "Enroll again with this checkpoint (`neuroauth enroll --user other-checkpoint`)",
    ),
    "edited": (edited_template, "does not match its SHA-256 digest", "`neuroauth enroll --user edited`"),
    "extreme": (
        extreme_template,
        "parameters out of range",
        "enroll again (`neuroauth enroll --user extreme`)",
    ),
    "other-dimension": (
        other_dimension_template,
        "embeddings but the checkpoint's embedder makes",
        "enroll again (`neuroauth enroll --user other-dimension`)",
    ),
}


@pytest.mark.slow
def test_bad_templates_stop_the_daemon_each_named_with_its_fix(tmp_path, shipped, broker, daemon_env):
    templates, marker = tmp_path / "templates", tmp_path / "code-ran"
    store = TemplateStore(templates)
    users = list(TEMPLATES)
    for user, (damage, _, _) in TEMPLATES.items():
        damage(store.save(make_template(user, shipped.identity, shipped.dim)), marker, shipped)
    config = write_config(tmp_path, broker.port, SHIPPED_CHECKPOINT, templates, users)

    for run in run_daemons([(config, True), (config, False)], daemon_env):
        assert f"({len(users)} problem(s))" in run.stderr, run
        for i, (user, (_, reason, fix)) in enumerate(TEMPLATES.items()):
            line = next(
                (x for x in run.stderr.splitlines() if x.strip().startswith(f"headsets.{i}.user:")), ""
            )
            assert str(store.path(user)) in line and reason in line and fix in line, (user, line, str(run))
        assert_refused(run, broker)
    assert not marker.exists(), "loading a template ran code from it"
    pickle.loads(store.path("pickled").read_bytes())  # the same bytes do run code when unpickled
    assert marker.exists()


# The training state --------------------------------------------------------------------


def test_a_pickled_training_state_is_refused_without_running_it(tmp_path):
    """`neuroauth train` resumes from ``<out>.partial``, a file that someone else could have planted."""
    partial, marker = tmp_path / "model.pt.partial", tmp_path / "code-ran"
    torch.save({"fingerprint": "x", "model": WritesMarker(marker)}, partial)
    rng = np.random.default_rng(0)
    spec = SignalSpec()
    recordings = [Recording("s0", tmp_path / "s0.edf", 20e-6 * rng.standard_normal((4, 2000)), spec)]
    settings = DenoiserTraining(steps=2, batch=2, val_examples=2)
    with pytest.raises(ValueError) as caught:
        train_denoiser(
            recordings,
            recordings,
            spec,
            DenoiserConfig(use_mamba=False),
            settings,
            0,
            partial,
            progress=False,
        )
    assert str(caught.value) == (
        f"the saved training state {partial} cannot be read (UnpicklingError); delete it to start afresh, "
        "or pass --no-resume"
    )
    assert not marker.exists(), "loading the training state ran code from it"
    torch.load(partial, weights_only=False)  # the same bytes do run code when unpickled without restriction
    assert marker.exists()


# The configuration ---------------------------------------------------------------------


def test_a_bad_config_stops_the_daemon_listing_every_key(tmp_path, broker, daemon_env):
    secret = tmp_path / "no-such-password"
    config = tmp_path / "bad.toml"
    config.write_text(
        'colour = "blue"\n'
        '[model]\nhop_seconds = "fast"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nhots = "broker"\n'
        f'username = "neuroauthd"\npassword_file = "{secret}"\n'
        '[[headsets]]\ndevice = "eeg0"\nuser = "alice"\nresolve_timeout_s = "soon"\n'
    )
    expected = [
        "  colour: unknown key",
        "  model.hop_seconds: Input should be a valid number",
        "  mqtt.hots: unknown key; the keys here are ",
        f"  mqtt.password_file: password file {secret} does not exist",
        "  headsets.0.resolve_timeout_s: Input should be a valid number",
    ]
    validated, started = run_daemons([(config, True), (config, False)], daemon_env)
    # checking only also looks for the owner's template, which nobody enrolled
    assert_refused(validated, broker, f"{config} is invalid (6 problem(s))", *expected, "  headsets.0.user: ")
    assert_refused(started, broker, f"{config} is invalid (5 problem(s))", *expected)
