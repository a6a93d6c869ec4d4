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
    )
