"""The embedder study's fits, kept beside the fold checkpoints so that an interrupted study
continues where it stopped.

With ``--keep-checkpoints DIR``, a learned candidate fitted on a fold is written
to ``DIR/<candidate>-<fold checkpoint>.pt``: the fold's checkpoint with the
candidate's embedder (and, for joint training, its own denoiser), its fitting
record and time in the metadata. While it trains, its training state goes to
``DIR/<candidate>-<fold checkpoint>.partial`` (see
:func:`.metric_learning.train_metric`). A later run on the same fold checkpoint
with the same learned-embedder settings reuses the fit, or continues its training.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from ...atomic import remove_stale_temporaries
from ...models.checkpoint import NeuroAuthModel, load_checkpoint, save_checkpoint
from ..training_state import saved_seconds
from .folds import learned_alike, stored_form
from .learned_embedders import LearnedTraining

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitPaths:
    model: Path  # the finished fit
    state: Path  # its training state while it trains

    @classmethod
    def of(cls, keep: Path, candidate: str, fold_checkpoint: Path) -> FitPaths:
        stem = keep / f"{candidate}-{fold_checkpoint.stem}"
        return cls(stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".partial"))

    def seconds_spent(self) -> float:
        """Training time already spent by an interrupted fit, as its saved state records it."""
        return saved_seconds(self.state)


def load_fit(
    paths: FitPaths, fold: NeuroAuthModel, candidate: str, training: LearnedTraining
) -> tuple[NeuroAuthModel, dict, float] | None:
    """The kept fit of ``candidate`` on ``fold``'s checkpoint with ``training``, its record and
    fitting seconds; None when there is none, or it was made otherwise."""
    if not paths.model.is_file():
        return None
    model = load_checkpoint(paths.model)
    kept = model.meta.get("study_fit", {})
    if (
        kept.get("candidate") != candidate
        or kept.get("fold_checkpoint") != fold.identity()
        or not learned_alike(kept.get("learned_training"), training)
    ):
        log.info("%s was fitted otherwise: fitting %s again", paths.model, candidate)
        return None
    log.info("reusing %s (%s fitted on the same fold with the same settings)", paths.model, candidate)
    return model, kept["record"], float(kept["seconds"])


def keep_fit(
    paths: FitPaths,
    model: NeuroAuthModel,
    fold: NeuroAuthModel,
    candidate: str,
    training: LearnedTraining,
    record: dict,
    seconds: float,
) -> None:
    """Write the fit ``model`` (atomically), then remove its training state."""
    kept = {
        "candidate": candidate,
        "fold_checkpoint": fold.identity(),
        "learned_training": stored_form(training),
        "record": record,
        "seconds": seconds,
    }
    save_checkpoint(dataclasses.replace(model, meta=model.meta | {"study_fit": kept}), paths.model)
    paths.state.unlink(missing_ok=True)
    remove_stale_temporaries(paths.state)  # of a save of the state that a killed run left half-written
