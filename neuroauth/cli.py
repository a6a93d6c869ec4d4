"""``neuroauth``: train, evaluate, cross-validate and benchmark models."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .atomic import atomic_write_text
from .errors import NeuroAuthError

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_DATA = ASSETS / "eegmat"
SHIPPED_CHECKPOINT = ASSETS / "checkpoints" / "neuroauth-4ch.pt"


def _data_options(p: argparse.ArgumentParser, default: Path | None) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=default,
        required=default is None,
        help="directory of <subject><enrol-suffix>.<ext> and <subject><probe-suffix>.<ext> recordings"
        + (" (default: the bundled EEGMAT sample)" if default else ""),
    )
    p.add_argument(
        "--enrol-suffix", default="_1", help="file-name suffix of enrolment recordings (default _1)"
    )
    p.add_argument("--probe-suffix", default="_2", help="file-name suffix of probe recordings (default _2)")
    p.add_argument("--subjects", help="comma-separated subjects to use (default: every complete pair)")


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--montage",
        default="default",
        help="channels: 'default' (T7,F8,Cz,P4), '10-20' (19 channels) or a comma-separated list",
    )
    p.add_argument("--no-mamba", action="store_true", help="build the denoiser without its Mamba block")
    p.add_argument("--steps", type=int, default=2000, help="denoiser training steps (default 2000)")
    p.add_argument("--batch", type=int, default=32, help="denoiser crops per step (default 32)")
    p.add_argument("--val-subjects", type=int, default=3, help="subjects held out to validate the denoiser")
    p.add_argument(
        "--cv-splits", type=int, default=6, help="random half splits choosing the embedder settings"
    )
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroauth", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the denoiser and the embedder; write one checkpoint")
    _data_options(p, None)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    _train_options(p)
    p.add_argument("--no-resume", action="store_true", help="ignore <out>.partial and start afresh")

    p = sub.add_parser("evaluate", help="run the verification protocol on a data directory")
    _data_options(p, BUNDLED_DATA)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=SHIPPED_CHECKPOINT,
        help="checkpoint to evaluate (default: the shipped 4-channel model)",
    )
    p.add_argument("--json", type=Path, help="write the metrics as JSON here")
    p.add_argument("--plots", type=Path, help="write ROC/DET curves and score histograms (PNG) here")
    p.add_argument(
        "--noise", default="all", help="noise types for the noisy figures: 'all', 'none' or a list"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")

    p = sub.add_parser("crossval", help="train and evaluate on disjoint folds of subjects")
    _data_options(p, None)
    _train_options(p)
    p.add_argument("--folds", type=int, default=2, help="number of subject folds (default 2)")
    p.add_argument(
        "--mamba",
        choices=["on", "off", "both"],
        default="both",
        help="denoiser variants to compare (default both)",
    )
    p.add_argument("--json", type=Path, required=True, help="write the per-fold and summary figures here")

    p = sub.add_parser(
        "cohort", help="(re)compute a checkpoint's background cohort from a data directory; write a copy"
    )
    _data_options(p, None)
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint whose models embed the cohort")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write (may be --checkpoint)")

    p = sub.add_parser("bench", help="measure the streaming engine here (latency, streams, memory)")
    p.add_argument(
        "--checkpoint", type=Path, default=SHIPPED_CHECKPOINT, help="model to measure (default: shipped 4-ch)"
    )
    p.add_argument(
        "--data", type=Path, default=BUNDLED_DATA, help="recordings for the equivalence check"
    )
    p.add_argument("--json", type=Path, help="write the figures as JSON here")

    p = sub.add_parser("report", help="print Markdown tables of cross-validation results and checkpoints")
    p.add_argument(
        "--crossval", type=Path, nargs="*", default=[], help="JSON files from `neuroauth crossval`"
    )
    p.add_argument(
        "--checkpoints", type=Path, nargs="*", default=[], help="checkpoints whose selection to show"
    )
    return parser


def _load_data(args, montage, spec):
    from .training.data import find_sessions, load_sessions

    subjects = args.subjects.split(",") if args.subjects else None
    sessions = find_sessions(args.data, args.enrol_suffix, args.probe_suffix, subjects)
    return load_sessions(sessions, montage, spec)


def _options(args):
    from .models.denoiser import DenoiserConfig
    from .models.montage import parse_montage
    from .training.denoiser_training import DenoiserTraining
    from .training.embedder_training import SpectralSearch
    from .training.train import TrainOptions

    return TrainOptions(
        montage=parse_montage(args.montage),
        denoiser=DenoiserConfig(use_mamba=not args.no_mamba),
        stage1=DenoiserTraining(steps=args.steps, batch=args.batch),
        search=SpectralSearch(splits=args.cv_splits),
        val_subjects=args.val_subjects,
        seed=args.seed,
    )


def cmd_train(args) -> int:
    from .training.train import train

    options = _options(args)
    data = _load_data(args, options.montage, options.spec)
    model = train(data, options, args.out, resume=not args.no_resume)
    chosen = model.meta["embedder_selection"]["chosen"]
    print(f"wrote {args.out} (identity {model.identity()}, {model.meta['seconds']['total']:.0f} s)")
    print(
        f"embedder settings by cross-validation: {' + '.join(chosen['features'])}, "
        f"PCA {chosen['pca_dim'] or 'none'}, "
        f"shrinkage {chosen['shrinkage']} (window EER {chosen['eer_mean']:.3f} +- {chosen['eer_std']:.3f})"
    )
    return 0


def cmd_evaluate(args) -> int:
    from .models.checkpoint import load_checkpoint
    from .training.evaluate import evaluate, write_plots
    from .training.noise import NOISE_TYPES

    model = load_checkpoint(args.checkpoint)
    if args.noise == "all":
        noise = NOISE_TYPES
    elif args.noise == "none":
        noise = ()
    else:
        noise = tuple(n.strip() for n in args.noise.split(","))
        unknown = set(noise) - set(NOISE_TYPES)
        if unknown:
            raise NeuroAuthError(
                f"--noise names unknown type(s) {sorted(unknown)}; choose from {NOISE_TYPES}"
            )
    data = _load_data(args, model.montage, model.spec)
    report, scores = evaluate(model, data, noise, args.seed)
    print(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"metrics written to {args.json}")
    if args.plots:
        for path in write_plots(scores, args.plots):
            print(f"plot written to {path}")
    return 0


def cmd_crossval(args) -> int:
    from .training.crossval import crossval

    options = _options(args)
    data = _load_data(args, options.montage, options.spec)
    mamba = {"on": [True], "off": [False], "both": [True, False]}[args.mamba]
    result = crossval(data, options, args.folds, mamba)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    for name, variant in result["variants"].items():
        ours, base = variant["summary"]["window_eer"], variant["summary"]["baseline_psd"]["window_eer"]
        print(
            f"{name}: window EER {ours['mean']:.3f} +- {ours['std']:.3f}, "
            f"baseline {base['mean']:.3f} +- {base['std']:.3f}"
        )
    print(f"figures written to {args.json}")
    return 0


def format_report(report: dict) -> str:
    """A short human-readable summary of an evaluation report."""
    ck = report["checkpoint"]
    lines = [
        f"checkpoint {ck['identity']}: embedder {ck['embedder']}, montage {','.join(ck['montage'])}, "
        f"mamba {'on' if ck['mamba'] else 'off'}",
        f"subjects: {len(report['subjects'])} ({', '.join(report['subjects'])})",
    ]
    if report["seen_in_training"]:
        lines.append(
            f"NOTE: {len(report['seen_in_training'])} of these subjects were in the checkpoint's training "
            "data; these figures are not from unseen people (see `neuroauth crossval` for those)."
        )
    base = report["baseline_psd"]
    lines.append(f"{'':22}{'ours':>8}{'PSD baseline':>14}")
    for key in ("window_eer", "auroc", "p_at_1", "p_at_5"):
        if report[key] is None:
            lines.append(f"{key:22}     n/a (no more subjects than k)")
        else:
            lines.append(f"{key:22}{report[key]:8.3f}{base[key]:14.3f}")
    for k, v in report["eer_at"].items():
        b = base["eer_at"][k]
        lines.append(
            f"{'eer over ' + k + ' windows':22}" + (f"{v:8.3f}{b:14.3f}" if v is not None else "     n/a")
        )
    if report["noisy_eer"]:
        lines.append(
            f"\n{'noise at 0 dB':14}{'SI-SNR in':>10}{'out':>7}{'EER ours':>10}{'no denoiser':>13}"
            f"{'baseline':>10}"
        )
        for kind, e in report["noisy_eer"].items():
            lines.append(
                f"{kind:14}{report['si_snr_input_db'][kind]:10.1f}{report['si_snr_db'][kind]:7.1f}"
                f"{e['denoised']:10.3f}{e['without_denoiser']:13.3f}{base['noisy_eer'][kind]:10.3f}"
            )
    return "\n".join(lines)


def cmd_cohort(args) -> int:
    from .models.checkpoint import load_checkpoint, save_checkpoint
    from .training.cohort import build_cohort

    model = load_checkpoint(args.checkpoint)
    model.cohort = build_cohort(model, _load_data(args, model.montage, model.spec))
    identity = save_checkpoint(model, args.out)
    n, dim = model.cohort.embeddings.shape
    print(
        f"wrote {args.out} (identity {identity}): a cohort of {len(model.cohort.subjects)} subjects, "
        f"{n} windows of dimension {dim}"
    )
    return 0


def cmd_bench(args) -> int:
    from .bench import run

    result = run(args.checkpoint, args.data, progress=lambda text: print(text, file=sys.stderr))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .training.report import render

    print(render(args.crossval, args.checkpoints), end="")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "crossval": cmd_crossval,
    "cohort": cmd_cohort,
    "bench": cmd_bench,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except NeuroAuthError as exc:
        print(f"neuroauth {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"neuroauth {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
