"""Enrolment: from an owner's embedding windows and a background cohort to a calibrated template.

1. **Centroid**: the normalised mean of the owner's windows (the cosine score).
2. **One-class SVM search**: ``nu`` and ``gamma`` chosen per owner by EER against
   impostor windows, as in the HMOG continuous-authentication study. Genuine scores
   come from a time-blocked k-fold over the owner's windows: fit on the other
   blocks, score the held-out block. Windows are 4 s long every 1 s, so training
   windows within ``gap_windows`` (3) of a held-out block overlap it and are dropped.
   Each fold's EER compares its held-out windows with the cohort windows scored by
   the same fold model; the grid point with the lowest mean EER over folds wins.
   ``gamma`` is searched as multiples of ``1 / median squared distance`` between
   owner windows. The final SVM is fitted on all owner windows.
3. **Fusion statistics** (:mod:`neuroauth.enroll.scoring`) from the final template's
   scores of every cohort window. The owner's held-out fused scores are made with
   each fold's own centroid, SVM and fusion statistics, so they estimate how the
   template scores owner windows it never saw.
4. **Threshold** on the fused score by policy: ``target-far`` (the cohort quantile
   giving that false-accept rate), ``eer`` (where held-out genuine and cohort rates
   cross) or ``youden`` (max TPR - FPR).
5. **Decision over time** (:func:`neuroauth.enroll.decision.calibrate_decision`) tuned
   on the cohort's own people (:func:`cohort_sequences`): each in turn enrolled from
   the start of one recording, as the owner is, and probed with its *other* recording
   and with everyone else's. The owner's held-out windows come from the enrolment
   session itself and would promise scores a later session does not reach; the
   cohort shows how much a person's score drops between recordings (rest, then a
   task, for the shipped data), and the fused score, being in units of each
   template's own impostor distribution, carries that over to a new owner.

The cohort must not contain the owner (use ``cohort.without({user})`` if it might).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CheckpointError, DataError
from ..training.metrics import det_curve, eer
from .decision import DecisionGrid, DecisionTargets, calibrate_decision
from .ocsvm import OneClassSvm, fit_kernel, fit_ocsvm, squared_distances
from .scoring import FusionStats, cosine_scores
from .template import POLICIES, Template, Threshold, utc_now, validate_user

if TYPE_CHECKING:
    from ..models.cohort import Cohort

log = logging.getLogger(__name__)

MIN_OWNER_WINDOWS = 30
_ROWS = 8192  # cohort rows scored at a time


@dataclass(frozen=True)
class SvmSearch:
    """The grid and protocol of the per-owner one-class SVM search."""

    nu: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2)
    gamma_multiples: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # times 1 / median squared distance
    folds: int = 5
    gap_windows: int = 3  # windows dropped each side of a held-out block (4 s windows, 1 s hop)
    max_impostors: int = 2000  # cohort windows used in the search (a fixed random subsample)
    seed: int = 0

    def __post_init__(self) -> None:
        if not (2 <= self.folds <= 10 and 0 <= self.gap_windows <= 10 and self.max_impostors >= 100):
            raise ValueError(
                f"SVM search needs 2-10 folds, a gap of 0-10 windows and >= 100 impostors: {self}"
            )
        if not self.nu or not self.gamma_multiples:
            raise ValueError("SVM search needs at least one nu and one gamma multiple")


@dataclass(frozen=True)
class _Fold:
    train: np.ndarray  # (n_train,) indices into the owner windows
    test: np.ndarray  # (n_test,) contiguous indices, time order


def _folds(n: int, folds: int, gap: int) -> list[_Fold]:
    out = []
    for block in np.array_split(np.arange(n), folds):
        index = np.arange(n)
        train = index[(index < block[0] - gap) | (index > block[-1] + gap)]
        out.append(_Fold(train=train, test=block))
    return out


def enrol(
    owner: np.ndarray,
    cohort: Cohort,
    *,
    user: str,
    checkpoint_identity: str,
    embedder: str,
    policy: str = "target-far",
    target_far: float = 0.01,
    targets: DecisionTargets | None = None,
    search: SvmSearch | None = None,
    decision_grid: DecisionGrid | None = None,
    llr_clip: float = 3.0,
    gap_seconds: float = 3.0,
    hop_seconds: float | None = None,
) -> Template:
    """Calibrate a template for ``user`` from ``owner (n, D)`` windows (unit vectors, time order).

    ``hop_seconds`` is the spacing of the owner's windows (default: the cohort's hop).
    Raises :class:`DataError` when the owner's windows cannot make a template and
    :class:`CheckpointError` when the cohort cannot calibrate one.
    """
    started = time.perf_counter()
    validate_user(user)
    targets = targets or DecisionTargets()
    search = search or SvmSearch()
    if policy not in POLICIES:
        raise ValueError(f"threshold policy {policy!r} is not one of {', '.join(POLICIES)}")
    if not 0 < target_far < 1:
        raise ValueError(f"target false-accept rate must lie in (0, 1), got {target_far}")
    owner = _check_inputs(owner, cohort, user)
    hop = float(hop_seconds if hop_seconds is not None else cohort.hop_seconds)
    n, dim = owner.shape

    # the SVM search and the held-out scores use a fixed random subsample of the cohort's windows
    # (at most search.max_impostors), which keeps a call to about a second
    rng = np.random.default_rng(search.seed)
    m = len(cohort.embeddings)
    sample = np.sort(rng.choice(m, size=min(m, search.max_impostors), replace=False))
    impostors = np.asarray(cohort.embeddings[sample], dtype=np.float64)  # (m', D)
    folds = _folds(n, search.folds, search.gap_windows)
    found = _search_svm(owner, impostors, folds, search)
    nu, gamma = found.nu, found.gamma
    log.info("one-class SVM for %s: nu %.3g, gamma %.3g (mean fold EER %.3f)", user, nu, gamma, found.eer)
    held = _held_out_scores(owner, impostors, folds, nu, gamma)
    genuine = np.concatenate(held.fused)

    # -- the final template's scores of every cohort window
    centroid = _centroid(owner)
    svm = fit_ocsvm(owner, nu, gamma)
    cohort_cos, cohort_svm = _cohort_scores(cohort.embeddings, centroid, svm)
    fusion = FusionStats.measure(cohort_cos, cohort_svm)
    impostor = fusion.fuse(cohort_cos, cohort_svm)
    if genuine.mean() <= impostor.mean():
        raise DataError(
            f"the {n} enrolment windows of {user!r} score no higher than other people's windows when held "
            f"out (owner mean {genuine.mean():.2f}, cohort mean {impostor.mean():.2f}): the recording is "
            "mostly artefact or was embedded with another checkpoint. Record again with a well-seated "
            "headset, using the same checkpoint."
        )
    threshold = choose_threshold(genuine, impostor, policy, target_far)

    multiple = found.gamma / found.gamma_scale
    owner_sequences, impostor_sequences = cohort_sequences(cohort, n, found.nu, multiple)
    decision = calibrate_decision(
        owner_sequences,
        impostor_sequences,
        hop,
        targets,
        llr_clip=llr_clip,
        gap_seconds=gap_seconds,
        grid=decision_grid,
    )
    seconds = time.perf_counter() - started
    calibration = {
        "svm_search": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(search).items()},
            "gamma_scale": found.gamma_scale,
            "gamma_heuristic": "1 / median squared distance between owner windows",
            "impostor_windows": len(sample),
            "owner_windows_per_fold": [len(f.test) for f in folds],
            "training_windows_per_fold": [len(f.train) for f in folds],
            "chosen": {"nu": nu, "gamma": gamma, "eer": found.eer},
            "grid": found.grid,
        },
        "window_eer": {
            "fused": eer(genuine, impostor),
            "cosine": eer(
                np.concatenate(held.cosine_z), (cohort_cos - fusion.cosine_mean) / fusion.cosine_std
            ),
            "svm": eer(np.concatenate(held.svm_z), (cohort_svm - fusion.svm_mean) / fusion.svm_std),
            "held_out_owner_windows": len(genuine),
            "cohort_windows": len(impostor),
        },
        "cohort": {
            "subjects": len(np.unique(cohort.subject)),
            "windows": len(impostor),
            "hop_seconds": cohort.hop_seconds,
        },
        "threshold": threshold.to_dict(),
        "decision": decision.record,
        "seconds": round(seconds, 3),
    }
    log.info(
        "enrolled %s from %d windows in %.1f s: window EER %.3f, threshold %.3f (%s), decision targets %s",
        user,
        n,
        seconds,
        calibration["window_eer"]["fused"],
        threshold.value,
        policy,
        "met" if decision.meets_targets else "NOT met",
    )
    return Template(
        user=user,
        checkpoint_identity=checkpoint_identity,
        embedder=embedder,
        dim=dim,
        centroid=centroid,
        svm=svm,
        fusion=fusion,
        threshold=threshold,
        decision=decision.params,
        created=utc_now(),
        n_windows=n,
        calibration=calibration,
    )


@dataclass(frozen=True)
class _SearchResult:
    nu: float
    gamma: float
    eer: float  # mean over folds
    gamma_scale: float
    grid: list[dict]  # every setting with its mean and per-fold EER


def _search_svm(
    owner: np.ndarray, impostors: np.ndarray, folds: list[_Fold], search: SvmSearch
) -> _SearchResult:
    """The (nu, gamma) with the lowest mean fold EER of held-out owner windows against ``impostors``.

    Distances are computed once; each setting reuses them through a precomputed kernel.
    """
    d2_owner = squared_distances(owner, owner)  # (n, n)
    d2_impostor = squared_distances(impostors, owner)  # (m', n)
    median_d2 = float(np.median(d2_owner[np.triu_indices(len(owner), k=1)]))
    gamma_scale = 1.0 / median_d2 if median_d2 > 1e-12 else 1.0
    grid = []
    for multiple in search.gamma_multiples:
        gamma = multiple * gamma_scale
        k_owner, k_impostor = np.exp(-gamma * d2_owner), np.exp(-gamma * d2_impostor)
        for nu in search.nu:
            fold_eers = []
            for fold in folds:
                fit = fit_kernel(k_owner[np.ix_(fold.train, fold.train)], nu)
                genuine = fit.decision(k_owner[np.ix_(fold.test, fold.train)])  # (n_test,)
                impostor = fit.decision(k_impostor[:, fold.train])  # (m',)
                fold_eers.append(eer(genuine, impostor))
            grid.append(
                {
                    "nu": nu,
                    "gamma": gamma,
                    "gamma_multiple": multiple,
                    "eer": float(np.mean(fold_eers)),
                    "fold_eers": [float(e) for e in fold_eers],
                }
            )
    best = min(grid, key=lambda g: g["eer"])  # the first of equals, in grid order
    return _SearchResult(best["nu"], best["gamma"], best["eer"], gamma_scale, grid)


@dataclass(frozen=True)
class _HeldOut:
    """The owner's held-out scores, one array per block in time order."""

    fused: list[np.ndarray]
    cosine_z: list[np.ndarray]  # z-normalised against the fold's impostor scores
    svm_z: list[np.ndarray]


