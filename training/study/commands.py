"""The study's commands, plugged into ``neuroauth``: ``embedders``, ``study transfer``, and the
learned-embedder options of ``train`` and the embedder tables of ``report``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ...atomic import atomic_write_text
from ...cli_options import add_data_options, load_data, noise_types


def _learned_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ssl-steps",
        type=int,
        default=300,
        help="contrastive pre-training steps of temporal-ssl (default 300)",
    )
    p.add_argument(
        "--fusion-splits",
        type=int,
        default=2,
        help="half splits of the training people choosing a +spectral fusion weight (default 2)",
    )
    p.add_argument(
        "--fusion-noise",
        default="none",
        help="noise types (at 0 dB) under which a +spectral fusion weight is also chosen, every "
        "condition counting alike with the clean one: 'all', 'none' (default) or a list",
    )
    p.add_argument(
        "--joint-weight",
        type=float,
        default=0.05,
        help="temporal-joint: weight per dB of the denoiser's SI-SNR loss beside the metric loss "
        "(default 0.05)",
    )
    p.add_argument(
        "--joint-denoiser-rate",
        type=float,
        default=0.2,
        help="temporal-joint: the denoiser's learning rate as a fraction of the embedder's; "
        "0 keeps the denoiser as it is (default 0.2)",
    )


def learned_settings(args: argparse.Namespace):
    """The learned embedders' training: ``embedders`` sets the ResNet and metric-learning steps
    apart, ``train`` gives both ``--embedder-steps``; importing them registers their names."""
    from .contrastive import ContrastiveTraining
    from .joint import JointTraining
    from .learned_embedders import LearnedTraining, check_embedder
    from .metric_learning import MetricTraining

    if getattr(args, "embedder", None) is not None:
        check_embedder(args.embedder)
    steps = getattr(args, "embedder_steps", None)
    return LearnedTraining(
        resnet=MetricTraining(steps=getattr(args, "resnet_steps", steps), seed=args.seed),
        metric=MetricTraining(steps=getattr(args, "metric_steps", steps), seed=args.seed),
        contrastive=ContrastiveTraining(steps=args.ssl_steps, seed=args.seed),
        fusion_splits=args.fusion_splits,
        fusion_noise=noise_types(args.fusion_noise, "--fusion-noise"),
        joint=JointTraining(denoise_weight=args.joint_weight, denoiser_lr_scale=args.joint_denoiser_rate),
    )


def cmd_embedders(args: argparse.Namespace) -> int:
    from ..commands import options_from
    from .embedder_study import study

    options = dataclasses.replace(options_from(args), learned=learned_settings(args))
    data = [d for d in load_data(args, options.montage, options.spec) if d.complete]
    result = study(
        data,
        options,
        args.folds,
        [c.strip() for c in args.candidates.split(",") if c.strip()],  # checked by study()
        keep=args.keep_checkpoints,
        noise_types=noise_types(args.noise),
        int8=args.int8,
    )
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    for name, candidate in result["candidates"].items():
        eer = candidate["summary"]["window_eer"]
        print(f"{name}: window EER {eer['mean']:.3f} +- {eer['std']:.3f}")
    print(f"figures written to {args.json}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from .transfer_run import run_transfer

    result = run_transfer(args)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"figures written to {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..commands import _train_options

    p = sub.add_parser("embedders", help="study: compare embedders on disjoint folds of people")
    add_data_options(p, None)
    _train_options(p)
    p.add_argument("--folds", type=int, default=2, help="number of folds of people (default 2)")
    p.add_argument(
        "--candidates",
        default="spectral,spectral-metric,resnet18-arcface,resnet18-multisimilarity",
        help="comma-separated embedder names: spectral, spectral-metric, resnet18|resnet34-<loss>, "
        "temporal-ssl, temporal[-ssl]-<loss>, temporal-joint-<loss> (fine-tunes the denoiser too), or a "
        "resnet or temporal name other than joint followed by +spectral (<loss>: arcface or multisimilarity)",
    )
    p.add_argument("--resnet-steps", type=int, default=300, help="resnet training steps (default 300)")
    p.add_argument(
        "--metric-steps",
        type=int,
        default=300,
        help="metric-learning steps of the spectral-metric MLP and the temporal network (default 300)",
    )
    _learned_options(p)
    p.add_argument(
        "--noise", default="all", help="noise types for the noisy figures: 'all', 'none' or a list"
    )
    p.add_argument("--int8", action="store_true", help="also measure an int8 copy of every learned embedder")
    p.add_argument("--json", type=Path, required=True, help="write the per-fold and summary figures here")
    p.add_argument(
        "--keep-checkpoints",
        type=Path,
        help="fold checkpoints to reuse (else trained); each learned candidate's fit is kept here too and "
        "reused, and the metric learning of a fit in progress continued (not of spectral-metric or a "
        "+spectral fusion)",
    )
    p.set_defaults(run=cmd_embedders)

    p = sub.add_parser("study", help="studies of the recipe on cached window features")
    actions = p.add_subparsers(dest="study", required=True)
    t = actions.add_parser(
        "transfer",
        help="normalisation, enrollment and score rules on people and corpora never seen",
    )
    from .transfer_run import add_arguments

    add_arguments(t)
    t.set_defaults(run=cmd_transfer)

    # the study's options on the shipped commands
    train = sub.choices["train"]
    train.add_argument(
        "--embedder-steps", type=int, default=300, help="metric-learning steps of a learned embedder"
    )
    _learned_options(train)
    train.set_defaults(learned_settings=learned_settings)
    report = sub.choices["report"]
    report.add_argument(
        "--embedders", type=Path, nargs="*", default=[], help="JSON files from `neuroauth embedders`"
    )
    report.add_argument(
        "--transfer", type=Path, nargs="*", default=[], help="JSON files from `neuroauth study transfer`"
    )
    shipped_report = report.get_default("run")

    def run_report(args: argparse.Namespace) -> int:
        if args.embedders:
            from .report import render_embedders

            print(render_embedders(args.embedders))
        if args.transfer:
            from .transfer_report import render_transfer

            print(render_transfer(args.transfer))
        studies = args.embedders or args.transfer
        return shipped_report(args) if (args.crossval or args.checkpoints or not studies) else 0

    report.set_defaults(run=run_report)
