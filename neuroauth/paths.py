"""Where the package keeps what it ships: the bundled recordings and the trained checkpoints."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_DATA = ASSETS / "eegmat"
SHIPPED_CHECKPOINT = ASSETS / "checkpoints" / "neuroauth-4ch.pt"
