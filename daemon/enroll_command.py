"""``neuroauth enroll``: guide the owner through the enrollment phases and write their template.

The phases come from the headset's live LSL stream (read for each phase's length,
once the wearer is ready) or from one recording per phase (``--from-file``); the
use case itself is :func:`neuroauth.enroll.enrollment.enroll_owner`. This command
lives beside the daemon because it reads the same stream the daemon does.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..config import StreamSelector
from ..enroll.commands import format_template
from ..enroll.sources import CHUNK_SECONDS, Source
from ..enroll.store import TemplateStore, default_templates_dir
from ..errors import DataError
from .inlet import EegInlet, resolve_one


def lsl_source(
    name: str | None, stream_type: str | None, source_id: str | None, seconds: float, timeout: float = 10.0
) -> Source:
    """``seconds`` of a live LSL stream, pulled as it arrives. Configure LSL before calling."""

    selector = StreamSelector(name=name, type=stream_type, source_id=source_id)
    info = asyncio.run(resolve_one(selector, timeout))  # two matching streams: AmbiguousStream
    if info is None:
        raise DataError(
            f"no LSL stream matches {selector} within {timeout:g} s; start the headset's LSL app "
            "(or `neuroauth replay REC.edf`) and check --stream-name / --stream-type / --source-id"
        )
    host = info.hostname()
    inlet = EegInlet(info)
    labels = list(inlet.require_labels())

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                volts, timestamps = inlet.pull()
                if timestamps.size:
                    yield volts, timestamps
                time.sleep(CHUNK_SECONDS / 2)
        finally:
            inlet.close()

    # what the configuration pins the headset by: [[headsets]] stream = { source_id = ..., host = ... }
    description = f"LSL stream {inlet.name!r} (source_id {inlet.source_id!r}, host {host!r})"
    return Source(description, labels, inlet.sfreq, chunks(), seconds, False, stream=inlet.identity())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``enroll`` to the ``neuroauth`` sub-commands."""
    from ..cli_options import add_target_options
    from ..enroll.commands import add_site_option
    from ..enroll.enrollment import DEFAULT_PHASES, PHASES

    known = ", ".join(PHASES)
    p = subparsers.add_parser(
        "enroll",
        help="guide the owner through the enrollment phases (live LSL stream, or a recording per phase) "
        "and write a template",
    )
    p.add_argument("--user", required=True, help="the owner's name (letters, digits, _ . -)")
    p.add_argument(
        "--phases",
        default=None,
        help=f"comma-separated states to enroll, in order (default {','.join(DEFAULT_PHASES)}; "
        f"known, with instructions: {known}; any other name is recorded as told)",
    )
    p.add_argument(
        "--duration",
        default=None,
        help="seconds of EEG per phase: one number for every phase, or one per phase (e.g. 60,20); "
        "default 60 (a recording shorter than that gives what it has)",
    )
    p.add_argument(
        "--from-file",
        type=Path,
        nargs="+",
        help="enroll from recordings instead of a live stream: one per phase, in the phases' order "
        "(a single recording with no --phases is one 'rest' phase)",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="live: start each phase at once instead of waiting for Enter"
    )
    p.add_argument("--stream-name", help="LSL stream name (default: any stream of --stream-type)")
    p.add_argument(
        "--stream-type", default=None, help="LSL stream type (default EEG when nothing else given)"
    )
    p.add_argument("--source-id", help="LSL source id")
    p.add_argument(
        "--lan", action="store_true", help="look for the stream on the network, not 127.0.0.1 only"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="neuroauthd's configuration: its templates directory, checkpoint, decision targets and LSL "
        "setting become the defaults here",
    )
    p.add_argument("--checkpoint", type=Path, help="model (default: the configuration's, else shipped 4-ch)")
    p.add_argument(
        "--templates-dir",
        type=Path,
        help="template directory (default: the configuration's, else as templates)",
    )
    p.add_argument("--policy", choices=["target-far", "eer", "youden"], default="target-far")
    p.add_argument("--target-far", type=float, default=0.01, help="window false-accept target (default 0.01)")
    add_target_options(p)
    p.add_argument("--replace", action="store_true", help="replace the user's existing template")
    add_site_option(p)
    p.set_defaults(run=cmd_enroll)


def _lengths(text: str | None) -> list[float]:
    """``--duration``: one number of seconds, or one per phase separated by commas."""
    if not text:
        return []
    try:
        lengths = [float(part) for part in text.split(",")]
    except ValueError:
        raise DataError(
            f"--duration {text!r} is not a number of seconds, or one per phase (e.g. 60,60,60)"
        ) from None
    if any(s <= 0 for s in lengths):
        raise DataError(f"--duration {text!r}: every phase needs a positive length")
    return lengths


