"""Enrollment: from an owner's embedding windows, per state, to a calibrated template.

1. **Centroids**: one per enrolled state (eyes open, eyes closed, a task), each
   the normalised mean of that state's windows; a window's cosine score is to the
   nearest of them (:mod:`neuroauth.enroll.scoring`).
2. **One-class SVM search** over every window of every state: ``nu`` and ``gamma``
   chosen per owner by EER against impostor windows, as in the HMOG
   continuous-authentication study. Genuine scores come from a time-blocked k-fold:
   each state's windows are cut into ``folds`` blocks, fold k holds out block k of
   every state, fits on the rest and scores the held-out blocks. Windows are 4 s
   long every 1 s, so training windows within ``gap_windows`` (3) of a held-out
   block overlap it and are dropped. Each fold's EER compares its held-out windows
   with the cohort windows scored by the same fold model; the grid point with the
   lowest mean EER over folds wins. ``gamma`` is searched as multiples of ``1 /
   median squared distance`` between owner windows. The final SVM is fitted on all
   owner windows.
3. **Fusion statistics** (:mod:`neuroauth.enroll.scoring`) from the final template's
   scores of every cohort window. The owner's held-out fused scores are made with
   each fold's own centroids, SVM and fusion statistics, so they estimate how the
   template scores owner windows it never saw.
4. **Threshold** on the fused score by policy: ``target-far`` (the cohort quantile
   giving that false-accept rate), ``eer`` (where held-out genuine and cohort rates
   cross) or ``youden`` (max TPR - FPR).
5. **Decision over time** (:func:`neuroauth.enroll.decision_calibration.calibrate_decision`)
   tuned on the checkpoint's score sequences of people its embedder never trained
   on (:class:`~neuroauth.models.cohort.ScoreSequences`): each enrolled as an
   owner is, probed with their own later EEG and with other people's. The owner's
   held-out windows come from the enrollment itself and would promise scores a
   later moment does not reach; people the model was trained on would promise
   scores a stranger's headset does not reach.

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
from ..metrics import det_curve, eer
from .decision import DecisionTargets
from .decision_calibration import DecisionGrid, calibrate_decision
from .ocsvm import OneClassSvm, fit_kernel, fit_ocsvm, squared_distances
from .scoring import FusionStats, cosine_scores
from .template import POLICIES, Template, Threshold, utc_now, validate_user

if TYPE_CHECKING:
    from ..models.cohort import Cohort, ScoreSequences

log = logging.getLogger(__name__)

MIN_OWNER_WINDOWS = 30
MIN_STATE_WINDOWS = 10  # a state enrolled from fewer windows gives no centroid worth the name
_ROWS = 8192  # cohort rows scored at a time


@dataclass(frozen=True)
class OwnerWindows:
    """An owner's enrollment embeddings: per state, its windows ``(n_k, D)`` in time order."""

    states: tuple[str, ...]
    windows: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if len(self.states) != len(self.windows) or not self.states:
            raise ValueError(
                f"owner windows need one array per state, got {len(self.windows)} for {self.states}"
            )

    @classmethod
    def single(cls, windows: np.ndarray, state: str = "rest") -> OwnerWindows:
        return cls((state,), (np.asarray(windows),))

    @property
    def all(self) -> np.ndarray:
        return np.concatenate([np.asarray(w, dtype=np.float64) for w in self.windows])

    @property
    def state_index(self) -> np.ndarray:
        """Per row of :attr:`all`: the index of its state."""
        return np.concatenate([np.full(len(w), k) for k, w in enumerate(self.windows)])


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


def _folds(lengths: list[int] | int, folds: int, gap: int) -> list[_Fold]:
    """Time-blocked folds over windows laid out state after state (``lengths`` windows each):
    fold k holds out block k of every state and trains on the windows of each state more
    than ``gap`` windows away from that state's held-out block."""
    if isinstance(lengths, int):
        lengths = [lengths]
    out = [([], []) for _ in range(folds)]
    offset = 0
    for n in lengths:
        index = np.arange(n)
        for k, block in enumerate(np.array_split(index, folds)):
            far = (index < block[0] - gap) | (index > block[-1] + gap) if len(block) else index >= 0
            train = index[far]
            out[k][0].append(offset + train)
            out[k][1].append(offset + block)
        offset += n
    return [_Fold(train=np.concatenate(tr), test=np.concatenate(te)) for tr, te in out]


@dataclass(frozen=True)
class Scorer:
    """A template's scoring parts, fitted on an owner's windows, and how they fare held out."""

    centroids: np.ndarray  # (K, D)
    svm: OneClassSvm
    fusion: FusionStats
    held_out: np.ndarray  # the owner's held-out fused scores (each fold's own model)
    cohort_fused: np.ndarray  # the final template's fused scores of every cohort window
    record: dict  # JSON-ready: the SVM search and the window EERs


