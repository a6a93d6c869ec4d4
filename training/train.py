"""``neuroauth train``: both stages on a data directory, one checkpoint out.

1. Split validation subjects off the training subjects (subject-disjoint).
2. Train the causal denoiser (SI-SNR) on the training subjects, validating on
   the validation subjects; resumable from ``<out>.partial``.
3. Denoise every training recording, cut windows, and fit the spectral
   embedder with settings chosen by cross-validation over all training subjects
   (unless the embedder asked for neither is nor contains it); then the embedder
   asked for, if another (a ``temporal-joint-*`` one is trained together with
   the denoiser, which it fine-tunes and replaces); a learned embedder's metric
   learning is resumable from ``<out>.embedder.partial``.
4. Embed every window of the training subjects: the background cohort that
   enrolment calibrates against.
5. Record the baseline's training statistics and write the checkpoint atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import remove_stale_temporaries
from ..models.checkpoint import NeuroAuthModel, save_checkpoint
from ..models.denoiser import DenoiserConfig
from ..models.embedders.spectral import SpectralConfig, SpectralFeatures
from ..models.montage import DEFAULT_MONTAGE
from ..models.preprocess import SignalSpec
from .baseline import baseline_stats, psd_extractor
from .cohort import build_cohort
from .data import SubjectData
from .denoiser_training import DenoiserTraining, train_denoiser
from .embedder_training import SpectralSearch, fit_spectral, window_features
from .evaluate import noisy_probes
from .learned_embedders import (
    LearnedTraining,
    fit_embedder,
    fit_with_denoiser,
    needs_noisy_probes,
    needs_signal,
    trains_denoiser,
    uses_spectral,
)
from .protocol import denoise, device, embed, windows_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``neuroauth train`` can set."""

    montage: tuple[str, ...] = DEFAULT_MONTAGE
    spec: SignalSpec = field(default_factory=SignalSpec)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    stage1: DenoiserTraining = field(default_factory=DenoiserTraining)
    search: SpectralSearch = field(default_factory=SpectralSearch)
    embedder: str = "spectral"  # or "spectral-metric", "temporal-ssl", ... (see learned_embedders)
    learned: LearnedTraining = field(default_factory=LearnedTraining)
    val_subjects: int = 3
    seed: int = 0


def split_validation(subjects: Sequence[str], n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """Subject-disjoint split of the training subjects into (fit, validation)."""
    if len(subjects) < n_val + 4:
        raise ValueError(
            f"{len(subjects)} subjects are too few to hold out {n_val} for validation and keep 4 "
            "for cross-validation; add data or lower --val-subjects"
        )
    order = np.random.default_rng(seed).permutation(len(subjects))
    val = sorted(subjects[i] for i in order[:n_val])
    return sorted(s for s in subjects if s not in val), val


def train(
    data: Sequence[SubjectData], options: TrainOptions, out: Path, resume: bool = True, progress: bool = True
) -> NeuroAuthModel:
    """Train both stages on ``data`` and write the checkpoint to ``out``."""
    started = time.time()
    dev = device()
    subjects = [d.subject for d in data]
    fit_subjects, val_subjects = split_validation(subjects, options.val_subjects, options.seed)
    by_subject = {d.subject: d for d in data}

    def recordings(names):
        return [r for s in names for r in (by_subject[s].enrol, by_subject[s].probe)]

    partial = out.with_name(out.name + ".partial") if resume else None
    learned_partial = out.with_name(out.name + ".embedder.partial") if resume else None

    net, stage1 = train_denoiser(
        recordings(fit_subjects),
        recordings(val_subjects),
        options.spec,
        options.denoiser,
        options.stage1,
        options.seed,
        resume_path=partial,
        device=dev,
        progress=progress,
    )
    stage1_seconds = time.time() - started
    net = net.cpu()

    model = NeuroAuthModel(montage=tuple(options.montage), spec=options.spec, denoiser=net, embedder=None)
    n_channels = len(options.montage)
    extractor = SpectralFeatures(
        SpectralConfig(n_channels=n_channels, sfreq=options.spec.sfreq, window=options.spec.window)
    )
    baseline = psd_extractor(n_channels, options.spec.sfreq, options.spec.window)
    joint, spectral_too = trains_denoiser(options.embedder), uses_spectral(options.embedder)
    keep_denoised = needs_signal(options.embedder) and not joint
    windows, raw, denoised, baseline_feats = [], [], [], []
    for d in data:
        enrol, probe = d.enrol.preprocessed(), d.probe.preprocessed()
        if spectral_too or keep_denoised:
            pair = [denoise(model, enrol), denoise(model, probe)]
        if spectral_too:
            windows.append(window_features(d.subject, *pair, extractor, options.spec))
        if keep_denoised:
            denoised.append(pair)
        if joint:
            raw.append([enrol, probe])
        for x in (enrol, probe):
            baseline_feats.append(embed(baseline, windows_of(x, options.spec.sfreq, options.spec.window)))
    spectral, stage2 = None, {}  # an embedder that does not use the spectral one skips its search
    if spectral_too:
        spectral, stage2 = fit_spectral(
            windows, options.spec, n_channels, options.search, options.seed, progress
        )
    if joint:  # the denoiser is fine-tuned with the embedder and replaced
        model.denoiser, embedder, learned = fit_with_denoiser(
            options.embedder, model.denoiser, raw, options.spec, options.learned, progress, learned_partial
        )
    else:
        noisy = None
        if needs_noisy_probes(options.embedder, options.learned):
            noisy = noisy_probes(model, data, options.learned.fusion_noise)
        embedder, learned = fit_embedder(
            options.embedder,
            spectral,
            windows,
            denoised if keep_denoised else None,
            extractor,
            options.spec,
            options.learned,
            progress,
            noisy,
            learned_partial,
        )
    if learned:
        stage2["learned"] = learned

    model.embedder = embedder
    model.cohort = build_cohort(model, data, progress)
    model.baseline = baseline_stats(np.concatenate(baseline_feats))
    model.baseline_config = baseline.config.to_dict()
    model.meta = {
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_subjects": subjects,
        "denoiser_fit_subjects": fit_subjects,
        "denoiser_validation_subjects": val_subjects,
        "seed": options.seed,
        "embedder_choice": options.embedder,
        "learned_training": asdict(options.learned),
        "device": str(dev),
        "denoiser_training": asdict(options.stage1) | stage1,
        "embedder_selection": stage2,
        "seconds": {"denoiser": round(stage1_seconds, 1), "total": round(time.time() - started, 1)},
    }
    identity = save_checkpoint(model, out)
    for state in (partial, learned_partial):
        if state is not None:
            state.unlink(missing_ok=True)
            remove_stale_temporaries(state)  # of a save of the state that a killed run left half-written
    log.info("wrote %s (identity %s) in %.0f s", out, identity, time.time() - started)
    return model.eval()
