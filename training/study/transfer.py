"""Which recipe transfers to people and headsets never seen: a study on cached window features.

Every condition starts from the same spectral features of every window
(:mod:`.window_cache`) and differs only in what is fitted on whom:

- **training people**: the rest of the test people's corpus, every other person
  of every corpus, or (leave-one-corpus-out) only the other corpus;
- **feature standardisation**: the training pool's statistics (the shipped
  recipe), or each corpus standardised by its own statistics in training and the
  test site by the statistics of the people enrolled there (their enrollment
  windows), falling back to the training pool's for a site of one person;
- **enrollment**: the first 60 s of the first state, or every state's enrollment
  part (:func:`~neuroauth.training.protocol.state_plans`) with one centroid per
  state, scored by the mean or the best of the per-state cosines, or one
  centroid of all of it;
- **score normalisation**: none, z-norm (the template's scores of cohort windows),
  t-norm (the window's scores against cohort templates) or s-norm (their mean),
  with the training people or the other people enrolled at the site as cohort.

Splits: repeated random halves of a corpus's people with both recordings as
test people, and leave-one-corpus-out. The figure of a split is the window EER
of every test person's probes against every test person's template.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ...metrics import eer, moving_average
from ..protocol import state_plans
from ..wccn import principal_axes, shrunk_scales, within_class_eigen, zscore_stats
from .window_cache import PersonFeatures

log = logging.getLogger(__name__)

WINDOW_SECONDS = 4.0


@dataclass(frozen=True)
class Recipe:
    """One condition of the study."""

    features: str = "denoised"  # or "raw": without the denoiser
    standardise: str = "pool"  # "pool" or "site"
    site_people: int | None = None  # people enrolled at the site for its statistics (None: every test person)
    enrollment: str = "first"  # "first", "pooled" (one centroid of every state), "mean" or "max" (per state)
    norm: str = "none"  # "none", "z", "t", "s"
    cohort: str = "site"  # score-normalisation cohort: "site" (the site's other people; the training
    # people for a site of one) or "training"
    shrinkage: float = 0.02
    pca_dim: int = 0  # 0: every feature
    groups: str = "all"  # feature groups: "all" or "bandpower+coherence" etc.
    site_stats: str = "mean+scale"  # what the site's statistics replace: "mean+scale" or "mean"
    site_min: int = 2  # a site with fewer people uses the training people's statistics and cohort
    gain_free: bool = False  # remove each channel's mean log power (a per-channel gain) from its spectra

    @property
    def label(self) -> str:
        parts = [self.features, f"std={self.standardise}"]
        if self.site_people is not None:
            parts.append(f"site={self.site_people}")
        parts += [f"enroll={self.enrollment}", f"norm={self.norm}"]
        if self.norm != "none":
            parts.append(f"cohort={self.cohort}")
        if self.shrinkage != 0.02 or self.pca_dim:
            parts.append(f"wccn={self.shrinkage},pca={self.pca_dim}")
        if self.groups != "all":
            parts.append(self.groups)
        if self.site_stats != "mean+scale":
            parts.append(f"site_stats={self.site_stats}")
        if self.gain_free:
            parts.append("gain-free")
        if self.site_min != 2:
            parts.append(f"site_min={self.site_min}")
        return " ".join(parts)


# -- the pieces -------------------------------------------------------------------------------------


def _windows(p: PersonFeatures, kind: str) -> list[np.ndarray | None]:
    return p.denoised if kind == "denoised" else p.raw


def gain_free(x: np.ndarray, slices: dict[str, slice], n_channels: int, n_bands: int) -> np.ndarray:
    """Each channel's log spectra minus their mean over frequency: a channel's gain adds a constant
    to its log power, which this removes (relative band power and coherence are free of it already)."""
    x = x.copy()
    if "psd" in slices:
        sl = slices["psd"]
        block = x[:, sl].reshape(len(x), n_channels, -1)
        x[:, sl] = (block - block.mean(-1, keepdims=True)).reshape(len(x), -1)
    if "bandpower" in slices:
        sl = slices["bandpower"]
        absolute = x[:, sl.start : sl.start + n_channels * n_bands].reshape(len(x), n_channels, n_bands)
        x[:, sl.start : sl.start + n_channels * n_bands] = (
            absolute - absolute.mean(-1, keepdims=True)
        ).reshape(len(x), -1)
    return x


def _columns(n_features: int, groups: str, slices: dict[str, slice]) -> np.ndarray:
    if groups == "all":
        return np.arange(n_features)
    return np.concatenate([np.arange(slices[g].start, slices[g].stop) for g in groups.split("+")])


def _all_windows(people: Sequence[PersonFeatures], kind: str, cols) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for i, p in enumerate(people):
        for x in _windows(p, kind):
            if x is not None:
                feats.append(x[:, cols])
                labels.append(np.full(len(x), i))
    return np.concatenate(feats).astype(np.float64), np.concatenate(labels)


def _enrollment(p: PersonFeatures, kind: str, cols, states: bool) -> list[np.ndarray]:
    """Per state (that enrolls): the enrollment windows' features."""
    plans = state_plans(p.enroll_seconds, WINDOW_SECONDS, states)
    out = []
    for x, plan in zip(_windows(p, kind), plans, strict=True):
        if x is not None and len(x[plan.enroll]):
            out.append(x[plan.enroll][:, cols].astype(np.float64))
    return out


