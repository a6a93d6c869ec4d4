"""Command-line options more than one package's commands share, each defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import NeuroAuthError


def add_data_options(p: argparse.ArgumentParser, default: Path | None) -> None:
    """``--data`` (one or more corpora), the suffixes of a plain folder, and ``--subjects``."""
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[default] if default else None,
        required=default is None,
        help="one or more corpora: folders of recordings, or folders of such folders (e.g. the shared "
        "data/ with eegmat/ and mumtaz/); a corpus pairs its files by its corpus.toml, by the rules "
        "known for eegmat and mumtaz, or by the suffixes below"
        + (" (default: the bundled EEGMAT sample)" if default else ""),
    )
    p.add_argument(
        "--enroll-suffix",
        "--enrol-suffix",
        dest="enroll_suffix",
        default=None,
        help="file-name suffix of enrollment recordings in a folder without corpus.toml (default _1)",
    )
    p.add_argument("--probe-suffix", default=None, help="file-name suffix of probe recordings (default _2)")
    p.add_argument(
        "--subjects", help="comma-separated people to use, as <corpus>/<person> or <person> (default: all)"
    )


def load_data(args: argparse.Namespace, montage, spec):
    """The people ``args`` selects, loaded for ``montage`` at ``spec``'s rate."""
    from .training.data import find_sessions, load_sessions

    subjects = args.subjects.split(",") if args.subjects else None
    sessions = find_sessions(args.data, args.enroll_suffix, args.probe_suffix, subjects)
    return load_sessions(sessions, montage, spec)


def add_target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--false-lockouts-per-hour",
        type=float,
        default=None,
        help="decision target: owner false lock-outs per hour (default: the configuration's, else 2)",
    )
    p.add_argument(
        "--time-to-lock",
        type=float,
        default=None,
        help="decision target: seconds to lock an impostor (default: the configuration's, else 10)",
    )


def targets(args: argparse.Namespace, settings=None):
    """Decision targets: the command line's, else the configuration's, else the defaults."""
    from .enroll.decision import DecisionTargets

    base = DecisionTargets()
    if settings is not None:
        base = DecisionTargets(settings.decision.false_lockouts_per_hour, settings.decision.time_to_lock_s)
    return DecisionTargets(
        args.false_lockouts_per_hour
        if args.false_lockouts_per_hour is not None
        else base.false_lockouts_per_hour,
        args.time_to_lock if args.time_to_lock is not None else base.time_to_lock_s,
    )


def positive(text: str) -> float:
    """An option's value as a number above zero (an ``argparse`` type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def noise_types(text: str, option: str = "--noise") -> tuple[str, ...]:
    """``option``: 'all', 'none' or a comma-separated list of noise types."""
    from .training.noise import NOISE_TYPES

    if text == "all":
        return NOISE_TYPES
    if text == "none":
        return ()
    noise = tuple(dict.fromkeys(n.strip() for n in text.split(",")))  # in order, each once
    unknown = set(noise) - set(NOISE_TYPES)
    if unknown:
        raise NeuroAuthError(f"{option} names unknown type(s) {sorted(unknown)}; choose from {NOISE_TYPES}")
    return noise
