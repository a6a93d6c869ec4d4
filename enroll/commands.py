"""``neuroauth templates list | show NAME | remove NAME``: the enrolled owners on this machine.

``show`` prints a template's metadata and calibration figures, never its
biometric arrays (centroids, support vectors). Enrolling is ``neuroauth enroll``
(:mod:`neuroauth.daemon.enroll_command`), which records from the headset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .store import TemplateStore, default_templates_dir
from .template import Template


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``templates`` to the ``neuroauth`` sub-commands."""
    p = subparsers.add_parser("templates", help="list, show or remove enrolled owners' templates")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="template directory (default: $NEUROAUTH_TEMPLATES__DIRECTORY, else $STATE_DIRECTORY/templates, "
        "else ~/.local/share/neuroauth/templates)",
    )
    actions = p.add_subparsers(dest="templates_command", required=True)
    actions.add_parser("list", help="every template, with its checkpoint and date; damaged ones flagged")
    show = actions.add_parser("show", help="a template's metadata and calibration figures")
    show.add_argument("name", help="the enrolled user")
    remove = actions.add_parser("remove", help="delete a user's template")
    remove.add_argument("name", help="the enrolled user")
    renormalise = actions.add_parser(
        "renormalise",
        help="fit every template again against the people enrolled here now (after people joined or left)",
    )
    renormalise.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the model the templates were enrolled with (default: shipped 4-ch)",
    )
    add_site_option(renormalise)
    p.set_defaults(run=cmd_templates)


def add_site_option(p: argparse.ArgumentParser) -> None:
    from .site import MIN_SITE_PEOPLE

    p.add_argument(
        "--min-site-people",
        type=_people,
        default=MIN_SITE_PEOPLE,
        help="normalise against the other people enrolled here once there are this many, else against the "
        f"checkpoint's training people (default {MIN_SITE_PEOPLE}, measured in docs/results.md)",
    )


def _people(text: str) -> int:
    """A number of people, at least 1 (an ``argparse`` type)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of people, at least 1, not {text!r}")
    return int(text)


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
    if args.templates_command == "renormalise":
        return _renormalise(store, args.checkpoint, args.min_site_people)
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


def _renormalise(store: TemplateStore, checkpoint: Path | None, min_people: int) -> int:
    from ..models.checkpoint import load_checkpoint
    from ..paths import SHIPPED_CHECKPOINT
    from .site import renormalise

    model = load_checkpoint(checkpoint or SHIPPED_CHECKPOINT)
    done = renormalise(store, model, min_people)
    for user, against in done.written.items():
        print(f"  {user:20} normalised against {against}")
    for user, why in done.failed.items():
        print(f"  {user:20} LEFT AS IT WAS: {why}")
    if not done.written and not done.failed:
        print(f"no template in {store.directory} was enrolled with checkpoint {model.identity()}")
    elif done.written:
        print("restart neuroauthd (or send it SIGHUP) to use them")
    return 1 if done.failed else 0


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
        f"enrollment windows    {t.n_windows} in {len(t.states)} state(s): "
        + ", ".join(f"{s} ({n})" for s, n in cal.get("states", {s: "?" for s in t.states}).items()),
        f"one-class SVM        nu {svm.nu:g}, gamma {svm.gamma:.4g}, {len(svm.dual_coef)} support vectors",
        f"threshold            {th.value:.3f} on the fused score (policy {th.policy}"
        + (f", target FAR {th.target_far:g})" if th.target_far is not None else ")"),
        f"  on calibration     FAR {th.far:.4f}, FRR {th.frr:.4f}",
        f"decision             unlock at {d.unlock_level:g}, lock at {d.lock_level:g}, bound {d.bound:g}, "
        f"LLR clip {d.llr_clip:g}, no signal after {d.gap_seconds:g} s",
    ]
    cohort = cal.get("cohort", {})
    if "against" in cohort:
        lines.append(
            "normalised against   "
            + (
                f"the {len(cohort['site_people'])} other people enrolled here"
                if cohort["against"] == "site"
                else f"the checkpoint's {cohort['subjects']} training people ({len(cohort['site_people'])} "
                f"other people enrolled here, {cohort['min_site_people']} needed)"
            )
        )
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