def _held_out_scores(
    owner: np.ndarray, impostors: np.ndarray, folds: list[_Fold], nu: float, gamma: float
) -> _HeldOut:
    """Score each held-out block with its fold's own centroid, SVM and fusion statistics.

    The z-normalisation makes scores of different fold models comparable with the
    final template's: each is in units of that model's impostor distribution.
    """
    out = _HeldOut([], [], [])
    for fold in folds:
        centroid = _centroid(owner[fold.train])
        svm = fit_ocsvm(owner[fold.train], nu, gamma)
        stats = FusionStats.measure(cosine_scores(impostors, centroid), svm.decision_function(impostors))
        cos, dec = cosine_scores(owner[fold.test], centroid), svm.decision_function(owner[fold.test])
        out.fused.append(stats.fuse(cos, dec))
        out.cosine_z.append((cos - stats.cosine_mean) / stats.cosine_std)
        out.svm_z.append((dec - stats.svm_mean) / stats.svm_std)
    return out


def choose_threshold(genuine: np.ndarray, impostor: np.ndarray, policy: str, target_far: float) -> Threshold:
    """The fused-score threshold by ``policy``; a window is accepted when its score is >= the threshold."""
    genuine, impostor = np.asarray(genuine, dtype=np.float64), np.asarray(impostor, dtype=np.float64)
    if policy == "target-far":
        ranked = np.sort(impostor)[::-1]
        allowed = math.floor(target_far * len(ranked))  # impostor windows that may be accepted
        value = float(np.nextafter(ranked[allowed], np.inf)) if allowed < len(ranked) else float(ranked[-1])
    elif policy in ("eer", "youden"):
        far, frr, thresholds = det_curve(genuine, impostor)
        finite = np.isfinite(thresholds)
        far, frr, thresholds = far[finite], frr[finite], thresholds[finite]
        k = int(np.argmin(np.abs(far - frr))) if policy == "eer" else int(np.argmax(1.0 - frr - far))
        value = float(thresholds[k])
    else:
        raise ValueError(f"threshold policy {policy!r} is not one of {', '.join(POLICIES)}")
    return Threshold(
        policy=policy,
        value=value,
        target_far=target_far if policy == "target-far" else None,
        far=float(np.mean(impostor >= value)),
        frr=float(np.mean(genuine < value)),
    )


