"""Embedders other than the shipped spectral one, as the trainer sees them: fits found by name.

The trainer fits the ``spectral`` embedder itself. Any other name is looked up
here among the resolvers that packages registered (the embedder study registers
its learned embedders when it is imported), so the trainer never imports a
study module; a name nobody registered is refused with the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..models.denoiser import CausalDenoiser
from ..models.embedders.spectral import SpectralEmbedder, SpectralFeatures
from ..models.preprocess import SignalSpec
from .embedder_training import SubjectWindows

Recordings = Sequence[Sequence[np.ndarray]]  # per person, their two recordings (C, N) in model units


@dataclass
class FitRequest:
    """What the trainer hands an embedder's fit: the training people with two recordings, in one order."""

    name: str
    settings: Any  # the fit's own settings (TrainOptions.learned)
    spectral: SpectralEmbedder | None  # fitted first when the fit asks for it
    windows: Sequence[SubjectWindows]  # spectral features of every window
    denoised: Recordings | None  # denoised recordings, when the fit reads the signal
    raw: Recordings | None  # recordings before denoising, when the fit trains the denoiser
    denoiser: CausalDenoiser
    extractor: SpectralFeatures
    spec: SignalSpec
    noisy: Callable[[Sequence[str]], list[dict]] | None  # noisy probes, denoised, by noise type
    progress: bool = True
    state_path: Path | None = None  # where a resumable fit keeps its state


@dataclass
class FitResult:
    embedder: nn.Module
    record: dict
    denoiser: CausalDenoiser | None = None  # a fit that trains the denoiser returns its new one


@dataclass(frozen=True)
class EmbedderFit:
    """How one name is fitted, and what the trainer must prepare for it."""

    fit: Callable[[FitRequest], FitResult]
    uses_spectral: bool = False  # is or contains the spectral embedder: fit that first
    needs_signal: bool = False  # trained on the denoised recordings
    trains_denoiser: bool = False  # trained on recordings before denoising, with the denoiser


Resolver = Callable[[str], EmbedderFit | None]
_RESOLVERS: list[Resolver] = []


def register(resolver: Resolver) -> Resolver:
    """Make the names ``resolver`` knows fittable by ``neuroauth train``."""
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)
    return resolver


def resolve(name: str) -> EmbedderFit | None:
    """None for ``spectral`` (the trainer's own); the registered fit of another name."""
    if name == "spectral":
        return None
    for resolver in _RESOLVERS:
        found = resolver(name)
        if found is not None:
            return found
    raise ValueError(
        f"unknown embedder {name!r}: the shipped trainer fits 'spectral'; the learned embedders of the "
        "embedder study (neuroauth.training.study) register their names when it is imported, as "
        "`neuroauth train --embedder NAME` does"
    )
