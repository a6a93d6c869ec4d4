from __future__ import annotations

import pytest
import torch
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.montage import DEFAULT_MONTAGE, MONTAGE_10_20

from neuroauth.cli import ASSETS, SHIPPED_CHECKPOINT


@pytest.mark.parametrize(
    ("name", "montage"), [("neuroauth-4ch.pt", DEFAULT_MONTAGE), ("neuroauth-19ch.pt", MONTAGE_10_20)]
)
def test_shipped_checkpoints_load_and_embed(name, montage):
    model = load_checkpoint(ASSETS / "checkpoints" / name)
    assert model.montage == montage
    assert model.embedder_name == "spectral"
    assert model.denoiser.config.use_mamba
    assert len(model.meta["training_subjects"]) == 22
    # the background cohort for enrolment: every window of the 22 training subjects
    assert model.cohort is not None and list(model.cohort.subjects) == model.meta["training_subjects"]
    assert model.cohort.dim == model.embedder.dim and len(model.cohort.embeddings) == 5122
    with torch.no_grad():
        out = model.embedder(model.denoiser(torch.randn(2, len(montage), model.spec.window)))
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-4)


def test_the_demo_uses_the_4_channel_checkpoint():
    assert SHIPPED_CHECKPOINT.name == "neuroauth-4ch.pt"