def _check_inputs(owner: np.ndarray, cohort: Cohort, user: str) -> np.ndarray:
    owner = np.asarray(owner, dtype=np.float64)
    if owner.ndim != 2:
        raise DataError(
            f"enrolment windows of {user!r} must be an (n, D) array of embeddings, got {owner.shape}"
        )
    if len(owner) < MIN_OWNER_WINDOWS:
        raise DataError(
            f"only {len(owner)} enrolment window(s) of {user!r} passed the quality gate; a template "
            f"needs at least {MIN_OWNER_WINDOWS} (about {MIN_OWNER_WINDOWS} s of clean EEG at a 1 s hop). "
            "Record longer, with the headset well seated, and enrol again."
        )
    if not np.isfinite(owner).all():
        raise DataError(
            f"enrolment windows of {user!r} hold NaN or infinite values; embed the recording again"
        )
    if len(cohort.embeddings) == 0 or len(np.unique(cohort.subject)) == 0:
        raise CheckpointError(
            "the checkpoint's background cohort is empty, so no impostor windows can calibrate the template; "
            "use a checkpoint trained with a cohort (`neuroauth train`), or the shipped one"
        )
    if cohort.dim != owner.shape[1]:
        raise CheckpointError(
            f"enrolment windows of {user!r} are {owner.shape[1]}-d but the checkpoint's cohort is "
            f"{cohort.dim}-d; embed the enrolment recording with the checkpoint that holds the cohort"
        )
    return owner


