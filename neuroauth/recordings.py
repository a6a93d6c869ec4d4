"""Reading EEG recordings from disk: the one reader every layer uses (training, enrollment, replay)."""

from __future__ import annotations

from pathlib import Path

import mne

from .errors import DataError

EXTENSIONS: tuple[str, ...] = (".edf", ".bdf", ".gdf", ".vhdr", ".fif", ".set", ".cnt")


def read_raw(path: Path) -> mne.io.BaseRaw:
    if path.suffix.lower() not in EXTENSIONS:
        raise DataError(f"{path} has an extension NeuroAuth does not read; use one of {EXTENSIONS}")
    try:
        return mne.io.read_raw(path, preload=False, verbose="error")
    except (ValueError, OSError, RuntimeError) as exc:
        raise DataError(f"{path} could not be read as EEG ({exc}); check that the file is complete") from None