def _probes(p: PersonFeatures, kind: str, cols) -> list[np.ndarray]:
    """Per state: the probe windows' features (the same cut for every enrollment)."""
    plans = state_plans(p.enroll_seconds, WINDOW_SECONDS, True)
    return [
        x[plan.probe][:, cols].astype(np.float64) for x, plan in zip(_windows(p, kind), plans, strict=True)
    ]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Fitted:
    """A projection fitted on training people: ``unit(((f - mean) / scale) @ matrix)``."""

    mean: np.ndarray
    scale: np.ndarray
    matrix: np.ndarray

    def embed(
        self, f: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None
    ) -> np.ndarray:
        m = self.mean if mean is None else mean
        s = self.scale if scale is None else scale
        return _unit(((f - m) / s) @ self.matrix)


def fit(training: Sequence[PersonFeatures], recipe: Recipe, cols: np.ndarray) -> Fitted:
    """Z-score (pooled, or per corpus), PCA and shrunk WCCN on every window of ``training``."""
    feats, labels = _all_windows(training, recipe.features, cols)
    if recipe.standardise == "site":
        corpora = np.array([training[i].corpus for i in labels])
        z = np.empty_like(feats)
        for c in np.unique(corpora):
            rows = corpora == c
            m, s = zscore_stats(feats[rows])
            z[rows] = (feats[rows] - m) / s
        mean, scale = zscore_stats(feats)  # the fallback for a site of one person
    else:
        mean, scale = zscore_stats(feats)
        z = (feats - mean) / scale
    basis = principal_axes(z, recipe.pca_dim)
    evals, evecs = within_class_eigen(z @ basis, labels)
    return Fitted(mean, scale, (basis @ evecs) * shrunk_scales(evals, recipe.shrinkage))


def _cos(x: np.ndarray, centroids: np.ndarray, rule: str) -> np.ndarray:
    """Cosine of unit rows ``x (n, D)`` to a template's unit centroids ``(K, D)``, combined by ``rule``."""
    per_state = x @ centroids.T  # (n, K)
    return per_state.max(1) if rule == "max" else per_state.mean(1)


def _template(enrolled: list[np.ndarray], enrollment: str) -> np.ndarray:
    """Centroids ``(K, D)``: one of everything ("first", "pooled"), or one per state."""
    if enrollment in ("first", "pooled"):
        return _unit(np.concatenate(enrolled).mean(0))[None]
    return np.stack([_unit(e.mean(0)) for e in enrolled])


def site_groups(n: int, size: int | None, rng: np.random.Generator) -> list[list[int]]:
    """The test people split into sites of ``size`` people (None: one site of everyone)."""
    if size is None or size >= n:
        return [list(range(n))]
    order = rng.permutation(n)
    return [sorted(order[i : i + size].tolist()) for i in range(0, n, size)]


