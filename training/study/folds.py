"""The embedder study's folds: disjoint groups of people with both recordings, and fold checkpoints
kept on disk and reused when trained alike.

The study compares candidates on the same fold checkpoints (denoiser and spectral
embedder trained on the other folds), so that only the embedder differs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data import SubjectData
from ..train import TrainOptions
from .learned_embedders import LearnedTraining, uses_spectral

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
    from ...models.checkpoint import load_checkpoint

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
