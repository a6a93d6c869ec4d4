"""``neuroauth crossval``: figures on people the model never saw, and on corpora it never saw.

Two kinds of split, every one subject-disjoint:

- **repeated splits** within each corpus: ``repeats`` times, a random half of the
  corpus's people with every recording are the test people; the model is fitted on
  everyone else (the rest of that corpus and every other corpus). Figures are the
  mean over splits with a 95 % interval (:func:`interval`);
- **leave-one-corpus-out** (with two corpora or more): fitted on every other
  corpus, tested on all of one: the figure that predicts a new user's headset,
  which is always another lab.

The denoiser learns to remove noise, not who someone is, so one denoiser serves
every split whose test people it never saw: with several corpora, the one
trained on every corpus but the test people's; with one corpus, one trained per
split on its training people. Everything after the denoiser (embedder settings,
projection, cohort, calibration sequences) is fitted per split on its training
people only. Each split's model runs the verification protocol
(:mod:`.evaluate`) and, with decision targets, the continuous evaluation
(:mod:`.continuous`) on its test people.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..enroll.decision import DecisionTargets
from ..models.checkpoint import NeuroAuthModel, load_checkpoint, save_checkpoint
from .continuous import evaluate_continuous, site_reports
from .data import SubjectData
from .evaluate import embedded_people, evaluate
from .train import DenoisedRecordings, Denoiser, TrainOptions, assemble, fit_stage2, train_stage1

log = logging.getLogger(__name__)

MIN_TEST_PEOPLE = 4


@dataclass(frozen=True)
class Split:
    """One fit and test: who is fitted on, who is tested."""

    name: str  # "<corpus> split <k>" or "<corpora> -> <corpus>"
    kind: str  # "repeated" or "leave-one-corpus-out"
    corpus: str  # the test people's corpus
    training: tuple[str, ...]
    test: tuple[str, ...]


def plan_splits(data: Sequence[SubjectData], repeats: int, seed: int) -> list[Split]:
    """Per corpus: repeated random halves of its people, then (with several corpora) that corpus left
    out; the splits of one test corpus come together, as they share a denoiser."""
    corpora = sorted({d.corpus.name for d in data})
    rng = np.random.default_rng(seed)
    splits = []
    for corpus in corpora:
        complete = [d.subject for d in data if d.corpus.name == corpus and d.complete]
        if len(complete) >= 2 * MIN_TEST_PEOPLE:
            for k in range(repeats):
                order = rng.permutation(len(complete))
                test = sorted(complete[i] for i in order[: len(complete) // 2])
                training = tuple(d.subject for d in data if d.subject not in test)
                splits.append(Split(f"{corpus} split {k + 1}", "repeated", corpus, training, tuple(test)))
        else:
            log.warning("%s has %d people with every recording: too few to split", corpus, len(complete))
        if len(corpora) >= 2 and len(complete) >= 2:
            training = tuple(d.subject for d in data if d.corpus.name != corpus)
            others = "+".join(c for c in corpora if c != corpus)
            splits.append(
                Split(f"{others} -> {corpus}", "leave-one-corpus-out", corpus, training, tuple(complete))
            )
    if not splits:
        raise ValueError(
            f"no corpus has {2 * MIN_TEST_PEOPLE} people with every recording to split, and there is "
            "only one corpus; add people or corpora"
        )
    return splits


def interval(values: Sequence[float | None], n_train: int, n_test: int) -> dict:
    """Mean over repeated splits and a 95 % interval for it.

    The splits share people, so their figures are correlated and the plain
    t-interval is too narrow; the variance is corrected as Nadeau and Bengio
    (Machine Learning 52, 2003) propose: ``(1/J + n_test/n_train) s^2`` over ``J``
    splits. ``None`` values (a figure a split could not measure) are left out.
    """
    from scipy import stats

    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.975, len(v) - 1) * np.sqrt((1 / len(v) + n_test / n_train) * v.var(ddof=1)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(v)}


def _numbers(report: dict, prefix: str = "") -> dict[str, float | None]:
    """Every number of a (nested) report, keyed by its path."""
    out = {}
    for key, value in report.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _numbers(value, path + ".")
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)) or value is None:
            out[path] = value
    return out


SKIP = ("subjects", "seen_in_training", "checkpoint", "protocol", "corpora", "cohort_subjects", "targets")


def summarise_splits(reports: Sequence[dict], n_train: int, n_test: int) -> dict[str, dict]:
    """Per figure path, its mean and 95 % interval over the splits."""
    numbers = [_numbers({k: v for k, v in r.items() if k not in SKIP}) for r in reports]
    keys = sorted({k for n in numbers for k in n})
    return {k: interval([n.get(k) for n in numbers], n_train, n_test) for k in keys}


def _denoiser_for(
    split: Split,
    by_subject: dict[str, SubjectData],
    corpora: list[str],
    options: TrainOptions,
    keep: Path | None,
    cache: dict,
    progress: bool,
) -> tuple[Denoiser, DenoisedRecordings]:
    """The denoiser that never saw ``split``'s test people: one per held-out corpus with several
    corpora (kept in ``keep`` as ``denoiser-without-<corpus>.pt``), else one per split."""
    key = split.corpus if len(corpora) >= 2 else split.name
    if key in cache:
        return cache[key]
    cache.clear()  # one denoiser's recordings at a time: they take memory
    if len(corpora) >= 2:
        people = [d for d in by_subject.values() if d.corpus.name != split.corpus]
        name = f"denoiser-without-{split.corpus}.pt"
    else:
        people = [by_subject[s] for s in split.training]
        name = f"denoiser-{split.name.replace(' ', '-')}.pt"
    path = keep / name if keep is not None else None
    denoiser = None
    if path is not None and path.is_file():
        model = load_checkpoint(path)
        if (
            set(model.meta.get("training_subjects", [])) == {d.subject for d in people}
            and model.denoiser.config == options.denoiser
            and model.meta.get("denoiser_training", {}).get("steps") == options.stage1.steps
        ):
            log.info("reusing the denoiser of %s", path)
            denoiser = Denoiser(
                model.denoiser,
                model.meta["denoiser_training"],
                model.meta["denoiser_fit_subjects"],
                model.meta["denoiser_validation_subjects"],
            )
    if denoiser is None:
        partial = path.with_name(path.name + ".partial") if path is not None else None
        denoiser = train_stage1(people, options, partial, progress)
        if path is not None:  # a checkpoint of the denoiser alone, to be reused
            save_checkpoint(_denoiser_only(denoiser, people, options), path)
            partial.unlink(missing_ok=True)
    cache[key] = (denoiser, DenoisedRecordings(denoiser.net, options.spec))
    return cache[key]


def _denoiser_only(
    denoiser: Denoiser, people: Sequence[SubjectData], options: TrainOptions
) -> NeuroAuthModel:
    from ..models.embedders.spectral import SpectralConfig, SpectralEmbedder

    embedder = SpectralEmbedder(SpectralConfig(n_channels=len(options.montage), pca_dim=1))  # a placeholder
    return NeuroAuthModel(
        montage=tuple(options.montage),
        spec=options.spec,
        denoiser=denoiser.net,
        embedder=embedder,
        meta={
            "training_subjects": [d.subject for d in people],
            "denoiser_fit_subjects": denoiser.fit_subjects,
            "denoiser_validation_subjects": denoiser.validation_subjects,
            "denoiser_training": denoiser.record,
            "note": "the denoiser only, kept by neuroauth crossval; its embedder is a placeholder",
        },
    )


def crossval(
    data: Sequence[SubjectData],
    options: TrainOptions,
    repeats: int = 10,
    continuous: DecisionTargets | None = None,
    noise_types: Sequence[str] = (),
    keep: Path | None = None,
    progress: bool = True,
    only: Sequence[str] = (),
    site_people: Sequence[int] = (),
) -> dict:
    """Every split's reports and, per corpus and kind, their summary. ``only`` restricts the
    splits to those whose name starts with one of its entries. With ``continuous``, each
    of ``site_people`` adds the continuous figures with templates normalised against that
    many other test people (``report["continuous_site"][str(n)]``; a number above the test
    people's means all of them, labelled ``all``)."""
    by_subject = {d.subject: d for d in data}
    corpora = sorted({d.corpus.name for d in data})
    splits = plan_splits(data, repeats, options.seed)
    if only:
        splits = [s for s in splits if any(s.name.startswith(o) for o in only)]
    cache: dict = {}
    reports: dict[str, dict] = {}
    for i, split in enumerate(splits):
        started = time.time()
        log.info(
            "%s (%d/%d): fitting on %d people, testing %d",
            split.name,
            i + 1,
            len(splits),
            len(split.training),
            len(split.test),
        )
        denoiser, denoised = _denoiser_for(split, by_subject, corpora, options, keep, cache, progress)
        training = [by_subject[s] for s in split.training]
        test = [by_subject[s] for s in split.test]
        stage2 = fit_stage2(training, denoiser.net, options, denoised, progress)
        model = assemble(stage2, options, training).eval()
        embedded = embedded_people(model, test, progress, gate=continuous is not None)
        report, _ = evaluate(model, test, noise_types, progress=progress, embedded=embedded)
        if report["seen_in_training"]:
            raise RuntimeError(f"test people {report['seen_in_training']} were in the training data")
        if continuous is not None:
            report["continuous"], _, _ = evaluate_continuous(model, test, continuous, progress, embedded)
            report["continuous_site"] = site_reports(model, test, continuous, embedded, site_people, progress)
        report["embedder_selection"] = stage2.record.get("chosen")
        report["fit_seconds"] = round(time.time() - started, 1)
        reports[split.name] = {"split": dataclasses.asdict(split), "report": report}
        log.info("%s: window EER %.3f", split.name, report["window_eer"])
    return {
        "splits": reports,
        "summary": summary(reports),
        "corpora": corpora,
        "montage": list(options.montage),
        "repeats": repeats,
        "train_options": {
            "denoiser": options.denoiser.to_dict(),
            "stage1": dataclasses.asdict(options.stage1),
            "search": dataclasses.asdict(options.search),
            "crossfit": dataclasses.asdict(options.crossfit),
            "val_subjects": options.val_subjects,
            "seed": options.seed,
        },
    }


def summary(reports: dict[str, dict]) -> dict:
    """Per group of splits (a corpus's repeated splits, each leave-one-corpus-out direction): the
    mean and 95 % interval of every figure (one split: its figures, no interval)."""
    groups: dict[str, list[dict]] = {}
    for name, entry in reports.items():
        split = entry["split"]
        group = f"{split['corpus']} (repeated)" if split["kind"] == "repeated" else name
        groups.setdefault(group, []).append(entry)
    out = {}
    for group, entries in groups.items():
        n_train = int(np.mean([len(e["split"]["training"]) for e in entries]))
        n_test = int(np.mean([len(e["split"]["test"]) for e in entries]))
        out[group] = {
            "kind": entries[0]["split"]["kind"],
            "splits": len(entries),
            "training_people": n_train,
            "test_people": n_test,
            "figures": summarise_splits([e["report"] for e in entries], n_train, n_test),
        }
    return out