@dataclass
class Cohort:
    """Training people as a score-normalisation cohort: some windows, and every person's template."""

    windows: np.ndarray  # (M, D)
    templates: list[np.ndarray]  # (K, D) each


def training_cohort(
    training: Sequence[PersonFeatures], fitted: Fitted, recipe: Recipe, cols, rng: np.random.Generator
) -> Cohort:
    """The training people embedded as in training (standardised by their corpus for "site")."""
    people = training_with_both(training)
    windows, templates = [], []
    for corpus in sorted({p.corpus for p in people}):
        members = [p for p in people if p.corpus == corpus]
        enrolled = [_enrollment(p, recipe.features, cols, recipe.enrollment != "first") for p in members]
        mean = scale = None
        if recipe.standardise == "site":
            mean, scale = zscore_stats(np.concatenate([np.concatenate(e) for e in enrolled]))
        for parts in enrolled:
            embedded = [fitted.embed(x, mean, scale) for x in parts]
            windows.append(np.concatenate(embedded))
            templates.append(_template(embedded, recipe.enrollment))
    everything = np.concatenate(windows)
    take = rng.choice(len(everything), size=min(3000, len(everything)), replace=False)
    return Cohort(everything[take], templates)


def site_scores(
    test: Sequence[PersonFeatures],
    fitted: Fitted,
    recipe: Recipe,
    cols,
    rng: np.random.Generator,
    cohort: Cohort | None,
) -> list[list[np.ndarray]]:
    """``out[p][s]``: person p's probe windows of state s scored against every test person's template
    ``(W, n)``, each template at its own site (its statistics, its cohort) as a deployment would."""
    states = recipe.enrollment != "first"
    rule = "max" if recipe.enrollment == "max" else "mean"
    enroll_f = [_enrollment(p, recipe.features, cols, states) for p in test]
    probe_f = [_probes(p, recipe.features, cols) for p in test]
    n = len(test)
    out = [[np.zeros((len(x), n)) for x in probes] for probes in probe_f]
    for site in site_groups(n, recipe.site_people, rng):
        mean = scale = None
        big_enough = len(site) >= recipe.site_min
        if recipe.standardise == "site" and big_enough:
            mean, scale = zscore_stats(np.concatenate([np.concatenate(enroll_f[i]) for i in site]))
            if recipe.site_stats == "mean":
                scale = None
        enrolled = {i: [fitted.embed(x, mean, scale) for x in enroll_f[i]] for i in site}
        templates = {i: _template(enrolled[i], recipe.enrollment) for i in site}
        site_cohort = big_enough and len(site) >= 2 and recipe.cohort == "site"
        # z-norm: the template's scores of cohort windows, as sums per cohort person so that the
        # wearer's own windows can be left out (an impostor is a stranger to the site)
        z_parts: dict[int, dict] = {}
        if recipe.norm in ("z", "s"):
            for t in site:
                if site_cohort:
                    parts = {j: _cos(np.concatenate(enrolled[j]), templates[t], rule) for j in site if j != t}
                else:
                    parts = {-1: _cos(cohort.windows, templates[t], rule)}
                z_parts[t] = {j: (len(c), c.sum(), (c**2).sum()) for j, c in parts.items()}

        def z_stats(t: int, wearer: int, z_parts=z_parts, templates=templates) -> tuple[float, float]:
            kept = [v for j, v in z_parts[t].items() if j != wearer]
            if not kept:  # a site of two, its other person wearing: the training cohort stands in
                c = _cos(cohort.windows, templates[t], rule)
                kept = [(len(c), c.sum(), (c**2).sum())]
            n_, s1, s2 = (sum(v[k] for v in kept) for k in range(3))
            mu = s1 / n_
            return mu, max(float(np.sqrt(max(s2 / n_ - mu**2, 0.0))), 1e-6)

        for p in range(n):
            for s, x in enumerate(probe_f[p]):
                e = fitted.embed(x, mean, scale)
                raw = {t: _cos(e, templates[t], rule) for t in site}
                tn = {}
                if recipe.norm in ("t", "s"):
                    if site_cohort:  # the claimed owner's and the wearer's own templates left out:
                        # an impostor is a stranger to the site, not someone enrolled there
                        for t in site:
                            rest = [raw[j] for j in site if j not in (t, p)]
                            if len(rest) < 2:  # too few left at the site: the training cohort stands in
                                rest = [_cos(e, c, rule) for c in cohort.templates]
                            cs = np.stack(rest, axis=1)
                            tn[t] = (cs.mean(1), np.maximum(cs.std(1), 1e-6))
                    else:
                        cs = np.stack([_cos(e, c, rule) for c in cohort.templates], axis=1)
                        for t in site:
                            tn[t] = (cs.mean(1), np.maximum(cs.std(1), 1e-6))
                for t in site:
                    v = raw[t]
                    if recipe.norm in ("z", "s"):
                        mu, sd = z_stats(t, p)
                        zv = (v - mu) / sd
                    if recipe.norm == "z":
                        v = zv
                    elif recipe.norm == "t":
                        v = (v - tn[t][0]) / tn[t][1]
                    elif recipe.norm == "s":
                        v = 0.5 * (zv + (v - tn[t][0]) / tn[t][1])
                    out[p][s][:, t] = v
    return out


