"""A training loop's saved state, so that a long run interrupted on the way continues where it stopped.

The state goes to one file, replaced atomically (a reader finds the previous
state or the new one, never half of either). It carries a fingerprint of what
it belongs to (data, settings, starting weights); a state file with another
fingerprint is refused with the fix rather than continued.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import atomic_torch_save


def load_state(path: Path | None, fingerprint: str, afresh: str = "delete it to start afresh") -> dict | None:
    """The state saved at ``path`` for ``fingerprint``; None when there is none to continue.

    ``afresh`` says how to start over instead; the errors end with it.
    """
    if path is None or not path.exists():
        return None
    saved = _read(path, afresh)
    if saved.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path} was written by a training run with other data, settings or starting weights; "
            f"train with the same options, or {afresh}"
        )
    return saved


def _read(path: Path, afresh: str) -> dict:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(
            f"the saved training state {path} cannot be read ({exc.__class__.__name__}); {afresh}"
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(f"the saved training state {path} is not a training state; {afresh}")
    return saved


def save_state(path: Path, fingerprint: str, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings) atomically to ``path`` under ``fingerprint``."""
    atomic_torch_save({"fingerprint": fingerprint, **state}, path)


def rng_state(rng: np.random.Generator) -> str:
    """``rng``'s state as text (its 128-bit integers do not fit a tensor)."""
    return json.dumps(rng.bit_generator.state)


def restore_rng(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)


def saved_seconds(path: Path) -> float:
    """The training seconds recorded in the state at ``path``; 0 when there is no readable one
    (:func:`load_state` then says why, if it is there)."""
    try:
        return float(_read(path, "").get("seconds", 0.0)) if path.exists() else 0.0
    except ValueError:
        return 0.0
