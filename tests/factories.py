"""Small valid objects for tests that need one quickly: no calibration, no model run."""

from __future__ import annotations

import numpy as np
from neuroauth.enroll.decision import DecisionParams
from neuroauth.enroll.ocsvm import fit_ocsvm
from neuroauth.enroll.scoring import FusionStats
from neuroauth.enroll.template import Template, Threshold


def make_template(user: str = "alice", identity: str = "ckpt-a", dim: int = 8, seed: int = 0) -> Template:
    """A valid template for ``user`` made with checkpoint ``identity``, from random unit windows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroid = x.mean(axis=0) / np.linalg.norm(x.mean(axis=0))
    return Template(
        user=user,
        checkpoint_identity=identity,
        embedder="spectral",
        dim=dim,
        states=("rest",),
        centroids=centroid[None, :],
        svm=fit_ocsvm(x, nu=0.1, gamma=1.5),
        fusion=FusionStats(cosine_mean=0.1, cosine_std=0.2, svm_mean=-0.3, svm_std=0.4),
        threshold=Threshold(policy="target-far", value=1.25, target_far=0.01, far=0.0098, frr=0.12),
        decision=DecisionParams(
            unlock_level=6.0,
            lock_level=-3.0,
            bound=12.0,
            llr_clip=3.0,
            gap_seconds=3.0,
            owner_mean=2.5,
            owner_std=1.1,
            impostor_mean=0.0,
            impostor_std=0.9,
        ),
        created="2024-05-01T12:00:00+00:00",
        n_windows=40,
        calibration={"note": "hand-made", "nested": {"values": [1, 2.5, None]}, "meets_targets": False},
        windows=(x,),
    )


def make_model(seed: int = 0):
    """A small untrained model with the default montage, signal spec, a cohort and calibration
    sequences: a checkpoint of it saves and loads in milliseconds (``neuroauth train`` takes minutes)."""
    import torch
    from neuroauth.models.checkpoint import NeuroAuthModel
    from neuroauth.models.cohort import Cohort, ScoreSequences
    from neuroauth.models.denoiser import CausalDenoiser, DenoiserConfig
    from neuroauth.models.embedders.spectral import SpectralConfig, SpectralEmbedder
    from neuroauth.models.montage import DEFAULT_MONTAGE
    from neuroauth.models.preprocess import SignalSpec

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    montage = tuple(DEFAULT_MONTAGE)
    denoiser = CausalDenoiser(
        DenoiserConfig(
            residual_channels=4, skip_channels=4, n_blocks=1, dilations=(1, 2), d_state=2, d_conv=2
        )
    )
    embedder = SpectralEmbedder(SpectralConfig(n_channels=len(montage), pca_dim=8))
    embeddings = rng.standard_normal((12, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    subjects = ("S01", "S02", "S03")
    cohort = Cohort(
        embeddings=embeddings.astype(np.float32),
        subject=np.repeat(np.arange(3), 4),
        recording=np.tile([0, 0, 1, 1], 3),
        subjects=subjects,
        hop_seconds=4.0,
    )
    calibration = ScoreSequences.from_lists(
        [rng.standard_normal(5)], [rng.standard_normal(6)], {"people": 2}, ["site-a"], ["site-a"]
    )
    return NeuroAuthModel(
        montage=montage,
        spec=SignalSpec(),
        denoiser=denoiser,
        embedder=embedder,
        meta={"training_subjects": list(subjects)},
        cohort=cohort,
        calibration=calibration,
    ).eval()
