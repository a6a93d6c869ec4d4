"""Channel names: 10-20 / 10-10 aliases and picking a montage out of a recording.

Headsets and files name the same electrode differently: ``EEG T3``, ``T3``,
``t7`` and ``T7-REF`` are one place on the scalp. Names are compared in a
canonical form: upper case, without an ``EEG`` prefix or a reference suffix,
with the old 10-20 temporal names mapped onto their 10-10 successors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_MONTAGE: tuple[str, ...] = ("T7", "F8", "Cz", "P4")

#: The 19 channels of a full 10-20 cap, in 10-10 names.
MONTAGE_10_20: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip

#: Old 10-20 name -> 10-10 name (upper case).
OLD_TO_NEW: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

_PREFIX = re.compile(r"^(EEG|EEG:)\s*", re.IGNORECASE)
_SUFFIX = re.compile(r"[-_ ](REF|LE|AR|A1|A2|M1|M2|AVG|CAR)$", re.IGNORECASE)


def canonical(name: str) -> str:
    """The comparable form of a channel name: ``'EEG T3' -> 'T7'``, ``'cz' -> 'CZ'``."""
    key = _PREFIX.sub("", name.strip())
    key = _SUFFIX.sub("", key).strip().upper()
    return OLD_TO_NEW.get(key, key)


def resolve_montage(wanted: Sequence[str], available: Sequence[str]) -> list[int] | list[str]:
    """Indices into ``available`` for each name of ``wanted``, in ``wanted``'s order.

    Returns the list of missing names (as given in ``wanted``) instead when any
    is absent; callers turn that into a :class:`~neuroauth.errors.MontageError`
    that names the source.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(available):
        index.setdefault(canonical(name), i)
    missing = [name for name in wanted if canonical(name) not in index]
    if missing:
        return missing
    return [index[canonical(name)] for name in wanted]


def parse_montage(text: str) -> tuple[str, ...]:
    """A montage from the command line: ``'T7,F8,Cz,P4'``, ``'default'`` or ``'10-20'``."""
    key = text.strip().lower()
    if key == "default":
        return DEFAULT_MONTAGE
    if key in {"10-20", "1020", "full"}:
        return MONTAGE_10_20
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ValueError(f"montage {text!r} names no channels; give e.g. 'T7,F8,Cz,P4'")
    keys = [canonical(n) for n in names]
    if len(set(keys)) != len(keys):
        raise ValueError(f"montage {text!r} names a channel twice (after aliasing)")
    return names
