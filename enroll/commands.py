"""``neuroauth enroll`` and ``neuroauth templates list | show NAME | remove NAME``: the owners.

``enroll`` guides the wearer through the enrolment phases (:mod:`.enrolment`)
from a live stream or one recording per phase. ``show`` prints a template's
metadata and calibration figures, never its biometric arrays (centroids,
support vectors).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .store import TemplateStore, default_templates_dir
from .template import Template


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``enroll`` and ``templates`` to the ``neuroauth`` sub-commands."""
    _add_enroll_parser(subparsers)
    _add_templates_parser(subparsers)


def _add_templates_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("templates", help="list, show or remove enrolled owners' templates")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="template directory (default: $NEUROAUTH_TEMPLATES_DIR, else $STATE_DIRECTORY/templates, "
        "else ~/.local/share/neuroauth/templates)",
    )
    actions = p.add_subparsers(dest="templates_command", required=True)
    actions.add_parser("list", help="every template, with its checkpoint and date; damaged ones flagged")
    show = actions.add_parser("show", help="a template's metadata and calibration figures")
    show.add_argument("name", help="the enrolled user")
    remove = actions.add_parser("remove", help="delete a user's template")
    remove.add_argument("name", help="the enrolled user")
    p.set_defaults(run=cmd_templates)
    return p


def cmd_templates(args: argparse.Namespace) -> int:
    store = TemplateStore(args.dir if args.dir is not None else default_templates_dir())
    if args.templates_command == "list":
        return _list(store)
    if args.templates_command == "show":
        print(format_template(store.load(args.name), store.path(args.name)))
        return 0
    if args.templates_command == "remove":
        path = store.remove(args.name)
        print(f"removed the template of {args.name} ({path})")
        return 0
    raise ValueError(f"unknown templates action {args.templates_command!r}")


def _list(store: TemplateStore) -> int:
    entries = store.list()
    if not entries:
        print(f"no templates in {store.directory}")
        return 0
    print(f"templates in {store.directory}:")
    print(f"  {'user':20} {'created (UTC)':26} {'checkpoint':18} {'embedder':10} {'dim':>5} {'windows':>8}")
    for e in entries:
        if e.damaged:
            print(f"  {e.user:20} DAMAGED: {e.problem}")
        else:
            print(
                f"  {e.user:20} {e.created:26} {e.checkpoint_identity:18} {e.embedder:10} {e.dim:5d} "
                f"{e.n_windows:8d}"
            )
    return 0


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def format_template(template: Template, path: Path) -> str:
    """A human-readable account of a template, without its biometric arrays."""
    t, svm, th, d = template, template.svm, template.threshold, template.decision
    cal = t.calibration
    lines = [
        f"user                 {t.user}",
        f"file                 {path}",
        f"created              {t.created}",
        f"checkpoint           {t.checkpoint_identity} (embedder {t.embedder}, {t.dim}-d)",
        f"enrolment windows    {t.n_windows} in {len(t.states)} state(s): "
        + ", ".join(f"{s} ({n})" for s, n in cal.get("states", {s: "?" for s in t.states}).items()),
        f"one-class SVM        nu {svm.nu:g}, gamma {svm.gamma:.4g}, {len(svm.dual_coef)} support vectors",
        f"threshold            {th.value:.3f} on the fused score (policy {th.policy}"
        + (f", target FAR {th.target_far:g})" if th.target_far is not None else ")"),
        f"  on calibration     FAR {th.far:.4f}, FRR {th.frr:.4f}",
        f"decision             unlock at {d.unlock_level:g}, lock at {d.lock_level:g}, bound {d.bound:g}, "
        f"LLR clip {d.llr_clip:g}, no signal after {d.gap_seconds:g} s",
    ]
    window_eer = cal.get("window_eer")
    if window_eer:
        lines.append(
            f"window EER           fused {window_eer['fused']:.3f}, cosine {window_eer['cosine']:.3f}, "
            f"svm {window_eer['svm']:.3f} ({window_eer['held_out_owner_windows']} held-out owner windows, "
            f"{window_eer['cohort_windows']} cohort windows)"
        )
    decision = cal.get("decision")
    if decision:
        chosen, targets = decision["chosen"], decision["targets"]
        lines += [
            f"simulated            {chosen['false_lockouts_per_hour']:.2f} false lock-outs/h "
            f"(target {targets['false_lockouts_per_hour']:g}), time to lock median "
            f"{_seconds(chosen['median_time_to_lock_s'])} (target {targets['time_to_lock_s']:g} s), "
            f"p95 {_seconds(chosen['p95_time_to_lock_s'])}",
            f"  targets met        {'yes' if decision['meets_targets'] else 'NO'} "
            f"({decision['owner_windows']} owner windows, "
            f"{decision['impostor_sequences']} impostor recordings)",
        ]
    return "\n".join(lines)


# -- enroll ---------------------------------------------------------------------------------------------


def _add_enroll_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..cli_options import add_target_options
    from .enrolment import DEFAULT_PHASES, PHASES

    known = ", ".join(PHASES)
    p = subparsers.add_parser(
        "enroll",
        help="guide the owner through the enrolment phases (live LSL stream, or a recording per phase) "
        "and write a template",
    )
    p.add_argument("--user", required=True, help="the owner's name (letters, digits, _ . -)")
    p.add_argument(
        "--phases",
        default=None,
        help=f"comma-separated states to enrol, in order (default {','.join(DEFAULT_PHASES)}; "
        f"known, with instructions: {known}; any other name is recorded as told)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of EEG per phase (default 60; a recording shorter than that gives what it has)",
    )
    p.add_argument(
        "--from-file",
        type=Path,
        nargs="+",
        help="enrol from recordings instead of a live stream: one per phase, in the phases' order "
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
    p.set_defaults(run=cmd_enroll)
    return p


def _phases_and_sources(args: argparse.Namespace, loopback: bool):
    """Each phase with a function that opens its source when the phase begins."""
    from ..errors import DataError
    from ..sources import file_source, lsl_source
    from .enrolment import DEFAULT_PHASES, phases_named

    files = args.from_file or []
    if args.phases:
        names = [n.strip() for n in args.phases.split(",") if n.strip()]
    elif len(files) == 1:
        names = ["rest"]
    else:
        names = list(DEFAULT_PHASES)
    phases = phases_named(names, args.duration)
    if files:
        if len(files) != len(phases):
            raise DataError(
                f"--from-file gives {len(files)} recording(s) for {len(phases)} phase(s) "
                f"({', '.join(p.state for p in phases)}); give one recording per phase, or name the phases "
                "with --phases"
            )
        return [(p, lambda p=p, f=f: file_source(f, p.seconds)) for p, f in zip(phases, files, strict=True)]
    from ..daemon.lslconfig import configure_lsl

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
    from ..models.checkpoint import load_checkpoint
    from ..models.streaming import EngineConfig
    from ..paths import SHIPPED_CHECKPOINT
    from .enrolment import enroll_owner
    from .template import validate_user

    validate_user(args.user)
    settings = None
    if args.config is not None:
        from ..config import load_settings

        settings = load_settings(args.config)
    configured_dir = settings.templates.directory if settings is not None else None
    store = TemplateStore(args.templates_dir or configured_dir or default_templates_dir())
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
    print(f"\ntemplate of {args.user} written to {path}")
    print(format_template(template, path))
    return 0