def fit_scorer(owner: OwnerWindows, cohort_embeddings: np.ndarray, search: SvmSearch) -> Scorer:
    """Centroids, one-class SVM (nu and gamma searched) and fusion statistics for ``owner``
    against impostor windows ``cohort_embeddings (M, D)``."""
    windows, states = owner.all, owner.state_index
    rng = np.random.default_rng(search.seed)
    m = len(cohort_embeddings)
    sample = np.sort(rng.choice(m, size=min(m, search.max_impostors), replace=False))
    impostors = np.asarray(cohort_embeddings[sample], dtype=np.float64)  # (m', D)
    folds = _folds([len(w) for w in owner.windows], search.folds, search.gap_windows)
    found = _search_svm(windows, impostors, folds, search)
    held = _held_out_scores(windows, states, impostors, folds, found.nu, found.gamma)
    genuine = np.concatenate(held.fused)
    centroids = _centroids(windows, states)
    svm = fit_ocsvm(windows, found.nu, found.gamma)
    cohort_cos, cohort_svm = _cohort_scores(cohort_embeddings, centroids, svm)
    fusion = FusionStats.measure(cohort_cos, cohort_svm)
    impostor = fusion.fuse(cohort_cos, cohort_svm)
    record = {
        "svm_search": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(search).items()},
            "gamma_scale": found.gamma_scale,
            "gamma_heuristic": "1 / median squared distance between owner windows",
            "impostor_windows": len(sample),
            "owner_windows_per_fold": [len(f.test) for f in folds],
            "training_windows_per_fold": [len(f.train) for f in folds],
            "chosen": {"nu": found.nu, "gamma": found.gamma, "eer": found.eer},
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
    }
    return Scorer(centroids, svm, fusion, genuine, impostor, record)


