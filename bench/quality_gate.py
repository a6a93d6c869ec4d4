"""How many windows of real recordings the quality gate refuses, and why.

    python bench/quality_gate.py DATA_DIR [--montage default|10-20] [--hop 200]

Every recording in DATA_DIR goes through the daemon's pre-processing (the chunked
``Preprocessor`` at the recording's rate) and is cut into windows of the shipped
model's length every ``--hop`` samples; each window is checked by the gate with
its default thresholds, as the streaming engine does. The gate exists to refuse
broken signal (flat, clipped, huge); on clean recordings it should refuse almost
nothing, and what it does refuse is listed here to be looked at.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from neuroauth.models.montage import DEFAULT_MONTAGE, MONTAGE_10_20, resolve_montage
from neuroauth.models.preprocess import Preprocessor, SignalSpec, sliding_windows
from neuroauth.models.quality import QualityGate

from neuroauth.recordings import EXTENSIONS, read_raw

MONTAGES = {"default": DEFAULT_MONTAGE, "10-20": MONTAGE_10_20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a directory of recordings (EDF or what MNE reads)")
    parser.add_argument("--montage", choices=sorted(MONTAGES), default="10-20")
    parser.add_argument("--hop", type=int, default=200, help="samples at the model rate between windows")
    args = parser.parse_args()

    montage = MONTAGES[args.montage]
    spec = SignalSpec()
    gate = QualityGate(channel_names=montage)
    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not paths:
        parser.error(f"{args.data} holds no recordings ({', '.join(sorted(EXTENSIONS))})")
    checked = 0
    refused: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        raw = read_raw(path)
        picks = resolve_montage(montage, raw.ch_names)
        if picks and isinstance(picks[0], str):
            parser.error(f"{path} lacks the channel(s) {', '.join(picks)}; choose another --montage")
        volts = raw.get_data(picks=picks).astype(np.float64)
        resampled, filtered = Preprocessor(spec, raw.info["sfreq"], len(picks)).stages(volts)
        c = len(picks)
        for w in sliding_windows(np.concatenate([resampled, filtered]), spec.window, args.hop):
            checked += 1
            problems = gate.check(w[:c], w[c:] * spec.scale_uv)
            if problems:
                refused.setdefault(path.name, []).append(problems)
    if not checked:
        parser.error(f"no recording in {args.data} is as long as one window ({spec.window_seconds:g} s)")
    total = sum(len(v) for v in refused.values())
    print(f"{len(paths)} recordings, {checked} windows, {total} refused ({100 * total / checked:.2f} %)")
    for name, problems in refused.items():
        print(f"  {name}: {len(problems)} refused; first: {'; '.join(problems[0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
