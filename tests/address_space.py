"""A cap on the address space of this process, so that a test of hostile input that makes the code
allocate without bound fails with an allocation error instead of exhausting the machine (Linux)."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

HEADROOM = 2 * 2**30  # bytes a capped call may map beyond what the process holds


def address_space() -> int:
    """Bytes of virtual memory this process maps now."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def capped_address_space(headroom: int = HEADROOM) -> Iterator[None]:
    """Allocations beyond ``headroom`` more bytes fail meanwhile (MemoryError, torch's RuntimeError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = address_space() + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
