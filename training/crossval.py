"""``neuroauth crossval``: figures on people the model never saw.

Subjects are split into ``folds`` disjoint groups. For each fold the whole
training (denoiser, cross-validated embedder settings, baseline statistics)
runs on the other subjects only, and the evaluation protocol runs on the
fold's subjects. Every figure is reported as mean and spread over folds. With
continuous targets, each fold's model also runs the continuous evaluation on its
held-out subjects (its cohort is the fold's training subjects), and the sessions
of all folds are pooled into one summary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..enroll.decision import DecisionTargets
from .continuous import evaluate_continuous, pool, summarise
from .data import SubjectData
from .evaluate import evaluate
from .learned_embedders import LearnedTraining, uses_spectral
from .train import TrainOptions, train

log = logging.getLogger(__name__)


def subject_folds(subjects: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    if not 2 <= folds <= len(subjects) // 2:
        raise ValueError(f"{folds} folds do not fit {len(subjects)} subjects (need 2 <= folds <= subjects/2)")
    order = np.random.default_rng(seed).permutation(len(subjects))
    return [sorted(subjects[i] for i in order[f::folds]) for f in range(folds)]


def aggregate(reports: Sequence[dict]) -> dict:
    """Mean and standard deviation over folds of every number in the reports."""

    def walk(items: Sequence):
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([r[k] for r in items]) for k in first if all(k in r for r in items)}
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            values = np.array([np.nan if v is None else v for v in items], dtype=float)
            return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}
        return None

    skip = {"subjects", "seen_in_training", "checkpoint", "protocol", "n_genuine", "n_impostor"}
    trimmed = [{k: v for k, v in r.items() if k not in skip} for r in reports]
    return walk(trimmed)


def stored_form(learned: LearnedTraining) -> dict:
    """``learned`` as a checkpoint's JSON metadata holds it (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(learned)))


def learned_alike(stored: dict | None, learned: LearnedTraining) -> bool:
    """Whether a checkpoint's recorded learned-embedder training is ``learned``; a setting added
    since the checkpoint was written counts as its default, the only value there was."""
    if stored is None:
        return False
    return (stored_form(LearnedTraining()) | stored) == stored_form(learned)


def _kept(path: Path, fit: Sequence[SubjectData], options: TrainOptions):
    """The checkpoint at ``path`` if it was trained on exactly ``fit`` with ``options``, else None."""
    from ..models.checkpoint import load_checkpoint

    if not path.is_file():
        return None
    model = load_checkpoint(path)
    meta = model.meta
    stage1 = dataclasses.asdict(options.stage1)
    search = json.loads(json.dumps(dataclasses.asdict(options.search)))  # tuples as lists, as stored
    same = (
        meta.get("training_subjects") == [d.subject for d in fit]
        and model.montage == tuple(options.montage)
        and model.spec == options.spec
        and model.denoiser.config == options.denoiser
        and meta.get("seed") == options.seed
        and meta.get("embedder_choice", "spectral") == options.embedder
        and len(meta.get("denoiser_validation_subjects", [])) == options.val_subjects
        and all(
            meta.get("denoiser_training", {}).get(k) == json.loads(json.dumps(v)) for k, v in stage1.items()
        )
        and (
            not uses_spectral(options.embedder) or meta.get("embedder_selection", {}).get("search") == search
        )
        and (  # how a learned embedder (and a jointly trained denoiser) was trained
            options.embedder == "spectral" or learned_alike(meta.get("learned_training"), options.learned)
        )
    )
    if same:
        log.info("reusing %s (trained on the same subjects with the same options)", path)
        return model
    log.info("%s was trained otherwise; training again", path)
    return None


def crossval(
    data: Sequence[SubjectData],
    options: TrainOptions,
    folds: int,
    mamba: Sequence[bool],
    progress: bool = True,
    continuous: DecisionTargets | None = None,
    keep: Path | None = None,
) -> dict:
    """Per variant, every fold's report and their summary; with ``continuous`` targets, the
    continuous evaluation too (per fold, and pooled over the sessions of every fold). With ``keep``,
    each fold's checkpoint is written there as ``<variant>-fold<k>.pt``, and one already there
    that was trained with the same options on the same subjects is used instead of training again
    (to re-evaluate without retraining)."""
    subjects = [d.subject for d in data]
    groups = subject_folds(subjects, folds, options.seed)
    by_subject = {d.subject: d for d in data}
    result = {"folds": groups, "variants": {}}
    for use_mamba in mamba:
        variant = dataclasses.replace(
            options, denoiser=dataclasses.replace(options.denoiser, use_mamba=use_mamba)
        )
        reports, pooled = [], []
        for f, held_out in enumerate(groups):
            fit = [by_subject[s] for s in subjects if s not in held_out]
            log.info(
                "fold %d/%d (mamba=%s): training on %d subjects, evaluating on %d",
                f + 1,
                len(groups),
                use_mamba,
                len(fit),
                len(held_out),
            )
            name = "mamba" if use_mamba else "no_mamba"
            with tempfile.TemporaryDirectory() as tmp:
                out = (keep or Path(tmp)) / f"{name}-fold{f + 1}.pt"
                model = _kept(out, fit, variant) if keep is not None else None
                if model is None:
                    model = train(fit, variant, out, resume=False, progress=progress)
            report, _ = evaluate(model, [by_subject[s] for s in held_out], progress=progress)
            if report["seen_in_training"]:
                raise RuntimeError(
                    f"held-out subjects {report['seen_in_training']} were in the training data"
                )
            if continuous is not None:
                held = [by_subject[s] for s in held_out]
                report["continuous"], _, figures = evaluate_continuous(model, held, continuous, progress)
                pooled.append(figures)
            report["embedder_selection"] = model.meta["embedder_selection"].get("chosen")
            report["train_seconds"] = model.meta["seconds"]["total"]
            reports.append(report)
        result["variants"][name] = {"folds": reports, "summary": aggregate(reports)}
        if pooled:
            result["variants"][name]["continuous_pooled"] = summarise(pool(pooled))
    result["montage"] = list(options.montage)
    result["train_options"] = {
        "denoiser": options.denoiser.to_dict(),
        "stage1": dataclasses.asdict(options.stage1),
        "search": dataclasses.asdict(options.search),
        "val_subjects": options.val_subjects,
        "seed": options.seed,
    }
    return result
