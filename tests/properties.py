"""What the property tests share: how many cases each property runs, and under which settings."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def examples(n: int) -> settings:
    """``n`` examples, no deadline (the machine may be busy), no example database in the repository:
    a failure prints the blob that reproduces it (``@reproduce_failure``)."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