def _phases_and_sources(args: argparse.Namespace, loopback: bool):
    """Each phase with a function that opens its source when the phase begins."""
    from ..enroll.enrollment import DEFAULT_PHASES, phases_named
    from ..enroll.sources import file_source

    files = args.from_file or []
    if args.phases:
        names = [n.strip() for n in args.phases.split(",") if n.strip()]
    elif len(files) == 1:
        names = ["rest"]
    else:
        names = list(DEFAULT_PHASES)
    phases = phases_named(names, _lengths(args.duration))
    if files:
        if len(files) != len(phases):
            raise DataError(
                f"--from-file gives {len(files)} recording(s) for {len(phases)} phase(s) "
                f"({', '.join(p.state for p in phases)}); give one recording per phase, or name the phases "
                "with --phases"
            )
        return [(p, lambda p=p, f=f: file_source(f, p.seconds)) for p, f in zip(phases, files, strict=True)]
    from .lslconfig import configure_lsl

    configure_lsl(loopback_only=loopback and not args.lan)
    given = args.stream_name or args.stream_type or args.source_id
    stream_type = args.stream_type or (None if given else "EEG")

    def opener(phase):
        def open_source():
            if not args.no_wait:
                input("  press Enter to begin this phase ")
            return lsl_source(args.stream_name, stream_type, args.source_id, phase.seconds)

        return open_source

    return [(p, opener(p)) for p in phases]


def cmd_enroll(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..cli_options import targets
    from ..enroll.enrollment import enroll_owner
    from ..enroll.template import validate_user
    from ..models.checkpoint import load_checkpoint
    from ..models.streaming import EngineConfig
    from ..paths import SHIPPED_CHECKPOINT

    validate_user(args.user)
    settings = None
    if args.config is not None:
        from ..config import load_settings

        settings = load_settings(args.config)
    configured_dir = settings.templates.directory if settings is not None else None
    key_file = settings.templates.key_file if settings is not None else None
    store = TemplateStore(args.templates_dir or configured_dir or default_templates_dir(), key_file)
    checkpoint = args.checkpoint or (settings.model.checkpoint if settings is not None else None)
    model = load_checkpoint(checkpoint or SHIPPED_CHECKPOINT)
    loopback = settings.lsl.loopback_only if settings is not None else True
    hop = settings.model.hop_seconds if settings is not None else EngineConfig().hop_seconds
    phases = _phases_and_sources(args, loopback)
    bars: dict[str, tqdm] = {}

    def on_phase(i, phase) -> None:
        print(f"\nphase {i + 1} of {len(phases)}: {phase.title} ({phase.seconds:.0f} s)")
        print(f"  {phase.instructions}", flush=True)

    def on_source(phase, source) -> None:
        print(f"  recording {source.seconds:.0f} s from {source.description}", flush=True)
        expected = max(0, int((source.seconds - model.spec.window_seconds) / hop) + 1)
        bars[phase.state] = tqdm(total=expected, unit="window", desc=f"  {phase.state}")

    def on_window(phase, c) -> None:
        bar = bars[phase.state]
        bar.update(c.accepted + c.rejected - bar.n)
        bar.set_postfix(accepted=c.accepted, refused=c.rejected)

    def on_collected(phase, c) -> None:
        bars.pop(phase.state).close()
        print(f"  {c.summary()}")

    print(f"enrolling {args.user} in {len(phases)} phase(s): {', '.join(p.state for p, _ in phases)}")
    try:
        template, path = enroll_owner(
            model,
            phases,
            store,
            user=args.user,
            targets=targets(args, settings),
            policy=args.policy,
            target_far=args.target_far,
            hop_seconds=hop,
            replace=args.replace,
            min_site_people=args.min_site_people,
            on_phase=on_phase,
            on_source=on_source,
            on_window=on_window,
            on_collected=on_collected,
        )
    finally:
        for bar in bars.values():
            bar.close()
    left_out = template.calibration["cohort"].get("left_out")
    if left_out:
        print(f"left out of the cohort: {', '.join(left_out)} (these recordings are in it)")
    cohort = template.calibration["cohort"]
    if cohort["against"] == "site" and len(cohort["site_people"]) == args.min_site_people:
        print(
            f"\n{args.user}'s template is normalised against the {args.min_site_people} other people "
            "enrolled here, theirs against the training people: `neuroauth templates renormalise` fits "
            "them against each other (the site's people tell impostors apart better)"
        )
    print(f"\ntemplate of {args.user} written to {path}, signed with the installation key {store.key_file}")
    print(format_template(template, path))
    return 0
