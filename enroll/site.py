"""The site: the people enrolled on one installation, whom each template is normalised against.

A template puts its scores in units of impostor scores: the mean and spread of its
cosine and one-class SVM scores over impostor windows (:mod:`.scoring`), which also
set its window threshold and where the decision's Gaussians sit. Which impostors
decides how a site the model never saw fares. Against the checkpoint's cohort (its
training people, recorded in another lab with another amplifier) the people of the
new site all look alike and close to the owner: takeovers go unlocked. Against the
people enrolled here, recorded on the same headsets, an impostor scores about 0 again,
where the decision's calibration expects one (docs/results.md, "Normalised to the
site").

So enrollment normalises a template against the enrollment windows of the other
people enrolled in the same templates directory with the same checkpoint, once there
are at least ``min_people`` of them (:data:`MIN_SITE_PEOPLE`, measured), and against
the checkpoint's cohort while there are fewer: a headset with one owner has no site to
speak of. Templates enrolled before the site was large enough were normalised against
the cohort; :func:`renormalise` (``neuroauth templates renormalise``) fits every
template again against the site as it now is, from the windows each one keeps.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, TemplateError
from ..models.cohort import Cohort
from .calibration import OwnerWindows, enroll, subjects_recorded_in
from .decision import DecisionTargets
from .store import TemplateStore
from .template import Template

log = logging.getLogger(__name__)

MIN_SITE_PEOPLE = 10  # below it the training cohort normalises better (docs/results.md)


@dataclass(frozen=True)
class Site:
    """The people enrolled in one templates directory with one checkpoint."""

    templates: dict[str, Template]  # user -> template, every one keeping its enrollment windows
    left_out: dict[str, str] = field(default_factory=dict)  # user -> why it does not count

    @classmethod
    def read(cls, store: TemplateStore, checkpoint_identity: str) -> Site:
        templates, left_out = {}, {}
        for summary in store.list():
            if summary.damaged:
                left_out[summary.user] = summary.problem
            elif summary.checkpoint_identity != checkpoint_identity:
                left_out[summary.user] = f"enrolled with checkpoint {summary.checkpoint_identity}"
            else:
                template = store.load(summary.user)
                if template.windows is None:
                    left_out[summary.user] = "enrolled before templates kept their enrollment windows"
                else:
                    templates[summary.user] = template
        for user, why in left_out.items():
            log.info("not one of the site's people: %s (%s)", user, why)
        return cls(templates, left_out)

    def people(self, without: str) -> dict[str, np.ndarray]:
        """Every enrolled person but ``without``: their enrollment windows ``(n, D)``."""
        return {u: np.concatenate(t.windows) for u, t in sorted(self.templates.items()) if u != without}


@dataclass(frozen=True)
class Normalisation:
    """The impostors a template is normalised against, and a JSON-ready record of the choice."""

    cohort: Cohort
    record: dict


def normalisation(
    site: Site, owner: str, owner_windows: np.ndarray, training: Cohort, min_people: int = MIN_SITE_PEOPLE
) -> Normalisation:
    """The site's other people when there are ``min_people`` of them, else the checkpoint's cohort
    ``training`` (without any training person whose recording ``owner_windows`` are from)."""
    people = site.people(without=owner)
    if len(people) >= min_people:
        record = {"against": "site", "site_people": sorted(people), "min_site_people": min_people}
        return Normalisation(Cohort.of_people(people, training.hop_seconds), record)
    record = {"against": "training", "site_people": sorted(people), "min_site_people": min_people}
    recorded = subjects_recorded_in(training, owner_windows)
    if recorded:  # enrolling one of the training people from a recording the cohort holds
        log.info("left out of the cohort: %s (this recording is in it)", ", ".join(sorted(recorded)))
        training = training.without(recorded)
        record["left_out"] = sorted(recorded)
    return Normalisation(training, record)


def enroll_at_site(
    owner: OwnerWindows, site: Site, model, *, user: str, min_people: int = MIN_SITE_PEOPLE, **options
) -> Template:
    """:func:`~neuroauth.enroll.calibration.enroll` ``owner`` with ``model``'s checkpoint, normalised
    against the site's other people or its cohort (:func:`normalisation`); ``options`` are
    ``enroll``'s. The template's calibration record says which."""
    chosen = normalisation(site, user, owner.all, model.cohort, min_people)
    template = enroll(
        owner,
        chosen.cohort,
        model.calibration,
        user=user,
        checkpoint_identity=model.identity(),
        embedder=model.embedder_name,
        **options,
    )
    template.calibration["cohort"] |= chosen.record
    return template


@dataclass(frozen=True)
class Renormalised:
    """What :func:`renormalise` did to each template of the site."""

    written: dict[str, str]  # user -> what it is normalised against now
    failed: dict[str, str]  # user -> why it was left as it was


def renormalise(store: TemplateStore, model, min_people: int = MIN_SITE_PEOPLE) -> Renormalised:
    """Fit every template of ``model``'s checkpoint in ``store`` again, each against the site as it
    is now (the others' windows, read once before any is written), with its own policy,
    targets and hop. A template that cannot be fitted again stays as it was."""
    site = Site.read(store, model.identity())
    written, failed = {}, {}
    for user, old in sorted(site.templates.items()):
        decision = old.calibration.get("decision", {})
        try:
            new = enroll_at_site(
                OwnerWindows(old.states, old.windows),
                site,
                model,
                user=user,
                min_people=min_people,
                policy=old.threshold.policy,
                target_far=old.threshold.target_far or 0.01,
                targets=DecisionTargets(**decision["targets"]) if "targets" in decision else None,
                hop_seconds=decision.get("hop_seconds"),
                llr_clip=old.decision.llr_clip,
                gap_seconds=old.decision.gap_seconds,
            )
        except (DataError, TemplateError, ValueError) as exc:
            failed[user] = str(exc)
            log.warning("template of %s left as it was: %s", user, exc)
            continue
        new.calibration["sources"] = old.calibration.get("sources")
        new.calibration["enrolled"] = old.calibration.get("enrolled", old.created)
        store.save(dataclasses.replace(new, stream=old.stream))
        cohort = new.calibration["cohort"]
        written[user] = f"{cohort['against']} ({cohort['subjects']} people)"
    return Renormalised(written, failed)
