"""The transfer study on synthetic window features: two corpora, people with a signature, a site offset."""

from __future__ import annotations

import numpy as np
import pytest
from neuroauth.models.embedders.spectral import SpectralConfig, SpectralFeatures
from neuroauth.training.study.transfer import Recipe, loco, run, run_split, site_groups, splits, summary
from neuroauth.training.study.window_cache import PersonFeatures, load, save

SLICES = SpectralFeatures(SpectralConfig(n_channels=2)).group_slices()
N_FEATURES = max(s.stop for s in SLICES.values())


def corpus(name: str, people: int, offset: float, rng: np.random.Generator) -> list[PersonFeatures]:
    """Each person a point in feature space, two states apart, windows around it; the whole corpus
    shifted by ``offset`` (what another lab's amplifier does to every feature)."""
    out = []
    shift = offset * rng.standard_normal(N_FEATURES)
    for p in range(people):
        centre = rng.standard_normal(N_FEATURES) + shift
        state = 0.7 * rng.standard_normal(N_FEATURES)
        recordings = [
            (centre + sign * state + 0.5 * rng.standard_normal((90, N_FEATURES))).astype(np.float32)
            for sign in (-1, 1)
        ]
        out.append(PersonFeatures(f"{name}/p{p}", name, ("a", "b"), (40.0, 20.0), recordings, recordings))
    return out


@pytest.fixture(scope="module")
def people():
    rng = np.random.default_rng(0)
    return corpus("one", 10, 0.0, rng) + corpus("two", 10, 3.0, rng)


def test_splits_are_disjoint_halves_and_loco_tests_a_whole_corpus(people):
    for training, test in splits(people, "one", repeats=3, seed=0, train_on="all"):
        assert len(test) == 5 and all(p.corpus == "one" for p in test)
        assert not {p.subject for p in training} & {p.subject for p in test}
        assert len(training) == 15
    training, test = loco(people, "two")
    assert {p.corpus for p in training} == {"one"} and len(test) == 10


def test_sites_of_one_person_use_the_training_statistics(people):
    assert site_groups(7, None, np.random.default_rng(0)) == [list(range(7))]
    groups = site_groups(7, 3, np.random.default_rng(0))
    assert sorted(i for g in groups for i in g) == list(range(7)) and [len(g) for g in groups] == [3, 3, 1]
    training, test = loco(people, "two")
    fallback = Recipe(standardise="site", site_people=1, enrollment="max")
    pooled = Recipe(standardise="pool", enrollment="max")
    figures = run_split(training, test, [fallback, pooled], SLICES, seed=0)
    # one person's own statistics would take their identity away: a site of one falls back, so it
    # scores as the training people's pooled statistics do (per-corpus training equals pooled on one)
    assert figures[fallback.label]["eer_all"] == pytest.approx(figures[pooled.label]["eer_all"])


def test_a_site_of_two_normalises_against_the_training_cohort_when_its_other_person_wears(people):
    training, test = loco(people, "two")
    recipes = [Recipe(enrollment="max", norm=n, cohort="site", site_people=2) for n in ("z", "t", "s")]
    figures = run_split(training, test, recipes, SLICES, seed=0)  # no site member is left to compare
    assert all(0.0 <= figures[r.label]["eer_all"] < 0.5 for r in recipes)


def test_what_the_study_measures_moves_the_way_it_should(people):
    training, test = loco(people, "two")
    recipes = [
        Recipe(),
        Recipe(enrollment="max"),
        Recipe(standardise="site", enrollment="max"),
        Recipe(enrollment="max", norm="s", cohort="site"),
    ]
    figures = run_split(training, test, recipes, SLICES, seed=0)
    eer = {r.label: figures[r.label]["eer_all"] for r in recipes}
    assert all(0.0 <= v < 0.5 for v in eer.values()), eer
    # a centroid per state judges each state against itself: better than the first state alone
    assert eer[recipes[1].label] < eer[recipes[0].label]
    assert set(figures[recipes[0].label]) >= {"eer_all", "eer_all_10", "eer_a", "eer_b"}


def test_the_study_runs_whole_and_its_cache_round_trips(people, tmp_path):
    path = tmp_path / "features.npz"
    save(people, path, {"denoiser": "x"})
    again, meta = load(path)
    assert meta == {"denoiser": "x"} and [p.subject for p in again] == [p.subject for p in people]
    np.testing.assert_array_equal(again[3].denoised[1], people[3].denoised[1])
    result = run({"two": people}, [Recipe(enrollment="max")], repeats=2, slices=SLICES, progress=False)
    entry = result["splits"]["two (train: all)"]["recipes"]["denoised std=pool enroll=max norm=none"]
    assert entry["eer_all"]["n"] == 2 and entry["eer_all"]["low"] <= entry["eer_all"]["mean"]
    assert "one -> two" in result["loco"]


def test_the_interval_widens_for_splits_that_share_people():
    tight = summary([0.1, 0.12, 0.08, 0.11], None, None)
    wide = summary([0.1, 0.12, 0.08, 0.11], 10, 10)
    assert wide["high"] - wide["low"] > tight["high"] - tight["low"]


@pytest.mark.slow
def test_the_transfer_command_caches_features_per_held_out_corpus(
    tiny_checkpoint, bundled_dir, tmp_path, capsys
):
    import json
    import shutil

    from neuroauth.cli import main

    # four people a corpus (a recording may stand for a person of each corpus: they are named apart)
    for name, people in (
        ("alpha", ["Subject00", "Subject03", "Subject06", "Subject08"]),
        ("beta", ["Subject09", "Subject03", "Subject06", "Subject00"]),
    ):
        (tmp_path / "data" / name).mkdir(parents=True)
        for person in people:
            for suffix in ("_1", "_2"):
                shutil.copy(bundled_dir / f"{person}{suffix}.edf", tmp_path / "data" / name)
    denoisers = tmp_path / "denoisers"
    denoisers.mkdir()
    for name in ("alpha", "beta"):
        shutil.copy(tiny_checkpoint, denoisers / f"denoiser-without-{name}.pt")
    out = tmp_path / "transfer.json"
    argv = ["study", "transfer", "--data", str(tmp_path / "data"), "--denoisers", str(denoisers)]
    argv += ["--recipes", "enrollment", "--repeats", "1", "--learning-curve", "3", "--draws", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["loco"]) == {"beta -> alpha", "alpha -> beta"}
    assert "denoised std=pool enroll=max norm=none" in result["loco"]["beta -> alpha"]["recipes"]
    assert set(result["learning_curve"]) == {"alpha", "beta"}
    assert sorted(p.name for p in denoisers.glob("features-*.npz")) == [
        "features-without-alpha-4ch.npz",
        "features-without-beta-4ch.npz",
    ]
    first = out.read_text()
    assert main([*argv, "--json", str(out)]) == 0  # the cached features are reused: the same figures
    assert json.loads(out.read_text())["loco"] == json.loads(first)["loco"]
    assert result["montage"] == ["T7", "F8", "Cz", "P4"]
    capsys.readouterr()
    assert main(["report", "--transfer", str(out)]) == 0
    tables = capsys.readouterr().out
    assert "4 ch, window EER per recipe" in tables and "| beta -> alpha (4 tested) |" in tables
    assert "| denoised std=pool enroll=max norm=none | " in tables and "| 3 | " in tables
