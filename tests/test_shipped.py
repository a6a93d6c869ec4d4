from __future__ import annotations

import pytest
import torch
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.montage import DEFAULT_MONTAGE, MONTAGE_10_20

from neuroauth.paths import ASSETS, SHIPPED_CHECKPOINT


@pytest.mark.parametrize(
    ("name", "montage"), [("neuroauth-4ch.pt", DEFAULT_MONTAGE), ("neuroauth-19ch.pt", MONTAGE_10_20)]
)
def test_shipped_checkpoints_load_and_embed(name, montage):
    model = load_checkpoint(ASSETS / "checkpoints" / name)
    assert model.montage == montage
    assert model.embedder_name == "spectral"
    assert model.denoiser.config.use_mamba
    # every person of both shared corpora
    assert model.meta["corpora"] == ["eegmat", "mumtaz"] and len(model.meta["training_subjects"]) == 72
    # the background cohort for enrollment: windows 4 s apart of the 72 training people
    assert model.cohort is not None and list(model.cohort.subjects) == model.meta["training_subjects"]
    assert model.cohort.dim == model.embedder.dim and model.cohort.hop_seconds == 4.0
    # the decision over time is tuned on people the embedder never trained on (cross-fitted)
    sequences = model.calibration
    assert sequences is not None and sequences.record["folds"] == 4 and sequences.record["people"] == 72
    assert len(sequences.owner_sequences()) > 100 and len(sequences.impostor_sequences()) == 600
    with torch.no_grad():
        out = model.embedder(model.denoiser(torch.randn(2, len(montage), model.spec.window)))
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-4)


def test_the_demo_uses_the_4_channel_checkpoint():
    assert SHIPPED_CHECKPOINT.name == "neuroauth-4ch.pt"
