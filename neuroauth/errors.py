"""The exception family shared by every NeuroAuth package.

Each error carries a message a person can act on: the input, what is wrong
with it, and what to do next.
"""

from __future__ import annotations


class NeuroAuthError(Exception):
    """Base class of every error NeuroAuth raises on purpose."""


class DataError(NeuroAuthError):
    """A recording cannot be used: unreadable, too short, missing channels."""


class MontageError(DataError):
    """A recording lacks channels that the model's montage needs."""

    def __init__(self, source: str, missing: list[str], available: list[str]) -> None:
        self.source = source
        self.missing = missing
        self.available = available
        super().__init__(
            f"{source} lacks the channel(s) {', '.join(missing)} that the model's montage needs "
            f"(it has {', '.join(available) or 'no channels'}). Use a recording with these "
            "channels, or a checkpoint trained for the channels you have (neuroauth train "
            "--montage ...)."
        )


class StreamError(NeuroAuthError):
    """A live stream cannot be served: unknown, wrong shape, unusable rate."""


class CheckpointError(NeuroAuthError):
    """A checkpoint file cannot be loaded safely or does not fit."""


class TemplateError(NeuroAuthError):
    """An owner template cannot be stored, read or used: missing, damaged, altered or mismatched."""
