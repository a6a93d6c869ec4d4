"""``neuroauth train``: both stages on one or more corpora, one checkpoint out.

1. Split validation people off the training people (subject-disjoint).
2. Train the causal denoiser (SI-SNR) on the training people, validating on the
   validation people; resumable from ``<out>.partial``. A denoiser trained
   elsewhere may be given instead (cross-validation reuses one per held-out corpus).
3. Denoise every training recording, cut windows, and fit the spectral embedder,
   each corpus standardised by its own statistics, with settings chosen by
   cross-validation over the training people (:mod:`.embedder_training`); then,
   when another embedder is asked for, its registered fit
   (:mod:`.embedder_registry`; one trained with the denoiser replaces it).
4. The background cohort: the training people's windows, 4 s apart, embedded as
   the shipped embedder embeds them. The calibration sequences: unseen people's score
   sequences by cross-fitting (:mod:`.crossfit`), which enrollment tunes the
   decision over time on.
5. Record the baseline's training statistics and write the checkpoint atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import remove_stale_temporaries
from ..models.checkpoint import NeuroAuthModel, save_checkpoint
from ..models.cohort import Cohort, ScoreSequences
from ..models.denoiser import CausalDenoiser, DenoiserConfig
from ..models.embedders.spectral import SpectralConfig, SpectralFeatures
from ..models.montage import DEFAULT_MONTAGE
from ..models.preprocess import SignalSpec
from .baseline import baseline_stats, psd_extractor
from .cohort import build_cohort
from .crossfit import CrossFit, crossfit_sequences
from .data import SubjectData
from .denoiser_training import DenoiserTraining, train_denoiser
from .embedder_registry import FitRequest, resolve
from .embedder_training import SpectralFit, SpectralSearch, SubjectWindows, fit_spectral, person_features
from .protocol import HOP_SECONDS, denoise, device, embed, windows_of
from .wccn import apply_projection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``neuroauth train`` can set."""

    montage: tuple[str, ...] = DEFAULT_MONTAGE
    spec: SignalSpec = field(default_factory=SignalSpec)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    stage1: DenoiserTraining = field(default_factory=DenoiserTraining)
    search: SpectralSearch = field(default_factory=SpectralSearch)
    crossfit: CrossFit = field(default_factory=CrossFit)
    embedder: str = "spectral"  # another name is fitted by its registered fit (embedder_registry)
    learned: Any = None  # that fit's settings
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


@dataclass
class Denoiser:
    """A trained stage 1 and where it came from."""

    net: CausalDenoiser
    record: dict  # its training settings and figures
    fit_subjects: list[str]
    validation_subjects: list[str]
    seconds: float = 0.0


def train_stage1(
    data: Sequence[SubjectData], options: TrainOptions, partial: Path | None, progress: bool = True
) -> Denoiser:
    """Train the denoiser on ``data`` (validation people split off); resumable from ``partial``."""
    started = time.time()
    by_subject = {d.subject: d for d in data}
    fit_subjects, val_subjects = split_validation(
        [d.subject for d in data], options.val_subjects, options.seed
    )

    def recordings(names):
        return [r for s in names for r in by_subject[s].present()]

    net, record = train_denoiser(
        recordings(fit_subjects),
        recordings(val_subjects),
        options.spec,
        options.denoiser,
        options.stage1,
        options.seed,
        resume_path=partial,
        device=device(),
        progress=progress,
    )
    return Denoiser(
        net.cpu(), asdict(options.stage1) | record, fit_subjects, val_subjects, time.time() - started
    )


class DenoisedRecordings:
    """Each recording of each person once denoised by one denoiser (kept for the next use)."""

    def __init__(self, denoiser: CausalDenoiser, spec: SignalSpec) -> None:
        self._model = NeuroAuthModel(montage=(), spec=spec, denoiser=denoiser, embedder=None)
        self._done: dict[tuple[str, int], np.ndarray] = {}

    def __call__(self, d: SubjectData) -> list[np.ndarray]:
        """``d``'s recordings, in the order of :meth:`SubjectData.present`, denoised (model units)."""
        out = []
        for i, rec in enumerate(d.recordings):
            if rec is None:
                continue
            key = (d.subject, i)
            if key not in self._done:
                self._done[key] = denoise(self._model, rec.preprocessed()).astype(np.float32)
            out.append(self._done[key].astype(np.float64))
        return out


@dataclass
class Stage2:
    """Everything fitted after the denoiser."""

    embedder: Any
    denoiser: CausalDenoiser  # the stage-1 one, or the one a joint fit returned
    cohort: Cohort | None
    calibration: ScoreSequences | None
    record: dict


COHORT_STRIDE = 4  # windows: the cohort keeps every 4th window, one 4 s window after the other


def spectral_cohort(windows: Sequence[SubjectWindows], fitted: SpectralFit) -> Cohort:
    """Windows of the training people, 4 s apart, embedded exactly as the shipped embedder embeds a
    window at a headset of one user (the pooled statistics): a template is calibrated against
    impostors as it will meet them, and a recording of a training person is recognised in the
    cohort when that person enrolls from it. (Windows every second overlap by three quarters:
    keeping all would quadruple the checkpoint for little more to calibrate against.)"""
    embeddings, subject, recording = [], [], []
    for i, w in enumerate(windows):
        for r, x in enumerate(w.recordings):
            kept = apply_projection(x[::COHORT_STRIDE][:, fitted.columns], fitted.projection)
            embeddings.append(kept.astype(np.float32))
            subject.append(np.full(len(kept), i))
            recording.append(np.full(len(kept), r))
    return Cohort(
        embeddings=np.concatenate(embeddings),
        subject=np.concatenate(subject).astype(np.int64),
        recording=np.concatenate(recording).astype(np.int64),
        subjects=tuple(w.subject for w in windows),
        hop_seconds=HOP_SECONDS * COHORT_STRIDE,
    )


