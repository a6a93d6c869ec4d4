"""``neuroauth``: train and evaluate models, enrol owners, replay recordings, benchmark the engine."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from .atomic import atomic_write_text
from .errors import NeuroAuthError
from .paths import ASSETS, BUNDLED_DATA, SHIPPED_CHECKPOINT

__all__ = ["ASSETS", "BUNDLED_DATA", "SHIPPED_CHECKPOINT", "main"]


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


def _embedder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embedder",
        default="spectral",
        help="spectral (default), spectral-metric, resnet18|resnet34-<loss>, temporal-ssl, "
        "temporal[-ssl]-<loss>, temporal-joint-<loss> (fine-tunes the denoiser too), "
        "or a resnet or temporal name other than joint followed by +spectral "
        "(<loss>: arcface or multisimilarity)",
    )
    p.add_argument(
        "--embedder-steps", type=int, default=300, help="metric-learning steps of a learned embedder"
    )
    _learned_options(p)


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
        help="half splits of the training subjects choosing a +spectral fusion weight (default 2)",
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


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--false-lockouts-per-hour",
        type=float,
        default=None,
        help="decision target for the owner (default: the configuration's, else 1)",
    )
    p.add_argument(
        "--time-to-lock",
        type=float,
        default=None,
        help="decision target: seconds to lock an impostor (default: the configuration's, else 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroauth", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the denoiser and the embedder; write one checkpoint")
    _data_options(p, None)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    _train_options(p)
    _embedder_options(p)
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
    p.add_argument(
        "--continuous",
        action="store_true",
        help="replay owner-then-impostor sessions through the engine and the decision over time",
    )
    _target_options(p)

    p = sub.add_parser("crossval", help="train and evaluate on disjoint folds of subjects")
    _data_options(p, None)
    _train_options(p)
    _embedder_options(p)
    p.add_argument("--folds", type=int, default=2, help="number of subject folds (default 2)")
    p.add_argument(
        "--mamba",
        choices=["on", "off", "both"],
        default="both",
        help="denoiser variants to compare (default both)",
    )
    p.add_argument("--json", type=Path, required=True, help="write the per-fold and summary figures here")
    p.add_argument(
        "--continuous", action="store_true", help="also run the continuous evaluation on every fold"
    )
    p.add_argument(
        "--keep-checkpoints",
        type=Path,
        help="keep each fold's checkpoint in this directory, and reuse one trained alike",
    )
    _target_options(p)

    p = sub.add_parser("embedders", help="compare embedders on disjoint folds of subjects (as crossval)")
    _data_options(p, None)
    _train_options(p)
    p.add_argument("--folds", type=int, default=2, help="number of subject folds (default 2)")
    p.add_argument(
        "--candidates",
        default="spectral,spectral-metric,resnet18-arcface,resnet18-multisimilarity",
        help="comma-separated embedder names, as for train --embedder",
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
        help="fold checkpoints of `neuroauth crossval --keep-checkpoints` to reuse (else trained); each "
        "learned candidate's fit is kept here too and reused, and the metric learning of a fit in progress "
        "continued (not of spectral-metric or a +spectral fusion)",
    )

    p = sub.add_parser("enroll", help="record an owner (live LSL stream or a recording) and write a template")
    p.add_argument("--user", required=True, help="the owner's name (letters, digits, _ . -)")
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds of EEG to record (default 60, as evaluated)"
    )
    p.add_argument("--from-file", type=Path, help="enrol from this recording instead of a live stream")
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
    _target_options(p)
    p.add_argument("--replace", action="store_true", help="replace the user's existing template")

    p = sub.add_parser(
        "cohort", help="(re)compute a checkpoint's background cohort from a data directory; write a copy"
    )
    _data_options(p, None)
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint whose models embed the cohort")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write (may be --checkpoint)")

    p = sub.add_parser("demo", help="live demo: enrol, replay owner then impostor, run neuroauthd over MQTT")
    p.add_argument(
        "--impostor-seconds", type=float, default=40.0, help="seconds of the impostor's EEG (default 40)"
    )

    p = sub.add_parser("bench", help="measure the streaming engine here (latency, streams, memory)")
    p.add_argument(
        "--checkpoint", type=Path, default=SHIPPED_CHECKPOINT, help="model to measure (default: shipped 4-ch)"
    )
    p.add_argument("--data", type=Path, default=BUNDLED_DATA, help="recordings for the equivalence check")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")

    from .daemon.replay import add_replay_parser
    from .enroll.commands import add_templates_parser

    add_templates_parser(sub)
    add_replay_parser(sub)

    p = sub.add_parser("report", help="print Markdown tables of cross-validation results and checkpoints")
    p.add_argument(
        "--crossval", type=Path, nargs="*", default=[], help="JSON files from `neuroauth crossval`"
    )
    p.add_argument(
        "--embedders", type=Path, nargs="*", default=[], help="JSON files from `neuroauth embedders`"
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
    from .training.learned_embedders import check_embedder
    from .training.train import TrainOptions

    return TrainOptions(
        montage=parse_montage(args.montage),
        denoiser=DenoiserConfig(use_mamba=not args.no_mamba),
        stage1=DenoiserTraining(steps=args.steps, batch=args.batch),
        search=SpectralSearch(splits=args.cv_splits),
        val_subjects=args.val_subjects,
        seed=args.seed,
        embedder=check_embedder(getattr(args, "embedder", "spectral")),
        learned=_learned_training(args),
    )


def _learned_training(args):
    """The learned embedders' training: ``embedders`` sets the ResNet and metric-learning steps
    apart, ``train`` and ``crossval`` give both ``--embedder-steps``."""
    from .training.contrastive import ContrastiveTraining
    from .training.joint import JointTraining
    from .training.learned_embedders import LearnedTraining
    from .training.metric_learning import MetricTraining

    steps = getattr(args, "embedder_steps", None)
    return LearnedTraining(
        resnet=MetricTraining(steps=getattr(args, "resnet_steps", steps), seed=args.seed),
        metric=MetricTraining(steps=getattr(args, "metric_steps", steps), seed=args.seed),
        contrastive=ContrastiveTraining(steps=args.ssl_steps, seed=args.seed),
        fusion_splits=args.fusion_splits,
        fusion_noise=_noise_types(args.fusion_noise, "--fusion-noise"),
        joint=JointTraining(denoise_weight=args.joint_weight, denoiser_lr_scale=args.joint_denoiser_rate),
    )


def cmd_train(args) -> int:
    from .training.train import train

    options = _options(args)
    data = _load_data(args, options.montage, options.spec)
    model = train(data, options, args.out, resume=not args.no_resume)
    chosen = model.meta["embedder_selection"].get("chosen")  # none for an embedder without the spectral one
    print(f"wrote {args.out} (identity {model.identity()}, {model.meta['seconds']['total']:.0f} s)")
    if chosen is not None:
        print(
            f"spectral embedder settings by cross-validation: {' + '.join(chosen['features'])}, "
            f"PCA {chosen['pca_dim'] or 'none'}, shrinkage {chosen['shrinkage']} "
            f"(window EER {chosen['eer_mean']:.3f} +- {chosen['eer_std']:.3f})"
        )
    fusion = format_fusion_choice(model.meta)
    if fusion:
        print(fusion)
    return 0


def format_fusion_choice(meta: dict) -> str | None:
    """The spectral weight (and loss) cross-validation chose for a fused embedder, if one was trained."""
    learned = meta["embedder_selection"].get("learned", {})
    best = learned.get("chosen")
    if best is None:
        return None
    loss = f", loss {best['loss']}" if "loss" in best else ""
    noise = learned.get("noise")
    eer = f"mean window EER, clean and under {', '.join(noise)}" if noise else "window EER"
    return (
        f"{meta['embedder_choice']} by cross-validation: spectral weight {best['fuse']}{loss} "
        f"({eer} {best['eer_mean']:.3f} +- {best['eer_std']:.3f})"
    )


def _targets(args, settings=None):
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


def cmd_evaluate_continuous(args, model) -> int:
    from .training.continuous import evaluate_continuous, plot_session

    data = _load_data(args, model.montage, model.spec)
    report, sessions, _ = evaluate_continuous(model, data, _targets(args))
    print(format_continuous(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if args.plots:
        path = plot_session(sessions[0], args.plots / "continuous_session.png")
        print(f"plot written to {path}")
    return 0


def format_continuous(report: dict) -> str:
    def span(key):
        v = report[key]
        return (
            "n/a" if v["median"] is None else f"median {v['median']:.1f} s, p95 {v['p95']:.1f} s (n={v['n']})"
        )

    lines = []
    if "cohort_subjects" in report:
        lines.append(
            f"subjects: {len(report['subjects'])}; calibration cohort: "
            f"{len(report['cohort_subjects'])} other people"
        )
    lines += [
        f"time to unlock (owner)      {span('time_to_unlock_s')}",
        f"time to lock (takeover)     {span('time_to_lock_s')}",
        f"false lock-outs per hour    {report['false_lockouts_per_hour']:.2f} "
        f"({report['false_lockouts']} in {report['owner_hours']:.2f} h of owner EEG)",
        f"owner time unlocked         {100 * report['owner_unlocked_share']:.0f} %",
        f"impostor unlocks per hour   {report['impostor_unlocks_per_hour']:.2f}",
        f"window EER                  {report['window_eer']:.3f}",
    ]
    if report["owners_never_unlocked"]:
        lines.append(f"owners never unlocked: {', '.join(report['owners_never_unlocked'])}")
    if report.get("seen_in_training"):
        lines.append(
            f"NOTE: {len(report['seen_in_training'])} of these subjects were in the checkpoint's training "
            "data; for people the model never saw, see `neuroauth crossval --continuous`."
        )
    return "\n".join(lines)


def _noise_types(text: str, option: str = "--noise") -> tuple[str, ...]:
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


def cmd_evaluate(args) -> int:
    from .models.checkpoint import load_checkpoint
    from .training.evaluate import evaluate, write_plots

    model = load_checkpoint(args.checkpoint)
    if args.continuous:
        return cmd_evaluate_continuous(args, model)
    data = _load_data(args, model.montage, model.spec)
    report, scores = evaluate(model, data, _noise_types(args.noise), args.seed)
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
    targets = _targets(args) if args.continuous else None
    result = crossval(data, options, args.folds, mamba, continuous=targets, keep=args.keep_checkpoints)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    for name, variant in result["variants"].items():
        ours, base = variant["summary"]["window_eer"], variant["summary"]["baseline_psd"]["window_eer"]
        print(
            f"{name}: window EER {ours['mean']:.3f} +- {ours['std']:.3f}, "
            f"baseline {base['mean']:.3f} +- {base['std']:.3f}"
        )
        if "continuous_pooled" in variant:
            print(format_continuous(variant["continuous_pooled"]))
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
    if report.get("seen_in_training"):
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


def cmd_embedders(args) -> int:
    from .training.embedder_study import study

    options = _options(args)
    data = _load_data(args, options.montage, options.spec)
    result = study(
        data,
        options,
        args.folds,
        [c.strip() for c in args.candidates.split(",") if c.strip()],  # checked by study()
        keep=args.keep_checkpoints,
        noise_types=_noise_types(args.noise),
        int8=args.int8,
    )
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    for name, candidate in result["candidates"].items():
        eer = candidate["summary"]["window_eer"]
        print(f"{name}: window EER {eer['mean']:.3f} +- {eer['std']:.3f}")
    print(f"figures written to {args.json}")
    return 0


def cmd_enroll(args) -> int:
    from tqdm.auto import tqdm

    from .enroll.calibration import MIN_OWNER_WINDOWS, enrol, subjects_recorded_in
    from .enroll.collect import collect_windows, require_enough
    from .enroll.store import TemplateStore, default_templates_dir
    from .enroll.template import validate_user
    from .errors import CheckpointError
    from .models.checkpoint import load_checkpoint
    from .models.streaming import EngineConfig
    from .sources import file_source, lsl_source

    validate_user(args.user)
    settings = None
    if args.config is not None:
        from .config import load_settings

        settings = load_settings(args.config)
    configured_dir = settings.templates.directory if settings is not None else None
    store = TemplateStore(args.templates_dir or configured_dir or default_templates_dir())
    checkpoint = args.checkpoint or (settings.model.checkpoint if settings is not None else None)
    args.checkpoint = checkpoint or SHIPPED_CHECKPOINT
    loopback = settings.lsl.loopback_only if settings is not None else True
    if store.path(args.user).exists() and not args.replace:
        raise NeuroAuthError(
            f"{args.user} already has a template ({store.path(args.user)}); pass --replace to enrol again"
        )
    model = load_checkpoint(args.checkpoint)
    if model.cohort is None:
        raise CheckpointError(
            f"checkpoint {args.checkpoint} carries no background cohort to calibrate against; add one with "
            "`neuroauth cohort --checkpoint ... --data DIR --out ...`"
        )
    if args.from_file is not None:
        source = file_source(args.from_file, args.duration)
    else:
        from .daemon.lslconfig import configure_lsl

        configure_lsl(loopback_only=loopback and not args.lan)
        given = args.stream_name or args.stream_type or args.source_id
        stream_type = args.stream_type or (None if given else "EEG")
        source = lsl_source(args.stream_name, stream_type, args.source_id, args.duration)
    hop = settings.model.hop_seconds if settings is not None else EngineConfig().hop_seconds
    expected = max(0, int((source.seconds - model.spec.window_seconds) / hop) + 1)
    print(f"enrolling {args.user} from {source.description}, {source.seconds:.0f} s")
    with tqdm(total=expected, unit="window", desc="windows") as bar:

        def on_window(c) -> None:
            bar.update(c.accepted + c.rejected - bar.n)
            bar.set_postfix(accepted=c.accepted, refused=c.rejected)

        # a live stream's rate is checked from its timestamps; a file's timestamps are made from its rate
        rate_tolerance = None if source.exact_timestamps else EngineConfig().rate_tolerance
        config = EngineConfig(hop_seconds=hop, rate_tolerance=rate_tolerance)
        collected = collect_windows(
            model, source.channel_names, source.sfreq, source.chunks, config, on_window=on_window
        )
    print(collected.summary())
    owner = require_enough(collected, MIN_OWNER_WINDOWS, source.description)
    cohort = model.cohort
    recorded = subjects_recorded_in(cohort, owner)
    if recorded:
        print(f"left out of the cohort: {', '.join(sorted(recorded))} (this recording is in it)")
        cohort = cohort.without(recorded)
    template = enrol(
        owner,
        cohort,
        user=args.user,
        checkpoint_identity=model.identity(),
        embedder=model.embedder_name,
        policy=args.policy,
        target_far=args.target_far,
        targets=_targets(args, settings),
        hop_seconds=hop,
    )
    path = store.save(template)
    print(f"template of {args.user} written to {path}")
    from .enroll.commands import format_template

    print(format_template(template, path))
    return 0


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


def cmd_demo(args) -> int:
    from .demo import run

    return run(args.impostor_seconds)


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

    print(render(args.crossval, args.checkpoints, args.embedders), end="")
    return 0


def cmd_templates(args) -> int:
    from .enroll.commands import cmd_templates as run

    return run(args)


def cmd_replay(args) -> int:
    from .daemon.replay import cmd_replay as run

    return run(args)


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "crossval": cmd_crossval,
    "embedders": cmd_embedders,
    "cohort": cmd_cohort,
    "enroll": cmd_enroll,
    "templates": cmd_templates,
    "replay": cmd_replay,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "report": cmd_report,
}


class Stopped(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that every atomic write removes its temporary file."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped


# what a command stopped half-way picks up when it is run again
RESUMING = {
    "train": "training resumes from <out>.partial and <out>.embedder.partial when run again",
    "embedders": "with --keep-checkpoints, its finished fits are reused and the training of a fit "
    "continues when run again",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if in_main_thread else None
    try:
        return COMMANDS[args.command](args)
    except NeuroAuthError as exc:
        print(f"neuroauth {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"neuroauth {args.command}: {exc}", file=sys.stderr)
        return 2
    except (Stopped, KeyboardInterrupt) as exc:
        by = "SIGTERM" if isinstance(exc, Stopped) else "Ctrl-C"
        hint = f" ({RESUMING[args.command]})" if args.command in RESUMING else ""
        print(
            f"neuroauth {args.command}: stopped by {by} before finishing; every file it was writing is "
            f"as it was before{hint}",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, Stopped) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