def enroll(
    owner: OwnerWindows,
    cohort: Cohort,
    sequences: ScoreSequences | None,
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
    """Calibrate a template for ``user`` from ``owner``'s windows (unit vectors, time order per state).

    ``sequences``: the checkpoint's score sequences of unseen people, which tune the
    decision over time, a window every ``hop_seconds`` (the daemon's hop; default: the
    sequences' own). Raises :class:`DataError` when the owner's windows cannot make a
    template and :class:`CheckpointError` when the checkpoint cannot calibrate one.
    """
    started = time.perf_counter()
    targets = targets or DecisionTargets()
    owner = _check_inputs(owner, cohort, user, policy, target_far)
    if sequences is None:
        raise CheckpointError(
            "the checkpoint carries no score sequences of unseen people to tune the decision over time; "
            "use a checkpoint written by this version's `neuroauth train`, or add them with "
            "`neuroauth cohort --data DIR --checkpoint ... --out ...`"
        )
    scorer = fit_scorer(owner, cohort.embeddings, search or SvmSearch())
    _check_separable(scorer, user, len(owner.all))
    threshold = choose_threshold(scorer.held_out, scorer.cohort_fused, policy, target_far)
    decision = calibrate_decision(
        sequences.owner_sequences(),
        sequences.impostor_sequences(),
        float(hop_seconds if hop_seconds is not None else sequences.record.get("hop_seconds", 1.0)),
        targets,
        llr_clip=llr_clip,
        gap_seconds=gap_seconds,
        grid=decision_grid,
        owner_sites=sequences.owner_sites(),
        impostor_sites=sequences.impostor_sites(),
    )
    calibration = {
        **scorer.record,
        "states": {s: len(w) for s, w in zip(owner.states, owner.windows, strict=True)},
        "cohort": {
            "subjects": len(np.unique(cohort.subject)),
            "windows": len(scorer.cohort_fused),
            "hop_seconds": cohort.hop_seconds,
        },
        "threshold": threshold.to_dict(),
        "decision": decision.record | {"sequences": sequences.record},
        "seconds": round(time.perf_counter() - started, 3),
    }
    _log_enrollment(user, owner, calibration, threshold, decision, targets)
    return Template(
        user=user,
        checkpoint_identity=checkpoint_identity,
        embedder=embedder,
        dim=owner.all.shape[1],
        states=owner.states,
        centroids=scorer.centroids,
        svm=scorer.svm,
        fusion=scorer.fusion,
        threshold=threshold,
        decision=decision.params,
        created=utc_now(),
        n_windows=len(owner.all),
        calibration=calibration,
        windows=tuple(np.asarray(w, dtype=np.float64) for w in owner.windows),
    )


def _check_separable(scorer: Scorer, user: str, n: int) -> None:
    """An owner whose own held-out windows score no higher than other people's cannot be enrolled."""
    if scorer.held_out.mean() <= scorer.cohort_fused.mean():
        raise DataError(
            f"the {n} enrollment windows of {user!r} score no higher than other people's windows when held "
            f"out (owner mean {scorer.held_out.mean():.2f}, cohort mean "
            f"{scorer.cohort_fused.mean():.2f}): the recording is mostly artefact or was embedded with "
            "another checkpoint. Record again with a well-seated headset, using the same checkpoint."
        )


def _log_enrollment(user, owner, calibration, threshold, decision, targets) -> None:
    chosen = decision.record["chosen"]
    if not decision.meets_targets:
        log.warning(
            "%s: the decision targets cannot both be met on people the model never saw: %.2f false "
            "lock-outs/h (target %.2f), median time to lock %s s (target %.1f)",
            user,
            chosen["false_lockouts_per_hour"],
            targets.false_lockouts_per_hour,
            chosen["median_time_to_lock_s"],
            targets.time_to_lock_s,
        )
    log.info(
        "enrolled %s from %d windows in %d state(s) in %.1f s: window EER %.3f, threshold %.3f (%s), "
        "decision targets %s",
        user,
        len(owner.all),
        len(owner.states),
        calibration["seconds"],
        calibration["window_eer"]["fused"],
        threshold.value,
        threshold.policy,
        "met" if decision.meets_targets else "NOT met",
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
    owner: np.ndarray, states: np.ndarray, impostors: np.ndarray, folds: list[_Fold], nu: float, gamma: float
) -> _HeldOut:
    """Score each held-out block with its fold's own centroids, SVM and fusion statistics.

    The z-normalisation makes scores of different fold models comparable with the
    final template's: each is in units of that model's impostor distribution.
    """
    out = _HeldOut([], [], [])
    for fold in folds:
        centroids = _centroids(owner[fold.train], states[fold.train])
        svm = fit_ocsvm(owner[fold.train], nu, gamma)
        stats = FusionStats.measure(cosine_scores(impostors, centroids), svm.decision_function(impostors))
        cos, dec = cosine_scores(owner[fold.test], centroids), svm.decision_function(owner[fold.test])
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


def _check_inputs(
    owner: OwnerWindows, cohort: Cohort, user: str, policy: str, target_far: float
) -> OwnerWindows:
    validate_user(user)
    if policy not in POLICIES:
        raise ValueError(f"threshold policy {policy!r} is not one of {', '.join(POLICIES)}")
    if not 0 < target_far < 1:
        raise ValueError(f"target false-accept rate must lie in (0, 1), got {target_far}")
    windows = []
    for state, w in zip(owner.states, owner.windows, strict=True):
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            raise DataError(
                f"enrollment windows of {user!r} ({state}) must be an (n, D) array of embeddings, "
                f"got {w.shape}"
            )
        if len(w) < MIN_STATE_WINDOWS:
            raise DataError(
                f"only {len(w)} window(s) of {user!r} in the {state!r} phase passed the quality gate; each "
                f"phase needs at least {MIN_STATE_WINDOWS} (about {MIN_STATE_WINDOWS + 3} s of clean EEG). "
                "Record that phase again, longer, with the headset well seated."
            )
        if not np.isfinite(w).all():
            raise DataError(
                f"enrollment windows of {user!r} ({state}) hold NaN or infinite values; embed the "
                "recording again"
            )
        windows.append(w)
    if len({w.shape[1] for w in windows}) != 1:
        raise DataError(f"enrollment windows of {user!r} differ in dimension between states")
    total = sum(len(w) for w in windows)
    if total < MIN_OWNER_WINDOWS:
        raise DataError(
            f"only {total} enrollment window(s) of {user!r} passed the quality gate; a template "
            f"needs at least {MIN_OWNER_WINDOWS} (about {MIN_OWNER_WINDOWS} s of clean EEG at a 1 s hop). "
            "Record longer, with the headset well seated, and enroll again."
        )
    if len(cohort.embeddings) == 0 or len(np.unique(cohort.subject)) == 0:
        raise CheckpointError(
            "the checkpoint's background cohort is empty, so no impostor windows can calibrate the template; "
            "use a checkpoint trained with a cohort (`neuroauth train`), or the shipped one"
        )
    if cohort.dim != windows[0].shape[1]:
        raise CheckpointError(
            f"enrollment windows of {user!r} are {windows[0].shape[1]}-d but the checkpoint's cohort is "
            f"{cohort.dim}-d; embed the enrollment recording with the checkpoint that holds the cohort"
        )
    return OwnerWindows(tuple(owner.states), tuple(windows))


def _centroids(x: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Per state present in ``states``: the normalised mean of its rows of ``x``; ``(K, D)``."""
    rows = []
    for k in np.unique(states):
        mean = x[states == k].mean(axis=0)  # (D,)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(rows)


def _cohort_scores(
    embeddings: np.ndarray, centroids: np.ndarray, svm: OneClassSvm
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and SVM scores ``(M,)`` of every cohort window, a block of rows at a time."""
    cos = np.empty(len(embeddings))
    dec = np.empty(len(embeddings))
    for start in range(0, len(embeddings), _ROWS):
        block = np.asarray(embeddings[start : start + _ROWS], dtype=np.float64)  # (b, D)
        cos[start : start + _ROWS] = cosine_scores(block, centroids)
        dec[start : start + _ROWS] = svm.decision_function(block)
    return cos, dec


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