def fit_stage2(
    data: Sequence[SubjectData],
    denoiser: CausalDenoiser,
    options: TrainOptions,
    denoised: DenoisedRecordings | None = None,
    progress: bool = True,
    state_path: Path | None = None,
) -> Stage2:
    """The embedder, cohort and calibration sequences for ``data``, after ``denoiser``."""
    denoised = denoised or DenoisedRecordings(denoiser, options.spec)
    n_channels = len(options.montage)
    extractor = SpectralFeatures(
        SpectralConfig(n_channels=n_channels, sfreq=options.spec.sfreq, window=options.spec.window)
    )
    other = resolve(options.embedder)
    spectral_too = other is None or other.uses_spectral
    windows = []
    if spectral_too:
        windows = [person_features(d, denoised(d), extractor, options.spec) for d in data]
    fitted, record = None, {}
    if spectral_too:
        fitted = fit_spectral(windows, options.spec, n_channels, options.search, options.seed, progress)
        record = fitted.report
    if other is None:
        cohort = spectral_cohort(windows, fitted)
        calibration = crossfit_sequences(
            windows, fitted.columns, fitted.pca_dim, fitted.shrinkage, options.crossfit, progress=progress
        )
        return Stage2(fitted.embedder, denoiser, cohort, calibration, record)

    complete = [d for d in data if d.complete]  # learned embedders train on pairs of recordings
    model = NeuroAuthModel(
        montage=tuple(options.montage), spec=options.spec, denoiser=denoiser, embedder=None
    )

    def noisy(kinds):
        from .evaluate import noisy_probes

        return noisy_probes(model, complete, kinds)

    request = FitRequest(
        name=options.embedder,
        settings=options.learned,
        spectral=fitted.embedder if fitted is not None else None,
        windows=[w for w in windows if w.complete],
        denoised=[denoised(d)[:2] for d in complete]
        if other.needs_signal and not other.trains_denoiser
        else None,
        raw=[[r.preprocessed() for r in d.present()[:2]] for d in complete]
        if other.trains_denoiser
        else None,
        denoiser=denoiser,
        extractor=extractor,
        spec=options.spec,
        noisy=noisy,
        progress=progress,
        state_path=state_path,
    )
    result = other.fit(request)
    record["learned"] = result.record
    model.embedder = result.embedder
    model.denoiser = result.denoiser or denoiser
    # a learned embedder is not cross-fitted (that would train it once per fold): no calibration
    # sequences, so its checkpoint is for offline comparison, not for enrolling owners
    return Stage2(result.embedder, model.denoiser, build_cohort(model, data, progress), None, record)


def assemble(stage2: Stage2, options: TrainOptions, data: Sequence[SubjectData]) -> NeuroAuthModel:
    """The model of ``stage2``, with the PSD baseline's statistics of ``data`` (its training people)."""
    baseline = psd_extractor(len(options.montage), options.spec.sfreq, options.spec.window)
    feats = [
        embed(baseline, windows_of(r.preprocessed(), options.spec.sfreq, options.spec.window))
        for d in data
        for r in d.present()
    ]
    return NeuroAuthModel(
        montage=tuple(options.montage),
        spec=options.spec,
        denoiser=stage2.denoiser,
        embedder=stage2.embedder,
        baseline=baseline_stats(np.concatenate(feats)),
        baseline_config=baseline.config.to_dict(),
        meta={"training_subjects": [d.subject for d in data]},
        cohort=stage2.cohort,
        calibration=stage2.calibration,
    )


def train(
    data: Sequence[SubjectData],
    options: TrainOptions,
    out: Path,
    resume: bool = True,
    progress: bool = True,
    denoiser: Denoiser | None = None,
    denoised: DenoisedRecordings | None = None,
) -> NeuroAuthModel:
    """Train both stages on ``data`` and write the checkpoint to ``out``.

    ``denoiser`` (with ``denoised``, its recordings of ``data``) skips stage 1.
    """
    started = time.time()
    partial = out.with_name(out.name + ".partial") if resume else None
    learned_partial = out.with_name(out.name + ".embedder.partial") if resume else None
    if denoiser is None:
        denoiser = train_stage1(data, options, partial, progress)
        denoised = None
    stage2 = fit_stage2(data, denoiser.net, options, denoised, progress, learned_partial)

    model = assemble(stage2, options, data)
    model.meta = {
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_subjects": [d.subject for d in data],
        "corpora": sorted({d.corpus.name for d in data}),
        "denoiser_fit_subjects": denoiser.fit_subjects,
        "denoiser_validation_subjects": denoiser.validation_subjects,
        "seed": options.seed,
        "embedder_choice": options.embedder,
        "learned_training": None if options.learned is None else asdict(options.learned),
        "crossfit": asdict(options.crossfit),
        "device": str(device()),
        "denoiser_training": denoiser.record,
        "embedder_selection": stage2.record,
        "seconds": {"denoiser": round(denoiser.seconds, 1), "total": round(time.time() - started, 1)},
    }
    identity = save_checkpoint(model, out)
    for state in (partial, learned_partial):
        if state is not None:
            state.unlink(missing_ok=True)
            remove_stale_temporaries(state)  # of a save of the state that a killed run left half-written
    log.info("wrote %s (identity %s) in %.0f s", out, identity, time.time() - started)
    return model.eval()