def figures(scores: list[list[np.ndarray]], state_names: Sequence[str]) -> dict:
    """Window EER per probe state and over all, and the EER of 10-window means."""
    out = {}
    for label, pick in [("all", None)] + [(name, k) for k, name in enumerate(state_names)]:
        for smooth in (1, 10):
            genuine, impostor = [], []
            for i, person in enumerate(scores):
                for k, s in enumerate(person):
                    if pick is not None and k != pick:
                        continue
                    m = moving_average(s, smooth)
                    genuine.append(m[:, i])
                    impostor.append(np.delete(m, i, axis=1).ravel())
            g, imp = np.concatenate(genuine), np.concatenate(impostor)
            if len(g) and len(imp):
                out[f"eer_{label}" + ("" if smooth == 1 else f"_{smooth}")] = eer(g, imp)
    return out


# -- one split, many recipes -------------------------------------------------------------------------


def run_split(
    training: Sequence[PersonFeatures],
    test: Sequence[PersonFeatures],
    recipes: Sequence[Recipe],
    slices: dict[str, slice],
    seed: int,
) -> dict[str, dict]:
    """Every recipe on one split; fits are shared by the recipes that share them."""
    n_features = next(x for x in test[0].denoised if x is not None).shape[1]
    fits: dict[tuple, Fitted] = {}
    out = {}
    plain = (training, test)
    transformed = None
    for recipe in recipes:
        if recipe.gain_free:
            if transformed is None:
                transformed = tuple(_gain_free_people(group, slices) for group in plain)
            training, test = transformed
        else:
            training, test = plain
        cols = _columns(n_features, recipe.groups, slices)
        key = (
            recipe.features,
            recipe.standardise,
            recipe.shrinkage,
            recipe.pca_dim,
            recipe.groups,
            recipe.gain_free,
        )
        if key not in fits:
            fits[key] = fit(training, recipe, cols)
        fitted = fits[key]
        rng = np.random.default_rng(seed)
        cohort = None
        if recipe.norm != "none":
            cohort = training_cohort(training, fitted, recipe, cols, np.random.default_rng(seed + 1))
        scores = site_scores(test, fitted, recipe, cols, rng, cohort)
        out[recipe.label] = figures(scores, test[0].states)
    return out


def _gain_free_people(people: Sequence[PersonFeatures], slices: dict[str, slice]) -> list[PersonFeatures]:
    from ...models.embedders.spectral import BANDS

    n_bands = len(BANDS)
    n_channels = (slices["bandpower"].stop - slices["bandpower"].start) // (2 * n_bands)

    def each(xs):
        return [None if x is None else gain_free(x, slices, n_channels, n_bands) for x in xs]

    return [replace(p, denoised=each(p.denoised), raw=each(p.raw)) for p in people]


