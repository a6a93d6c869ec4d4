"""Interrupted work loses nothing: a good template or checkpoint survives SIGKILL and SIGTERM.

Real subprocesses, real signals: a template write stopped half-way through its
bytes, ``neuroauth enroll`` recording a live LSL stream (the replay of
tests/daemon/conftest.py), and ``neuroauth train`` with its ``<out>.partial``
resume state. Every subprocess inherits the loopback-only LSL configuration
that tests/conftest.py puts in the environment.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from factories import make_template
from neuroauth.daemon.lslconfig import loopback_env
from neuroauth.enroll.store import TemplateStore
from neuroauth.enroll.template_key import load_key
from neuroauth.models.checkpoint import load_checkpoint

from neuroauth.atomic import temporaries_of
from neuroauth.paths import BUNDLED_DATA, SHIPPED_CHECKPOINT

TIMEOUT = 120.0  # seconds to wait for a subprocess to reach a moment; generous, the machine may be busy


def _replay_factory() -> type:
    """The replay of tests/daemon/conftest.py (a fixture there, so loaded from its file here)."""
    path = Path(__file__).parent / "daemon" / "conftest.py"
    spec = importlib.util.spec_from_file_location("neuroauth_tests_daemon_replay", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReplayFactory


class Child:
    """A subprocess whose stdout and stderr go to files that the test reads while it runs."""

    def __init__(self, argv: list[str], workdir: Path, name: str) -> None:
        self.argv = argv
        self.out, self.err = workdir / f"{name}.out", workdir / f"{name}.err"
        env = loopback_env(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["OMP_NUM_THREADS"] = "1"  # on a busy machine, threads waiting for a core slow small work a lot
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)

    def output(self) -> tuple[str, str]:
        return self.out.read_text(errors="replace"), self.err.read_text(errors="replace")

    def report(self) -> str:
        out, err = self.output()
        command = " ".join(self.argv[1:])
        status = self.process.poll()
        return f"$ {command}\nexit status {status}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"

    def wait_for(self, pattern: str, in_stderr: bool = False, condition=None) -> re.Match | None:
        """Poll until ``pattern`` appears (in stdout, or stderr) or ``condition()`` holds."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            text = self.output()[1 if in_stderr else 0]
            match = re.search(pattern, text) if pattern else None
            if match or (condition is not None and condition()):
                return match
            if self.process.poll() is not None:
                pytest.fail(f"the process exited before {pattern or condition!r} was seen:\n{self.report()}")
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        pytest.fail(f"{pattern or condition!r} not seen within {TIMEOUT:g} s:\n{self.report()}")

    def stop(self, signum: int) -> int:
        """Send ``signum`` and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)
            pytest.fail(f"the process ignored signal {signal.Signals(signum).name}:\n{self.report()}")

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)
            pytest.fail(f"the process did not finish within {TIMEOUT:g} s:\n{self.report()}")


@pytest.fixture
def children():
    """Start subprocesses with ``children(argv, workdir, name)``; any still running at the end is killed."""
    started: list[Child] = []

    def start(argv: list[str], workdir: Path, name: str) -> Child:
        child = Child(argv, workdir, name)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(timeout=30)


@pytest.fixture(scope="module")
def shipped_identity() -> tuple[str, int]:
    model = load_checkpoint(SHIPPED_CHECKPOINT)
    return model.identity(), model.embedder.dim


# A template write stopped half-way (`neuroauth enroll` saves through TemplateStore.save) ------

#: Saves a template through TemplateStore.save, whose write stops half-way through the bytes.
SLOW_SAVE = """
import io, os, signal, sys, time
from pathlib import Path
from neuroauth.enroll import store as store_module
from neuroauth.enroll.template import Template
from neuroauth.enroll.template_key import load_key

directory, new, on_sigterm = sys.argv[1:]
if on_sigterm == "exit":  # as a program that turns SIGTERM into SystemExit would
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
store = store_module.TemplateStore(directory)
template = Template.from_bytes(Path(new).read_bytes(), new, load_key(store.key_file))
atomic_write = store_module.atomic_write

