from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from neuroauth.models.denoiser import CausalDenoiser, DenoiserConfig, si_snr
from neuroauth.models.embedders.temporal import TemporalConfig, TemporalEmbedder
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.study.joint import DenoisedEmbedder, JointTraining, NoisyWindowSampler, fit_joint
from neuroauth.training.study.learned_embedders import (
    LearnedTraining,
    check_embedder,
    fit_embedder,
    fit_with_denoiser,
    trains_denoiser,
)
from neuroauth.training.study.metric_learning import MetricTraining

SPEC = SignalSpec(window=200)
SMALL_DENOISER = DenoiserConfig(residual_channels=4, skip_channels=4, n_blocks=1, use_mamba=False)
SMALL_EMBEDDER = TemporalConfig(
    n_channels=2, window=200, filters=4, kernel=16, separable=8, separable_kernel=8, dim=8
)


def rhythms(seconds: float = 30.0, seed: int = 0) -> list[list[np.ndarray]]:
    """Four "people", each with two recordings of their own rhythm buried in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SPEC.sfreq)) / SPEC.sfreq
    return [
        [(np.sin(2 * np.pi * f * t) + rng.standard_normal((2, len(t)))).astype(np.float32) for _ in range(2)]
        for f in (6, 10, 17, 25)
    ]


def test_pairs_are_crops_of_the_subjects_recording_and_only_the_input_is_noisy():
    # subject k's recording holds the constant k + 1: a crop says whose it is
    recordings = [[np.full((2, 1000), k + 1.0)] for k in range(3)]
    quiet = NoisyWindowSampler(recordings, SPEC, JointTraining(noisy_fraction=0.0, warmup=40))
    pairs = quiet(np.array([0, 1, 2, 2]), np.random.default_rng(0))
    assert pairs.shape == (4, 2, 2, 240)
    assert torch.equal(pairs[:, 0], pairs[:, 1])
    level = pairs[:, 1].mean(dim=(1, 2)) / torch.tensor([1.0, 2.0, 3.0, 3.0])
    assert ((level > 0.89) & (level < 1.11)).all()  # the subject's level times a gain in [0.9, 1.1]

    noisy = NoisyWindowSampler(recordings, SPEC, JointTraining(noisy_fraction=1.0, warmup=40))
    pairs = noisy(np.array([0, 1, 2]), np.random.default_rng(0))
    assert not torch.isclose(pairs[:, 0], pairs[:, 1]).all(dim=(1, 2)).any()
    with pytest.raises(ValueError, match="at least 960 samples"):
        NoisyWindowSampler([[np.zeros((2, 900))]], SignalSpec(), JointTraining())


def test_the_metric_loss_reaches_the_denoiser_and_the_denoising_loss_is_its_stage_one_loss():
    torch.manual_seed(0)
    denoiser = CausalDenoiser(SMALL_DENOISER)
    net = DenoisedEmbedder(denoiser, TemporalEmbedder(SMALL_EMBEDDER), warmup=40)
    pairs = NoisyWindowSampler(rhythms(5.0), SPEC, JointTraining(noisy_fraction=1.0, warmup=40))(
        np.array([0, 1, 2, 3]), np.random.default_rng(0)
    )
    net(pairs).sum().backward()  # the embeddings alone, no denoising term
    assert denoiser.head[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = denoiser(pairs[:, 0])[..., 40:]
    expected = -si_snr(out, pairs[:, 1, ..., 40:]).clamp(max=30.0).mean()
    assert torch.isclose(net.denoising_loss, expected)


def test_joint_training_separates_people_and_moves_the_denoiser_only_when_allowed():
    recordings = rhythms()
    torch.manual_seed(0)
    stage1 = CausalDenoiser(SMALL_DENOISER)
    original = {k: v.clone() for k, v in stage1.state_dict().items()}
    metric = MetricTraining(steps=60, per_batch=4, per_subject=4, lr=3e-3)

    def separation(denoiser, embedder):
        with torch.no_grad():
            emb = []
            for rs in recordings:
                x = torch.as_tensor(np.stack([rs[1][:, s : s + 200] for s in range(1000, 5800, 400)]))
                emb.append(embedder(denoiser(x)))
        within = np.mean([float((e @ e.T).mean()) for e in emb])
        between = np.mean([float((a @ b.T).mean()) for i, a in enumerate(emb) for b in emb[i + 1 :]])
        return within - between

    torch.manual_seed(0)
    before = separation(stage1, TemporalEmbedder(SMALL_EMBEDDER).eval())
    joint = JointTraining(warmup=40)
    tuned, embedder, record = fit_joint(stage1, recordings, SMALL_EMBEDDER, SPEC, metric, joint, False)
    after = separation(tuned, embedder)
    assert after > before + 0.3, (before, after)
    assert all(torch.equal(v, original[k]) for k, v in stage1.state_dict().items())  # left untouched
    assert any(not torch.equal(v, original[k]) for k, v in tuned.state_dict().items())
    assert set(record["si_snr_gain_db"]) == {"before", "after"}
    assert len(record["loss_curve"][0]) == 3  # step, metric loss, weighted denoising loss

    frozen = JointTraining(warmup=40, denoiser_lr_scale=0.0)
    metric = MetricTraining(steps=3, per_batch=4, per_subject=4)
    tuned, _, _ = fit_joint(stage1, recordings, SMALL_EMBEDDER, SPEC, metric, frozen, False)
    assert all(torch.equal(v, original[k]) for k, v in tuned.state_dict().items())
    assert all(p.grad is None for p in tuned.parameters())  # no backward pass through a fixed denoiser


def test_joint_names_go_to_the_fit_that_trains_the_denoiser():
    assert trains_denoiser("temporal-joint-arcface") and not trains_denoiser("temporal-arcface")
    assert not trains_denoiser("spectral")
    for bad in ("temporal-joint", "temporal-joint-arcface+spectral", "temporal-ssl-joint-arcface"):
        with pytest.raises(ValueError, match=re.escape(f"unknown embedder '{bad}'")):
            check_embedder(bad)
    with pytest.raises(ValueError, match="fit it with fit_with_denoiser"):
        fit_embedder("temporal-joint-arcface", None, [], [], None, SPEC, LearnedTraining(), False)
    with pytest.raises(ValueError, match="fit it with fit_embedder"):
        fit_with_denoiser("temporal-arcface", None, [], SPEC, LearnedTraining(), False)
    with pytest.raises(ValueError, match="noisy_fraction"):
        JointTraining(noisy_fraction=1.5)


def test_the_command_line_sets_the_joint_training():
    from neuroauth.training.commands import options_from
    from neuroauth.training.study.commands import learned_settings

    from neuroauth.cli import build_parser

    joint = ["--joint-weight", "0.1", "--joint-denoiser-rate", "0"]
    args = build_parser().parse_args(
        ["train", "--data", "d", "--out", "o.pt", "--embedder", "temporal-joint-arcface", *joint]
    )
    options = options_from(args)
    assert options.embedder == "temporal-joint-arcface"
    assert options.learned.joint == JointTraining(denoise_weight=0.1, denoiser_lr_scale=0.0)
    assert options.learned.resnet.steps == options.learned.metric.steps == 300
    defaults = options_from(build_parser().parse_args(["train", "--data", "d", "--out", "o.pt"]))
    assert defaults.embedder == "spectral" and defaults.learned is None  # the shipped trainer needs none
    study = ["embedders", "--data", "d", "--json", "o.json", "--resnet-steps", "7", "--metric-steps", "9"]
    learned = learned_settings(build_parser().parse_args([*study, *joint]))
    assert (learned.resnet.steps, learned.metric.steps) == (7, 9)
    assert learned.joint == JointTraining(denoise_weight=0.1, denoiser_lr_scale=0.0)