def training_with_both(people: Sequence[PersonFeatures]) -> list[PersonFeatures]:
    return [p for p in people if p.complete]


def splits(
    people: Sequence[PersonFeatures], corpus: str, repeats: int, seed: int, train_on: str
) -> list[tuple[list[PersonFeatures], list[PersonFeatures]]]:
    """Random halves of ``corpus``'s complete people as test people, ``repeats`` times.

    ``train_on``: "corpus" (the rest of that corpus) or "all" (everyone not tested).
    """
    members = [p for p in people if p.corpus == corpus]
    complete = [p for p in members if p.complete]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        order = rng.permutation(len(complete))
        test = [complete[i] for i in sorted(order[: len(complete) // 2])]
        tested = {p.subject for p in test}
        pool = members if train_on == "corpus" else people
        out.append(([p for p in pool if p.subject not in tested], test))
    return out


def loco(people: Sequence[PersonFeatures], test_corpus: str):
    return [p for p in people if p.corpus != test_corpus], [
        p for p in people if p.corpus == test_corpus and p.complete
    ]


def summary(values: Sequence[float], n_train: int | None = None, n_test: int | None = None) -> dict:
    """Mean and a 95 % interval over splits.

    Repeated random splits share people, so the plain t-interval is too narrow;
    with ``n_train`` and ``n_test`` the variance is corrected as Nadeau and
    Bengio (2003) propose: ``(1/J + n_test/n_train) s^2``.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    j = len(v)
    mean = float(v.mean())
    if j < 2:
        return {"mean": mean, "low": None, "high": None, "n": j}
    factor = 1.0 / j + (n_test / n_train if n_train and n_test else 0.0)
    half = float(stats.t.ppf(0.975, j - 1) * np.sqrt(factor * v.var(ddof=1)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": j, "values": v.tolist()}


def grid(**axes) -> list[Recipe]:
    keys = list(axes)
    return [Recipe(**dict(zip(keys, combo, strict=True))) for combo in itertools.product(*axes.values())]


# -- the whole study ---------------------------------------------------------------------------------


def run(
    by_test_corpus: dict[str, list[PersonFeatures]],
    recipes: Sequence[Recipe],
    repeats: int,
    slices: dict[str, slice],
    seed: int = 0,
    train_on: Sequence[str] = ("all",),
    progress: bool = True,
) -> dict:
    """Repeated splits within each corpus and leave-one-corpus-out, every recipe on every split.

    ``by_test_corpus[X]``: every person of every corpus, their features made with a
    denoiser that never saw X's people; it serves every split whose test people are X's.
    """
    from tqdm.auto import tqdm

    result: dict = {"splits": {}, "loco": {}}
    jobs = []
    for corpus, people in by_test_corpus.items():
        for mode in train_on:
            for r, (training, test) in enumerate(splits(people, corpus, repeats, seed, mode)):
                jobs.append((("splits", f"{corpus} (train: {mode})"), r, training, test))
        others = {p.corpus for p in people} - {corpus}
        if others:
            training, test = loco(people, corpus)
            jobs.append((("loco", f"{'+'.join(sorted(others))} -> {corpus}"), 0, training, test))
    for (kind, name), r, training, test in tqdm(jobs, desc="splits", disable=not progress):
        figures_by_recipe = run_split(training, test, recipes, slices, seed + r)
        entry = result[kind].setdefault(name, {"n_train": len(training), "n_test": len(test), "recipes": {}})
        for label, figs in figures_by_recipe.items():
            per = entry["recipes"].setdefault(label, {})
            for k, v in figs.items():
                per.setdefault(k, []).append(v)
    for kind in ("splits", "loco"):
        for entry in result[kind].values():
            for label, figs in entry["recipes"].items():
                entry["recipes"][label] = {
                    k: summary(v, entry["n_train"], entry["n_test"]) for k, v in figs.items()
                }
    return result
