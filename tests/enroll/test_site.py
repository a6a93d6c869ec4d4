"""Normalising templates against the people enrolled at the site (neuroauth.enroll.site)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from neuroauth.enroll.site import Site, normalisation, renormalise
from neuroauth.enroll.store import TemplateStore
from synthetic_people import DIM, enroll_windows, recording

SITE_OFFSET = 1.5  # what every person recorded at the new site shares (lab, amplifier), against a person's 1


def site_people(people, n: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` people of another site: enrollment and later windows around centres sharing one offset."""
    rng = np.random.default_rng(seed)
    offset = rng.standard_normal(DIM)
    offset *= SITE_OFFSET / np.linalg.norm(offset)
    out = []
    for _ in range(n):
        centre = rng.standard_normal(DIM)
        centre = centre / np.linalg.norm(centre) + offset
        out.append((recording(rng, centre, 90), recording(rng, centre, 60)))
    return out


@pytest.fixture(scope="module")
def site(people):
    return site_people(people, 8)


def enrolled_site(people, site, store: TemplateStore, identity: str = "ckpt-a") -> None:
    for i, (windows, _) in enumerate(site):
        store.save(enroll_windows(people, windows, user=f"p{i}", checkpoint_identity=identity))


def model_of(people, identity: str = "ckpt-a"):
    return SimpleNamespace(
        identity=lambda: identity,
        cohort=people.cohort,
        calibration=people.sequences,
        embedder_name="spectral",
    )


def test_a_site_normalises_once_it_has_enough_people(people, site, tmp_path):
    store = TemplateStore(tmp_path / "templates")
    enrolled_site(people, site, store)
    read = Site.read(store, "ckpt-a")
    owner = np.concatenate(read.templates["p0"].windows)
    chosen = normalisation(read, "p0", owner, people.cohort, min_people=7)
    assert chosen.record["against"] == "site"
    assert chosen.cohort.subjects == tuple(f"p{i}" for i in range(1, 8))  # every other person, not the owner
    assert len(chosen.cohort.embeddings) == 7 * 90
    fewer = normalisation(read, "p0", owner, people.cohort, min_people=8)
    assert fewer.record["against"] == "training" and fewer.cohort is people.cohort
    assert fewer.record["site_people"] == [f"p{i}" for i in range(1, 8)]


def test_against_the_site_its_impostors_score_as_impostors_again(people, site):
    """At a site the training people never saw, everyone there looks like the owner to a template
    normalised against the training cohort; against the site's own people they do not."""
    owner_windows, owner_later = site[0]
    others = {f"p{i}": w for i, (w, _) in enumerate(site) if i}
    from neuroauth.models.cohort import Cohort

    against_training = enroll_windows(people, owner_windows)
    against_site = enroll_windows(people, owner_windows, cohort=Cohort.of_people(others, 1.0))
    impostors = np.concatenate([later for _, later in site[1:]])
    training_scores = against_training.score(impostors).fused
    site_scores = against_site.score(impostors).fused
    assert training_scores.mean() > 2.0  # site impostors far above the training cohort's 0
    assert abs(site_scores.mean()) < 0.5  # about 0, where the decision expects an impostor
    # and the owner still stands out from them
    assert against_site.score(owner_later).fused.mean() > site_scores.mean() + 1.0


def test_the_site_leaves_out_templates_it_cannot_use(people, site, tmp_path, make_template):
    store = TemplateStore(tmp_path / "templates")
    enrolled_site(people, site[:2], store)
    store.save(enroll_windows(people, site[2][0], user="elsewhere", checkpoint_identity="ckpt-b"))
    store.save(dataclasses.replace(make_template("old", "ckpt-a"), windows=None))  # a version-3 template
    (store.directory / "broken.template.json").write_text("{")
    read = Site.read(store, "ckpt-a")
    assert sorted(read.templates) == ["p0", "p1"]
    assert "checkpoint ckpt-b" in read.left_out["elsewhere"]
    assert "before templates kept" in read.left_out["old"]
    assert "damaged" in read.left_out["broken"]


def test_renormalise_fits_every_template_against_the_others(people, site, tmp_path):
    store = TemplateStore(tmp_path / "templates")
    enrolled_site(people, site[:4], store)
    before = {u: store.load(u) for u in ("p0", "p1", "p2", "p3")}
    stream = {"source_id": "hs-1", "host": "box", "channels": ["T7", "F8", "Cz", "P4"]}
    store.save(dataclasses.replace(before["p0"], stream=stream))
    done = renormalise(store, model_of(people), min_people=3)
    assert sorted(done.written) == ["p0", "p1", "p2", "p3"] and not done.failed
    for user, old in before.items():
        new = store.load(user, expected_identity="ckpt-a")
        cohort = new.calibration["cohort"]
        assert cohort["against"] == "site"
        assert cohort["site_people"] == sorted(set(before) - {user})
        assert new.fusion != old.fusion  # fitted again, against other impostors
        for w_new, w_old in zip(new.windows, old.windows, strict=True):
            np.testing.assert_array_equal(w_new, w_old)  # from the same enrollment windows
    assert store.load("p0").stream == stream  # the enrolled stream is kept


def test_renormalise_below_the_minimum_falls_back_to_the_training_cohort(people, site, tmp_path):
    store = TemplateStore(tmp_path / "templates")
    enrolled_site(people, site[:2], store)
    done = renormalise(store, model_of(people), min_people=3)
    assert done.written == {u: f"training ({len(people.cohort.subjects)} people)" for u in ("p0", "p1")}
    assert store.load("p1").calibration["cohort"]["against"] == "training"