def half_then_wait(path, write, mode=None):
    def slow(handle):
        buffer = io.BytesIO()
        write(buffer)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        print("half written", flush=True)
        time.sleep(600)
        handle.write(data[len(data) // 2 :])

    atomic_write(path, slow, mode)

store_module.atomic_write = half_then_wait
store.save(template)
"""

WRITES = {
    # case: (signal, what the writer does on SIGTERM, exit status)
    "SIGKILL": (signal.SIGKILL, "default", -signal.SIGKILL),
    "SIGTERM": (signal.SIGTERM, "default", -signal.SIGTERM),
    "SIGTERM-as-exit": (signal.SIGTERM, "exit", 143),
}


@pytest.mark.parametrize("case", list(WRITES))
def test_a_template_write_killed_half_way_leaves_the_old_template(case, tmp_path, children):
    signum, on_sigterm, status = WRITES[case]
    store = TemplateStore(tmp_path / "templates")
    old, new = make_template("alice", "ckpt-a", 8, seed=0), make_template("alice", "ckpt-a", 8, seed=1)
    path = store.save(old)
    before = path.read_bytes()
    new_file = tmp_path / "new.template.json"
    key = load_key(store.key_file)
    new_file.write_bytes(new.to_bytes(key))

    writer = children(
        [sys.executable, "-c", SLOW_SAVE, str(store.directory), str(new_file), on_sigterm], tmp_path, "w"
    )
    writer.wait_for("half written")
    (tmp,) = temporaries_of(path)
    assert 0 < tmp.stat().st_size < len(new.to_bytes(key))
    # the writer is alive and holds its temporary file: a listing leaves it alone
    assert [e.user for e in store.list() if not e.damaged] == ["alice"]
    assert temporaries_of(path) == [tmp]

    assert writer.stop(signum) == status, writer.report()
    assert path.read_bytes() == before
    assert store.load("alice", expected_identity="ckpt-a").created == old.created
    if on_sigterm == "exit":  # interrupted by an exception: the write cleans up after itself
        assert temporaries_of(path) == [], writer.report()
        return
    assert temporaries_of(path) == [tmp]  # killed outright: nothing ran to remove it
    if signum == signal.SIGKILL:  # the next save of this user removes it
        store.save(new)
        assert store.load("alice").created == new.created
    else:  # and so does the next listing
        assert [e.user for e in store.list() if not e.damaged] == ["alice"]
        assert path.read_bytes() == before
    assert sorted(p.name for p in store.directory.iterdir()) == ["alice.template.json"]


# Enrollment from a live stream ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live_stream(tmp_path_factory):
    """One replayed recording (real time: the engine refuses a stream faster than its announced rate)."""
    factory = _replay_factory()("interrupted-enrollment", tmp_path_factory.mktemp("replay"))
    replay = factory(speed=1.0, loop=True)
    yield replay
    factory.close()


ENROLLMENTS = [
    pytest.param(signal.SIGKILL, "recording", id="SIGKILL-as-recording-starts"),
    pytest.param(signal.SIGKILL, "windows", id="SIGKILL-after-windows"),
    pytest.param(signal.SIGTERM, "windows", id="SIGTERM-after-windows"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "moment"), ENROLLMENTS)
def test_an_interrupted_enrollment_leaves_the_old_template(
    signum, moment, tmp_path, live_stream, shipped_identity, children
):
    identity, dim = shipped_identity
    store = TemplateStore(tmp_path / "templates")
    path = store.save(make_template("ana", identity, dim))
    before = path.read_bytes()
    argv = [sys.executable, "-m", "neuroauth.cli", "enroll", "--user", "ana", "--replace", "--duration", "20"]
    argv += ["--phases", "rest", "--no-wait"]
    argv += ["--source-id", live_stream.source_id, "--templates-dir", str(store.directory)]
    enrollment = children(argv, tmp_path, "enroll")
    enrollment.wait_for(r"recording 20 s from LSL stream")
    if moment == "windows":
        enrollment.wait_for(r"accepted=[1-9]", in_stderr=True)

    status = enrollment.stop(signum)
    assert status == (143 if signum == signal.SIGTERM else -signal.SIGKILL), enrollment.report()
    assert "template of ana written" not in enrollment.output()[0], enrollment.report()
    assert path.read_bytes() == before
    assert store.load("ana", expected_identity=identity).n_windows == 40
    assert sorted(p.name for p in store.directory.iterdir()) == ["ana.template.json"]
    if signum == signal.SIGTERM:
        err = enrollment.output()[1]
        assert re.search(r"neuroauth enroll: stopped by SIGTERM", err), enrollment.report()


# Training and its resume state ---------------------------------------------------------------


def load_partial(partial: Path) -> int:
    """The step a resume state was saved at; it must load as plain tensors and containers."""
    state = torch.load(partial, map_location="cpu", weights_only=True)
    assert {"fingerprint", "model", "optimizer", "step", "best_state"} <= set(state), sorted(state)
    return int(state["step"])


@pytest.mark.slow
def test_training_killed_then_terminated_resumes_and_completes(tmp_path, children):
    out = tmp_path / "model.pt"
    partial = out.with_name(out.name + ".partial")
    shutil.copyfile(SHIPPED_CHECKPOINT, out)  # a good checkpoint already in place
    good = out.read_bytes()
    command = [sys.executable, "-m", "neuroauth.cli", "-v", "train"]
    # 150 steps: the resume state is saved at step 100 and at the last step
    options = ["--steps", "150", "--batch", "2", "--cv-splits", "2", "--val-subjects", "1", "--no-mamba"]
    argv = [*command, "--data", str(BUNDLED_DATA), "--out", str(out), *options]

    def intact(run: Child) -> None:
        assert out.read_bytes() == good, f"{out} changed:\n{run.report()}"
        load_checkpoint(out)

    first = children(argv, tmp_path, "first")
    first.wait_for("", condition=partial.exists)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL, first.report()
    intact(first)
    saved = load_partial(partial)
    assert saved in (100, 150), saved

    second = children(argv, tmp_path, "second")
    second.wait_for(
        rf"resumed denoiser training at step {saved} from {re.escape(str(partial))}", in_stderr=True
    )
    assert second.stop(signal.SIGTERM) == 143, second.report()  # stopped cleanly, with a message
    assert "neuroauth train: stopped by SIGTERM" in second.output()[1], second.report()
    assert "training resumes from <out>.partial" in second.output()[1], second.report()
    intact(second)
    saved = load_partial(partial)
    assert saved in (100, 150), saved

    third = children(argv, tmp_path, "third")
    assert third.finish() == 0, third.report()
    out_text, err_text = third.output()
    assert f"resumed denoiser training at step {saved}" in err_text, third.report()
    identity = load_checkpoint(out).identity()
    assert f"wrote {out} (identity {identity}" in out_text, third.report()
    assert out.read_bytes() != good
    assert not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], third.report()
