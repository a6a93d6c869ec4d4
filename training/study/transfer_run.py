"""``neuroauth study transfer``: the transfer study from recordings to its tables.

For every corpus X, every person of every corpus is denoised once by a denoiser
that never saw X's people (``denoiser-without-X.pt``, as ``neuroauth crossval
--keep-checkpoints`` keeps them, or trained here) and their window features are
cached; then every recipe of :mod:`.transfer` runs on repeated splits within X and
leave-one-corpus-out to X. A learning curve (window EER against the number of
training people) is measured the same way on the shipped recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np

from ...models.checkpoint import load_checkpoint
from ...models.embedders.spectral import SpectralConfig, SpectralFeatures
from . import window_cache
from .transfer import Recipe, run, run_split, summary

log = logging.getLogger(__name__)

R = Recipe
#: Named recipe sets: what the docs' tables were made with.
RECIPES: dict[str, list[Recipe]] = {
    "enrollment": [R(), R(features="raw"), R(enrollment="pooled"), R(enrollment="mean"), R(enrollment="max")],
    "normalisation": [
        R(enrollment="max"),
        R(standardise="site", site_min=10**6, enrollment="max"),  # per-corpus training, pooled at the site
        R(standardise="site", enrollment="max"),
        R(standardise="site", site_people=10, enrollment="max"),
        R(standardise="site", site_people=5, enrollment="max"),
        R(standardise="site", site_people=2, enrollment="max"),
        R(enrollment="max", norm="z", cohort="training"),
        R(enrollment="max", norm="s", cohort="training"),
        R(enrollment="max", norm="z", cohort="site"),
        R(enrollment="max", norm="t", cohort="site"),
        R(enrollment="max", norm="s", cohort="site"),
        R(enrollment="max", norm="s", cohort="site", site_people=10),
        R(enrollment="max", norm="s", cohort="site", site_people=5),
        R(standardise="site", enrollment="max", norm="s", cohort="site"),
    ],
    "settings": [
        R(standardise="site", site_min=10**6, enrollment="max", shrinkage=a, pca_dim=d, groups=g)
        for g in ("all", "bandpower+coherence", "psd+bandpower")
        for d in (0, 64)
        for a in (0.02, 0.2, 0.5)
    ],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...cli_options import add_data_options

    add_data_options(p, None)
    p.add_argument("--montage", default="default", help="'default' (4 channels), '10-20' or a list")
    p.add_argument(
        "--denoisers",
        type=Path,
        required=True,
        help="folder of denoiser-without-<corpus>.pt checkpoints (as `neuroauth crossval --keep-checkpoints` "
        "keeps them); the window features are cached beside them",
    )
    p.add_argument("--recipes", default="enrollment,normalisation", help=f"sets among {', '.join(RECIPES)}")
    p.add_argument("--repeats", type=int, default=10, help="random half splits per corpus (default 10)")
    p.add_argument(
        "--learning-curve", default="", help="comma-separated training sizes (people) for a learning curve"
    )
    p.add_argument("--draws", type=int, default=10, help="draws per learning-curve size (default 10)")
    p.add_argument("--json", type=Path, required=True, help="write the figures here")
    p.add_argument("--seed", type=int, default=0)


def _features(args: argparse.Namespace) -> dict[str, list[window_cache.PersonFeatures]]:
    """Per test corpus: every person's window features, denoised by the denoiser that never saw it."""
    from ...cli_options import load_data
    from ...models.montage import parse_montage
    from ...models.preprocess import SignalSpec

    montage = parse_montage(args.montage)
    data = load_data(args, montage, SignalSpec())
    corpora = sorted({d.corpus.name for d in data})
    if len(corpora) < 2:
        raise ValueError("the transfer study needs at least two corpora (one to hold out, one to learn from)")
    out = {}
    for corpus in corpora:
        denoiser = args.denoisers / f"denoiser-without-{corpus}.pt"
        cache = args.denoisers / f"features-without-{corpus}-{len(montage)}ch.npz"
        if cache.is_file():
            people, meta = window_cache.load(cache)
            if meta.get("denoiser") == str(denoiser) and {p.subject for p in people} == {
                d.subject for d in data
            }:
                out[corpus] = people
                continue
        model = load_checkpoint(denoiser)
        if tuple(model.montage) != tuple(montage):
            raise ValueError(f"{denoiser} is for the montage {model.montage}, not {montage}")
        people = window_cache.compute(model, data)
        window_cache.save(people, cache, {"denoiser": str(denoiser), "identity": model.identity()})
        out[corpus] = people
    return out


def learning_curve(by_test_corpus: dict, sizes: list[int], draws: int, slices: dict, seed: int) -> dict:
    """Window EER of the shipped recipe against the number of training people: for each corpus X,
    ``draws`` random sets of that many people from the other corpus and from everyone not tested
    (a random half of X tested each draw)."""
    recipe = Recipe(standardise="site", site_min=10**6, enrollment="max")
    rng = np.random.default_rng(seed)
    out = {}
    for corpus, people in by_test_corpus.items():
        complete = [p for p in people if p.corpus == corpus and p.complete]
        for size in sizes:
            values = []
            for _ in range(draws):
                order = rng.permutation(len(complete))
                test = [complete[i] for i in order[: len(complete) // 2]]
                tested = {p.subject for p in test}
                pool = [p for p in people if p.subject not in tested]
                if size > len(pool):
                    break
                chosen = [pool[i] for i in rng.choice(len(pool), size=size, replace=False)]
                if sum(p.complete for p in chosen) < 2:
                    continue
                figures = run_split(chosen, test, [recipe], slices, int(rng.integers(1 << 30)))
                if "eer_all" in figures[recipe.label]:  # a test half of one person has no impostor
                    values.append(figures[recipe.label]["eer_all"])
            if values:
                out.setdefault(corpus, {})[str(size)] = summary(values, size, len(complete) // 2)
    return out


def run_transfer(args: argparse.Namespace) -> dict:
    from ...models.montage import parse_montage

    n_channels = len(parse_montage(args.montage))
    slices = SpectralFeatures(SpectralConfig(n_channels=n_channels)).group_slices()
    by_test_corpus = _features(args)
    recipes = [r for name in args.recipes.split(",") if name for r in RECIPES[name.strip()]]
    recipes = list(dict.fromkeys(recipes))  # each once, in order
    result = run(by_test_corpus, recipes, args.repeats, slices, args.seed) if recipes else {}
    result["recipes"] = {r.label: dataclasses.asdict(r) for r in recipes}
    if args.learning_curve:
        sizes = [int(s) for s in args.learning_curve.split(",") if s.strip()]
        result["learning_curve"] = learning_curve(by_test_corpus, sizes, args.draws, slices, args.seed)
    result["montage"] = list(parse_montage(args.montage))
    return result