def _centroid(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)  # (D,)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _cohort_scores(
    embeddings: np.ndarray, centroid: np.ndarray, svm: OneClassSvm
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and SVM scores ``(M,)`` of every cohort window, a block of rows at a time."""
    cos = np.empty(len(embeddings))
    dec = np.empty(len(embeddings))
    for start in range(0, len(embeddings), _ROWS):
        block = np.asarray(embeddings[start : start + _ROWS], dtype=np.float64)  # (b, D)
        cos[start : start + _ROWS] = cosine_scores(block, centroid)
        dec[start : start + _ROWS] = svm.decision_function(block)
    return cos, dec


def cohort_sequences(
    cohort: Cohort, enrol_windows: int, nu: float, gamma_multiple: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Fused-score sequences of the cohort's own people, across recordings, in time order.

    For each cohort subject with two recordings: a template (centroid, one-class SVM
    with the owner's ``nu`` and ``gamma`` rule, fusion statistics against the *other*
    cohort subjects) from the first ``enrol_windows`` windows of its first recording;
    its owner sequence is its second recording; its impostor sequences are the
    second recordings of the others.
    """
    owners, impostors = [], []
    probes = {
        s: cohort.embeddings[(cohort.subject == s) & (cohort.recording == 1)].astype(np.float64)
        for s in np.unique(cohort.subject)
    }
    for s, probe in probes.items():
        enrol_rows = (cohort.subject == s) & (cohort.recording == 0)
        enrolment = cohort.embeddings[enrol_rows][:enrol_windows].astype(np.float64)
        if len(enrolment) < MIN_OWNER_WINDOWS or not len(probe):
            continue
        d2 = squared_distances(enrolment, enrolment)
        median_d2 = float(np.median(d2[np.triu_indices(len(enrolment), k=1)]))
        svm = fit_ocsvm(enrolment, nu, gamma_multiple / median_d2 if median_d2 > 1e-12 else gamma_multiple)
        centroid = _centroid(enrolment)
        others = cohort.embeddings[cohort.subject != s]
        stats = FusionStats.measure(*_cohort_scores(others, centroid, svm))
        owners.append(stats.fuse(cosine_scores(probe, centroid), svm.decision_function(probe)))
        for other, x in probes.items():
            if other != s and len(x):
                impostors.append(stats.fuse(cosine_scores(x, centroid), svm.decision_function(x)))
    if not owners:
        raise CheckpointError(
            "no cohort subject has two recordings long enough to calibrate the decision over time; "
            "use a checkpoint whose cohort was made by `neuroauth train` or `neuroauth cohort`"
        )
    return owners, impostors


def subjects_recorded_in(cohort: Cohort, owner: np.ndarray, similarity: float = 0.9999) -> set[str]:
    """Cohort subjects some of whose windows are the owner's own windows (the same recording).

    A checkpoint's cohort holds its training subjects; enrolling one of them from a
    recording the model was trained on would otherwise count the owner as an impostor.
    Windows of one recording embed identically, so a near-1 cosine finds them.
    """
    found = set()
    owner = np.asarray(owner, dtype=np.float32)
    for name, _, windows in cohort.sequences():
        if name not in found and (windows @ owner.T).max() >= similarity:
            found.add(name)
    return found
