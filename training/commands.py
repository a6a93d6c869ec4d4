"""``neuroauth train | evaluate | crossval | cohort | report``: build and measure models.

Each command's parser and handler sit side by side; the handlers import the
heavy modules when they run, so that ``neuroauth --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import atomic_write_text
from ..cli_options import add_data_options, add_target_options, load_data, noise_types, targets
from ..paths import BUNDLED_DATA, SHIPPED_CHECKPOINT


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--montage",
        default="default",
        help="channels: 'default' (T7,F8,Cz,P4), '10-20' (19 channels) or a comma-separated list",
    )
    p.add_argument("--no-mamba", action="store_true", help="build the denoiser without its Mamba block")
    p.add_argument("--steps", type=int, default=2000, help="denoiser training steps (default 2000)")
    p.add_argument("--batch", type=int, default=32, help="denoiser crops per step (default 32)")
    p.add_argument("--val-subjects", type=int, default=3, help="people held out to validate the denoiser")
    p.add_argument(
        "--cv-splits",
        type=int,
        default=6,
        help="random half splits choosing the embedder settings when there is one corpus (default 6; "
        "with several, each corpus is held out in turn)",
    )
    p.add_argument(
        "--crossfit-folds",
        type=int,
        default=4,
        help="folds of the training people whose unseen-people scores calibrate the decision (default 4)",
    )
    p.add_argument("--seed", type=int, default=0)


def options_from(args: argparse.Namespace):
    from ..models.denoiser import DenoiserConfig
    from ..models.montage import parse_montage
    from .crossfit import CrossFit
    from .denoiser_training import DenoiserTraining
    from .embedder_training import SpectralSearch
    from .train import TrainOptions

    embedder = getattr(args, "embedder", "spectral")
    settings = getattr(args, "learned_settings", None)
    return TrainOptions(
        montage=parse_montage(args.montage),
        denoiser=DenoiserConfig(use_mamba=not args.no_mamba),
        stage1=DenoiserTraining(steps=args.steps, batch=args.batch),
        search=SpectralSearch(splits=args.cv_splits),
        crossfit=CrossFit(folds=args.crossfit_folds, seed=args.seed),
        val_subjects=args.val_subjects,
        seed=args.seed,
        embedder=embedder,
        learned=settings(args) if settings is not None and embedder != "spectral" else None,
    )


# -- train ---------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .report import format_selection
    from .train import train

    options = options_from(args)
    data = load_data(args, options.montage, options.spec)
    model = train(data, options, args.out, resume=not args.no_resume)
    print(f"wrote {args.out} (identity {model.identity()}, {model.meta['seconds']['total']:.0f} s)")
    for line in format_selection(model.meta):
        print(line)
    return 0


# -- evaluate ------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..models.checkpoint import load_checkpoint
    from .evaluate import embedded_people, evaluate, write_plots
    from .report import format_continuous, format_report

    model = load_checkpoint(args.checkpoint)
    data = load_data(args, model.montage, model.spec)
    embedded = embedded_people(model, data, gate=args.continuous)
    report, scores = evaluate(model, data, noise_types(args.noise), args.seed, embedded=embedded)
    print(format_report(report))
    sessions = None
    if args.continuous:
        from .continuous import evaluate_continuous, site_reports

        report["continuous"], sessions, _ = evaluate_continuous(model, data, targets(args), embedded=embedded)
        print(format_continuous(report["continuous"]))
        report["continuous_site"] = site_reports(model, data, targets(args), embedded, args.site_people)
        for n, site in report["continuous_site"].items():
            print(f"\nnormalised against {n} other people of the data, as a site with them enrolled:")
            print(format_continuous(site))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.plots:
        for path in write_plots(scores, args.plots):
            print(f"plot written to {path}")
        if sessions:
            from .continuous import plot_session

            print(f"plot written to {plot_session(sessions[0], args.plots / 'continuous_session.png')}")
    return 0


# -- crossval ------------------------------------------------------------------------------------------


def cmd_crossval(args: argparse.Namespace) -> int:
    from .crossval import crossval
    from .report import format_crossval

    options = options_from(args)
    data = load_data(args, options.montage, options.spec)
    result = crossval(
        data,
        options,
        repeats=args.repeats,
        continuous=targets(args) if args.continuous else None,
        noise_types=noise_types(args.noise),
        keep=args.keep_checkpoints,
        only=[s.strip() for s in args.only.split(",")] if args.only else (),
        site_people=args.site_people,
    )
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(format_crossval(result))
    print(f"figures written to {args.json}")
    return 0


def _site_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--site-people",
        type=_site_people,
        default=(),
        help=f"with --continuous, run {what} again with each template normalised against this many other "
        "people of the data, as a site with that many enrolled is (comma-separated, 'all' for every one; "
        "e.g. 5,10,all)",
    )


def _site_people(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(1_000_000 if t.strip() == "all" else int(t) for t in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError(
            f"--site-people takes counts of at least 2 people or 'all', comma-separated (e.g. 5,10,all), "
            f"not {text!r}"
        )
    return counts


# -- cohort --------------------------------------------------------------------------------------------


def cmd_cohort(args: argparse.Namespace) -> int:
    from ..models.checkpoint import load_checkpoint, save_checkpoint
    from .cohort import rebuild_cohort

    model = load_checkpoint(args.checkpoint)
    data = load_data(args, model.montage, model.spec)
    rebuild_cohort(model, data)
    identity = save_checkpoint(model, args.out)
    n, dim = model.cohort.embeddings.shape
    print(
        f"wrote {args.out} (identity {identity}): a cohort of {len(model.cohort.subjects)} people, "
        f"{n} windows of dimension {dim}"
        + (
            f", and {len(model.calibration.owner_sequences())} owner and "
            f"{len(model.calibration.impostor_sequences())} impostor calibration sequences"
            if model.calibration is not None
            else ""
        )
    )
    return 0


# -- report --------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from .report import render

    print(render(args.crossval, args.checkpoints), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the denoiser and the embedder; write one checkpoint")
    add_data_options(p, None)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    _train_options(p)
    p.add_argument(
        "--embedder",
        default="spectral",
        help="spectral (default, the shipped one), or a learned embedder of the embedder study "
        "(see `neuroauth embedders --help`)",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore <out>.partial and start afresh")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="run the verification protocol on recordings")
    add_data_options(p, BUNDLED_DATA)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=SHIPPED_CHECKPOINT,
        help="checkpoint to evaluate (default: the shipped 4-channel model)",
    )
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--plots", type=Path, help="write ROC/DET curves and score histograms (PNG) here")
    p.add_argument(
        "--noise", default="none", help="noise types for the noisy figures: 'all', 'none' (default) or a list"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    p.add_argument(
        "--continuous",
        action="store_true",
        help="also run owner-then-impostor sessions through the enrollment and the decision over time",
    )
    _site_option(p, "the sessions")
    add_target_options(p)
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser(
        "crossval", help="repeated subject-disjoint splits and leave-one-corpus-out: figures on unseen people"
    )
    add_data_options(p, None)
    _train_options(p)
    p.add_argument("--repeats", type=int, default=10, help="random half splits per corpus (default 10)")
    p.add_argument(
        "--json", type=Path, required=True, help="write every split's figures and the summary here"
    )
    p.add_argument("--continuous", action="store_true", help="also run the continuous evaluation per split")
    p.add_argument(
        "--noise", default="none", help="noise types for the noisy figures: 'all', 'none' (default) or a list"
    )
    p.add_argument(
        "--keep-checkpoints",
        type=Path,
        help="keep the denoisers in this folder and reuse one trained alike (with several corpora, one "
        "per held-out corpus)",
    )
    p.add_argument("--only", help="comma-separated prefixes of the splits to run (e.g. 'mumtaz split 1')")
    _site_option(p, "each split's sessions")
    add_target_options(p)
    p.set_defaults(run=cmd_crossval)

    p = sub.add_parser(
        "cohort",
        help="(re)compute a checkpoint's background cohort and calibration sequences from recordings; "
        "write a copy",
    )
    add_data_options(p, None)
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint whose models embed the cohort")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write (may be --checkpoint)")
    p.set_defaults(run=cmd_cohort)

    p = sub.add_parser("report", help="print Markdown tables of cross-validation results and checkpoints")
    p.add_argument(
        "--crossval", type=Path, nargs="*", default=[], help="JSON files from `neuroauth crossval`"
    )
    p.add_argument("--checkpoints", type=Path, nargs="*", default=[], help="checkpoints whose choice to show")
    p.set_defaults(run=cmd_report)
