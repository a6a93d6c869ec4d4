"""Score sequences of people the embedder never trained on, for calibrating the decision over time.

A checkpoint's cohort holds its training people, embedded by a projection fitted
on them: their own scores across states are better than a new owner's will be.
The decision levels are therefore tuned on people held out of the fit instead.
The training people with every recording are split into ``folds`` groups; for
each group, the spectral projection (the checkpoint's chosen settings) is fitted
on everyone else, and each person of the group is enrolled as ``neuroauth
enroll`` enrolls an owner: their windows standardised with the fitted pool's
statistics (a headset with one user), a template fitted against the fitted
people's windows embedded the same way (:func:`~neuroauth.enroll.calibration.fit_scorer`). Their own
later EEG (the probe part of every state) gives the *owner* sequences; every
other person of the group from the same corpus, strangers to that fit too, gives
*impostor* sequences: someone else putting on the same headset is recorded at
the same site, and people of another corpus would be easier to tell apart than
the impostors a deployment meets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..enroll.calibration import OwnerWindows, SvmSearch, fit_scorer
from ..enroll.scoring import cosine_scores
from ..models.cohort import ScoreSequences
from .embedder_training import SubjectWindows, labelled_features
from .protocol import HOP_SECONDS, state_plans
from .wccn import apply_projection, fit_projection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossFit:
    """How the calibration sequences are made; recorded in the checkpoint."""

    folds: int = 4
    max_impostor_sequences: int = 600  # a seeded sample: enrollment simulates every one of them
    cohort_windows: int = 4000  # windows of the fitted people a template is calibrated against
    seed: int = 0


@dataclass
class HeldPerson:
    """A person a template is fitted for (``enrolled``, per state) or only an impostor (None)."""

    corpus: str
    enrolled: list[np.ndarray] | None  # per state: enrollment embeddings
    probes: list[np.ndarray]  # per state (or recording): the embeddings scored as their later EEG


@dataclass
class Sequences:
    """Owner and impostor score sequences, each with the site (corpus) it was recorded at."""

    owners: list[np.ndarray] = field(default_factory=list)
    impostors: list[np.ndarray] = field(default_factory=list)
    owner_sites: list[str] = field(default_factory=list)
    impostor_sites: list[str] = field(default_factory=list)

    def extend(self, other: Sequences) -> None:
        self.owners += other.owners
        self.impostors += other.impostors
        self.owner_sites += other.owner_sites
        self.impostor_sites += other.impostor_sites


def held_sequences(people: Sequence[HeldPerson], cohort: np.ndarray, search: SvmSearch) -> Sequences:
    """Each enrolled person's template, fitted against ``cohort (M, D)``, scoring their own probes
    (owner sequences) and the probes of everyone else of their corpus (impostor sequences)."""
    out = Sequences()
    for i, person in enumerate(people):
        if person.enrolled is None:
            continue
        kept = [(f"state{j}", e) for j, e in enumerate(person.enrolled) if len(e)]
        scorer = fit_scorer(
            OwnerWindows(tuple(s for s, _ in kept), tuple(e for _, e in kept)), cohort, search
        )

        def fused(x, scorer=scorer):
            return scorer.fusion.fuse(cosine_scores(x, scorer.centroids), scorer.svm.decision_function(x))

        mine = [fused(x) for x in person.probes if len(x)]
        out.owners += mine
        out.owner_sites += [person.corpus] * len(mine)
        for j, other in enumerate(people):
            if j != i and other.corpus == person.corpus:  # a headset's impostors share its site
                theirs = [fused(x) for x in other.probes if len(x)]
                out.impostors += theirs
                out.impostor_sites += [person.corpus] * len(theirs)
    return out


def crossfit_sequences(
    data: Sequence[SubjectWindows],
    columns: np.ndarray,
    pca_dim: int,
    shrinkage: float,
    settings: CrossFit | None = None,
    search: SvmSearch | None = None,
    progress: bool = True,
) -> ScoreSequences:
    settings = settings or CrossFit()
    search = search or SvmSearch()
    rng = np.random.default_rng(settings.seed)
    complete = [i for i, d in enumerate(data) if d.complete]
    folds = min(settings.folds, len(complete) // 2)  # each fold needs an owner and an impostor
    if folds < 2:
        raise ValueError(
            f"{len(complete)} people with every recording are too few to cross-fit calibration sequences "
            "(two folds of two people at least); train on more people"
        )
    if folds < settings.folds:
        log.warning(
            "%d people with every recording: cross-fitting in %d folds, not %d",
            len(complete),
            folds,
            settings.folds,
        )
    fold_of = np.empty(len(data), dtype=int)
    for members in (complete, [i for i, d in enumerate(data) if not d.complete]):
        fold_of[rng.permutation(np.array(members, dtype=int))] = np.arange(len(members)) % folds
    made = Sequences()
    for k in tqdm(range(folds), desc="calibration cross-fit", unit="fold", disable=not progress):
        fit = [d for i, d in enumerate(data) if fold_of[i] != k]
        held = [d for i, d in enumerate(data) if fold_of[i] == k]
        feats, labels, domains = labelled_features(fit, columns)
        projection = fit_projection(feats, labels, pca_dim, shrinkage, domains)

        def project(x, projection=projection):  # a headset of one user: the pool's statistics
            return apply_projection(x[:, columns], projection)

        # the fitted people as impostors, embedded as the checkpoint's cohort is (train.spectral_cohort)
        take = rng.choice(len(feats), size=min(settings.cohort_windows, len(feats)), replace=False)
        cohort = apply_projection(feats[take], projection)  # feats hold the chosen columns already

        held_people = []
        for d in held:
            if not d.complete:
                held_people.append(HeldPerson(d.corpus, None, [project(x) for x in d.recordings]))
                continue
            plans = state_plans(d.enroll_seconds, d.window_seconds)
            held_people.append(
                HeldPerson(
                    d.corpus,
                    [project(x[p.enroll]) for x, p in zip(d.recordings, plans, strict=True)],
                    [project(x[p.probe]) for x, p in zip(d.recordings, plans, strict=True)],
                )
            )
        made.extend(held_sequences(held_people, cohort, search))
    owners, owner_sites = made.owners, made.owner_sites
    impostors, impostor_sites = made.impostors, made.impostor_sites
    total = len(impostors)
    if total > settings.max_impostor_sequences:
        keep = np.sort(rng.choice(total, size=settings.max_impostor_sequences, replace=False))
        impostors = [impostors[i] for i in keep]
        impostor_sites = [impostor_sites[i] for i in keep]
    record = {
        **asdict(settings),
        "folds_used": folds,
        "people": len(data),
        "owner_people": len(complete),
        "owner_sequences": len(owners),
        "impostor_sequences_made": total,
        "impostor_sequences": len(impostors),
        "hop_seconds": HOP_SECONDS,
        "protocol": "every state enrolled from its first enroll_seconds, probed from one window later; "
        "templates fitted without the people they score",
    }
    log.info(
        "calibration sequences: %d owner and %d of %d impostor sequences from %d people in %d folds",
        len(owners),
        len(impostors),
        total,
        len(data),
        folds,
    )
    return ScoreSequences.from_lists(owners, impostors, record, owner_sites, impostor_sites)
