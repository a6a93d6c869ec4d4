"""The malloc arena cap that keeps the daemon's memory flat (glibc, as on the deployment target).

Each case runs in a child process, so that the test run's own allocator is left as it is.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CALL = "from neuroauth.daemon.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def cap_set(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, "-c", CALL], env=clean | env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the cap is glibc's")
def test_the_cap_is_set_on_glibc():
    assert cap_set() == "True"


@pytest.mark.parametrize(
    "env", [{"MALLOC_ARENA_MAX": "4"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}], ids=["env", "tunable"]
)
def test_an_operators_setting_is_left_alone(env):
    assert cap_set(**env) == "False"
