"""``neuroauth embedders``: every embedder on people it never saw, beside the spectral one.

The subjects are split into the same disjoint folds as ``neuroauth crossval``
(same seed). For each fold, the fold's checkpoint (denoiser and spectral
embedder, trained on the other subjects; reused from ``--keep-checkpoints``
when trained alike) denoises every recording. The training subjects' denoised
recordings and window features are computed once per fold; each candidate
embedder is then fitted on them only (its fitting time excludes that shared
preparation) and run through the verification protocol on the fold's subjects,
clean and per noise type, with its cost per window; with ``int8``, the clean
figures, size and cost of an int8 copy of every learned embedder too. Figures
are given per fold and as mean and spread over folds.

Candidates: any name of :mod:`.learned_embedders`; ``spectral`` is the
checkpoint's own. A candidate that trains the denoiser too (``temporal-joint-*``)
starts from the fold's denoiser and is evaluated with its own.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...models.checkpoint import NeuroAuthModel
from ...models.embedders.spectral import SpectralConfig, SpectralFeatures
from ..data import SubjectData
from ..embedder_training import SubjectWindows, window_features
from ..evaluate import evaluate, noisy_probes, verification_metrics
from ..protocol import ENROLL_SECONDS, denoise, embed, windows_of
from ..train import TrainOptions, train
from .folds import _kept, aggregate, subject_folds
from .fusion import mean_template_scores
from .kept_fits import FitPaths, keep_fit, load_fit
from .learned_embedders import (
    LearnedTraining,
    check_embedder,
    embed_cost_ms,
    fit_embedder,
    fit_with_denoiser,
    needs_noisy_probes,
    needs_signal,
    trains_denoiser,
)
from .quantization import int8_copy, stored_bytes

log = logging.getLogger(__name__)


def check_candidates(names: Sequence[str]) -> list[str]:
    """The candidate names, or a ValueError naming the first unknown one and the known forms."""
    if not names:
        raise ValueError("no embedder candidates given")
    return [check_embedder(n) for n in names]


@dataclass
class _FoldInputs:
    """What every candidate of a fold is fitted on, subject by subject in the same order."""

    subjects: list[str]
    recordings: list[list[np.ndarray]]  # the denoised enrollment and probe recordings
    windows: list[SubjectWindows]  # the spectral features of their windows (every group)
    extractor: SpectralFeatures
    raw: list[list[np.ndarray]] | None  # the recordings before denoising, for a joint candidate
    noisy: list[dict] | None  # the probes under noise, denoised, for a fusion chosen under noise


def _fold_inputs(
    model: NeuroAuthModel, fit: Sequence[SubjectData], candidates: Sequence[str], training: LearnedTraining
) -> _FoldInputs:
    spec = model.spec
    raw = [[d.enroll.preprocessed(), d.probe.preprocessed()] for d in fit]
    denoised = [[denoise(model, x) for x in pair] for pair in raw]
    extractor = SpectralFeatures(
        SpectralConfig(n_channels=len(model.montage), sfreq=spec.sfreq, window=spec.window)
    )
    windows = [
        window_features(d.subject, [e, p], extractor, spec) for d, (e, p) in zip(fit, denoised, strict=True)
    ]
    joint = any(trains_denoiser(c) for c in candidates)
    noisy = None
    if any(needs_noisy_probes(c, training) for c in candidates):
        noisy = noisy_probes(model, fit, training.fusion_noise)
    return _FoldInputs([d.subject for d in fit], denoised, windows, extractor, raw if joint else None, noisy)


def _fit(
    name: str,
    model: NeuroAuthModel,
    inputs: _FoldInputs | None,
    training: LearnedTraining,
    progress: bool,
    state_path: Path | None = None,
) -> tuple[NeuroAuthModel, dict]:
    """``model`` with the candidate ``name`` fitted on the fold's training subjects, and its record;
    ``state_path`` as for :func:`.learned_embedders.fit_embedder`."""
    if name == "spectral":
        return dataclasses.replace(model, cohort=None), {"chosen": model.meta["embedder_selection"]["chosen"]}
    if trains_denoiser(name):
        denoiser, embedder, record = fit_with_denoiser(
            name, model.denoiser, inputs.raw, model.spec, training, progress, state_path
        )
        return dataclasses.replace(model, denoiser=denoiser, embedder=embedder, cohort=None), record
    recordings = inputs.recordings if needs_signal(name) else None
    embedder, record = fit_embedder(
        name,
        model.embedder,
        inputs.windows,
        recordings,
        inputs.extractor,
        model.spec,
        training,
        progress,
        inputs.noisy,
        state_path,
    )
    return dataclasses.replace(model, embedder=embedder, cohort=None), record


def _fitted(
    name: str,
    model: NeuroAuthModel,
    inputs: Callable[[], _FoldInputs],
    training: LearnedTraining,
    progress: bool,
    paths: FitPaths | None,
) -> tuple[NeuroAuthModel, dict, float]:
    """The candidate ``name`` fitted on the fold (:func:`_fit`), its record and fitting seconds;
    with ``paths``, a kept fit is reused, and a new one is kept and its training resumable."""
    if name == "spectral":  # fitted with the checkpoint: its stage 2 and cohort
        variant, record = _fit(name, model, None, training, progress)
        return variant, record, model.meta["seconds"]["total"] - model.meta["seconds"]["denoiser"]
    kept = load_fit(paths, model, name, training) if paths is not None else None
    if kept is not None:
        return kept
    fold_inputs = inputs()  # shared by the fold's candidates: not counted in any one's fitting time
    spent = paths.seconds_spent() if paths is not None else 0.0  # before an interruption
    started = time.time()
    variant, record = _fit(name, model, fold_inputs, training, progress, paths.state if paths else None)
    seconds = spent + time.time() - started
    if paths is not None:
        keep_fit(paths, variant, model, name, training, record, seconds)
    return variant, record, seconds


def _int8_report(
    model: NeuroAuthModel,
    stage1: NeuroAuthModel,
    inputs: _FoldInputs,
    held: Sequence[SubjectData],
    eer: float,
) -> dict:
    """Clean window EER, size and cost of an int8 copy of ``model``'s embedder, calibrated on training
    windows (of ``stage1``'s denoiser, whose outputs ``inputs`` holds, unless ``model`` has its own)."""
    spec, embedder = model.spec, model.embedder

    def windows(recording, seconds=None):
        return windows_of(denoise(model, recording.preprocessed()), spec.sfreq, spec.window, seconds)

    if model.denoiser is stage1.denoiser:
        enrollments = [enroll for enroll, _ in inputs.recordings]
    else:
        enrollments = [denoise(model, enroll) for enroll, _ in inputs.raw]
    calibration = np.concatenate([windows_of(e, spec.sfreq, spec.window)[::8] for e in enrollments])
    quantised = int8_copy(embedder, calibration)
    enrollments = [embed(quantised, windows(d.enroll, ENROLL_SECONDS)) for d in held]
    probes = [embed(quantised, windows(d.probe)) for d in held]
    scores = mean_template_scores(enrollments, probes, [d.subject for d in held])
    int8_eer = verification_metrics(scores, smoothing=())["window_eer"]
    return {
        "window_eer": int8_eer,
        "eer_change": int8_eer - eer,
        "stored_bytes": stored_bytes(quantised),
        "float_stored_bytes": stored_bytes(embedder),
        "embed_ms_per_window": embed_cost_ms(quantised, len(model.montage), spec.window),
    }


def study(
    data: Sequence[SubjectData],
    options: TrainOptions,
    folds: int,
    candidates: Sequence[str],
    keep: Path | None = None,
    noise_types: Sequence[str] | None = None,
    int8: bool = False,
    progress: bool = True,
) -> dict:
    """Per candidate, every fold's evaluation report and their summary; learned candidates are
    trained as ``options.learned`` says."""
    candidates = check_candidates(candidates)
    options = dataclasses.replace(options, learned=options.learned or LearnedTraining())
    subjects = [d.subject for d in data]
    groups = subject_folds(subjects, folds, options.seed)
    by_subject = {d.subject: d for d in data}
    per_candidate: dict[str, list[dict]] = {name: [] for name in candidates}
    name = "mamba" if options.denoiser.use_mamba else "no_mamba"
    for f, held_out in enumerate(groups):
        fit = [by_subject[s] for s in subjects if s not in held_out]
        held = [by_subject[s] for s in held_out]
        with tempfile.TemporaryDirectory() as tmp:
            out = (keep or Path(tmp)) / f"{name}-fold{f + 1}.pt"
            model = _kept(out, fit, options) if keep is not None else None
            if model is None:
                model = train(fit, options, out, resume=False, progress=progress)
        # computed on first use: a fold whose fits are all kept does not need them
        inputs = functools.cache(
            lambda model=model, fit=fit: _fold_inputs(model, fit, candidates, options.learned)
        )
        for candidate in candidates:
            log.info("fold %d/%d: fitting %s on %d subjects", f + 1, len(groups), candidate, len(fit))
            paths = FitPaths.of(keep, candidate, out) if keep is not None else None
            variant, record, seconds = _fitted(candidate, model, inputs, options.learned, progress, paths)
            embedder = variant.embedder
            kwargs = {} if noise_types is None else {"noise_types": noise_types}
            report, _ = evaluate(variant, held, progress=progress, **kwargs)
            if report["seen_in_training"]:
                raise RuntimeError(
                    f"held-out subjects {report['seen_in_training']} were in the training data"
                )
            report["fit_seconds"] = round(seconds, 1)
            report["embed_ms_per_window"] = embed_cost_ms(embedder, len(model.montage), model.spec.window)
            report["stored_values"] = sum(t.numel() for t in embedder.state_dict().values())
            report["fit"] = record
            if int8 and candidate != "spectral":
                report["int8"] = _int8_report(variant, model, inputs(), held, report["window_eer"])
            per_candidate[candidate].append(report)
    return {
        "folds": groups,
        "montage": list(options.montage),
        "mamba": options.denoiser.use_mamba,
        "resnet_training": dataclasses.asdict(options.learned.resnet),
        "metric_training": dataclasses.asdict(options.learned.metric),
        "contrastive_training": dataclasses.asdict(options.learned.contrastive),
        "fusion_splits": options.learned.fusion_splits,
        "fusion_noise": list(options.learned.fusion_noise),
        "joint_training": dataclasses.asdict(options.learned.joint),
        "candidates": {
            c: {"folds": reports, "summary": aggregate(reports)} for c, reports in per_candidate.items()
        },
    }
