"""Keeping the daemon's resident memory flat over weeks of running.

glibc's malloc gives threads their own arenas (up to eight per core) and does not
hand memory freed in one arena to another. The daemon runs the engine in worker
threads (``asyncio.to_thread``), so successive hops allocate their buffers in
different arenas, and each arena keeps its high-water mark. With the default, a
soak of four headsets (``bench/soak.py``) grew by about 85 MB in its first seven
minutes; with two arenas it stayed within a few MB of where it started.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True when the cap is set.

    Call it before the process starts threads: arenas made before it stay. An
    operator's ``MALLOC_ARENA_MAX`` in the environment wins (glibc reads it at
    start), as does ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``; where the C library
    is not glibc nothing is done.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) on Windows
        log.debug("no mallopt in this C library; malloc arenas left as they are")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1


def resident_mb() -> float:
    """Resident memory of this process in MiB (Linux ``/proc``); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0
