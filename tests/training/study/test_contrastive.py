from __future__ import annotations

import numpy as np
import pytest
import torch
from neuroauth.training.study.contrastive import ContrastiveTraining, ViewPairs, nt_xent, pretrain_contrastive
from torch import nn


def test_the_two_views_are_crops_of_one_recording_at_most_shift_apart():
    # each recording counts its samples from 10000 x its index: a view's first value says where it was cut
    recordings = [np.tile(np.arange(3000.0) + 10000 * k, (2, 1)) for k in range(3)]
    training = ContrastiveTraining(batch=64, shift=50, gain=(1.0, 1.0), jitter=0.0)
    views = ViewPairs(recordings, 800, training)(np.random.default_rng(0)).double()
    assert views.shape == (2, 64, 2, 800)
    first, second = views[0, :, 0, 0], views[1, :, 0, 0]
    assert torch.equal(first // 10000, second // 10000)  # the same recording
    gap = (first - second).abs()
    assert gap.max() <= 100 and gap.max() > 50  # up to shift either way, so up to 2 x shift apart
    assert torch.equal(views[:, :, 0], views[:, :, 1])  # the views keep the channels together
    with pytest.raises(ValueError, match="at least 1000 samples"):
        ViewPairs([np.zeros((2, 900))], 800, ContrastiveTraining())


def test_nt_xent_is_low_only_when_each_view_finds_its_partner():
    z = torch.eye(8)[None].repeat(2, 1, 1)  # both views alike, every window apart
    matched = nt_xent(z, 0.1)
    swapped = nt_xent(torch.stack([z[0], z[1].roll(1, dims=0)]), 0.1)
    assert matched < 0.01 and swapped > 5.0


def test_pretraining_separates_recordings_it_never_saw_labels_for():
    rng = np.random.default_rng(0)
    t = np.arange(6000) / 200.0
    # four "people": each recording has its own rhythm, buried in shared noise
    recordings = [np.sin(2 * np.pi * f * t) + rng.standard_normal((2, 6000)) for f in (6, 10, 17, 25)]

    class Encoder(nn.Module):
        dim = 8

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 8, 33, padding=16)
            self.out = nn.Linear(8, 8)

        def forward(self, x):
            return nn.functional.normalize(self.out(self.conv(x).pow(2).mean(2).log()), dim=1)

    def separation(net):
        with torch.no_grad():
            emb = [
                net(torch.as_tensor(np.stack([r[:, s : s + 200] for s in range(0, 5800, 400)])))
                for r in recordings
            ]
        within = np.mean([float((e @ e.T).mean()) for e in emb])
        between = np.mean([float((a @ b.T).mean()) for i, a in enumerate(emb) for b in emb[i + 1 :]])
        return within - between

    torch.manual_seed(0)
    net = Encoder().float()
    recordings = [r.astype(np.float32) for r in recordings]
    before = separation(net)
    record = pretrain_contrastive(
        net, recordings, 200, ContrastiveTraining(steps=60, batch=32, shift=50), False
    )
    after = separation(net)
    assert after > before + 0.2, (before, after)
    assert record["loss_curve"][-1][1] < record["loss_curve"][0][1]
