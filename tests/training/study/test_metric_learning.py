from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from neuroauth.training.study.embedder_study import check_candidates
from neuroauth.training.study.metric_learning import (
    FeatureSampler,
    MetricTraining,
    RawWindowSampler,
    train_metric,
)
from torch import nn


def _blobs(noise_seed, n_classes=6, per_class=40, dim=12):
    """Classes that differ only along a few directions, buried in larger shared noise."""
    centres = np.zeros((n_classes, dim))
    centres[:, :3] = np.random.default_rng(0).standard_normal((n_classes, 3)) * 3.0
    rng = np.random.default_rng(noise_seed)
    noise_scale = np.r_[np.full(3, 0.3), np.full(dim - 3, 3.0)]
    return [c + rng.standard_normal((per_class, dim)) * noise_scale for c in centres]


def _nearest_centre_accuracy(net, features):
    with torch.no_grad():
        emb = [nn.functional.normalize(net(torch.as_tensor(f, dtype=torch.float32)), dim=1) for f in features]
    centres = nn.functional.normalize(torch.stack([e.mean(0) for e in emb]), dim=1)
    right = sum(int((e @ centres.T).argmax(1).eq(i).sum()) for i, e in enumerate(emb))
    return right / sum(len(e) for e in emb)


@pytest.mark.parametrize("loss", ["arcface", "multisimilarity"])
def test_metric_learning_finds_the_directions_that_tell_classes_apart(loss):
    train, held = _blobs(noise_seed=1), _blobs(noise_seed=2)  # the same classes, other examples
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 8))
    before = _nearest_centre_accuracy(net, held)
    record = train_metric(
        net,
        FeatureSampler(train, jitter=0.05),
        len(train),
        8,
        MetricTraining(loss=loss, steps=300, lr=3e-3),
        False,
    )
    after = _nearest_centre_accuracy(net, held)
    assert after > 0.8 and after > before + 0.2, (before, after)
    assert record["loss_curve"][-1][1] < record["loss_curve"][0][1]


def test_raw_windows_are_crops_of_the_subjects_own_recordings():
    recordings = [[np.full((2, 1000), float(s))] for s in range(3)]
    sampler = RawWindowSampler(recordings, 800, amplitude=(1.0, 1.0), jitter=0.0)
    batch = sampler(np.array([0, 2, 2]), np.random.default_rng(0))
    assert batch.shape == (3, 2, 800)
    assert torch.equal(batch[:, 0, 0], torch.tensor([0.0, 2.0, 2.0]))
    with pytest.raises(ValueError, match="at least 800 samples"):
        RawWindowSampler([[np.zeros((2, 500))]], 800)


def test_bad_settings_and_candidates_are_named():
    with pytest.raises(ValueError, match="loss 'triplet'"):
        MetricTraining(loss="triplet")
    with pytest.raises(ValueError, match="unknown embedder 'resnet50-arcface'"):
        check_candidates(["spectral", "resnet50-arcface"])
    assert check_candidates(["resnet34-multisimilarity"]) == ["resnet34-multisimilarity"]
    good = ["temporal-ssl", "temporal-arcface", "temporal-ssl-multisimilarity+spectral"]
    good.append("resnet18-arcface+spectral")
    assert check_candidates(good) == good
    for bad in ("temporal", "temporal+spectral", "spectral+spectral", "temporal-ssl-triplet"):
        with pytest.raises(ValueError, match=re.escape(f"unknown embedder '{bad}'; use spectral,")):
            check_candidates([bad])


def test_a_signal_embedder_is_not_fitted_without_the_signal():
    from neuroauth.training.study.learned_embedders import (
        LearnedTraining,
        fit_embedder,
        needs_signal,
        uses_spectral,
    )

    assert needs_signal("temporal-ssl+spectral") and not needs_signal("spectral-metric")
    assert all(uses_spectral(n) for n in ("spectral", "spectral-metric", "resnet18-arcface+spectral"))
    assert not any(uses_spectral(n) for n in ("resnet34-arcface", "temporal-ssl", "temporal-joint-arcface"))
    spectral = SimpleNamespace(config=SimpleNamespace(n_channels=4))
    with pytest.raises(ValueError, match="trained on the denoised recordings"):
        fit_embedder("temporal-ssl", spectral, [], None, None, None, LearnedTraining(), False)
    for name in ("spectral-metric", "temporal-ssl+spectral"):
        with pytest.raises(ValueError, match="built on the fitted spectral embedder; none was given"):
            fit_embedder(name, None, [], [], None, None, LearnedTraining(), False)


@pytest.mark.parametrize(
    ("embedder", "shipped"),
    [
        ("spectral-metric", "spectral-metric"),
        ("resnet18-multisimilarity", "resnet"),
        ("temporal-ssl-arcface+spectral", "fused"),
        ("temporal-joint-multisimilarity", "temporal"),
    ],
)
def test_train_ships_the_chosen_learned_embedder_with_a_cohort_of_its_own(
    embedder, shipped, bundled_4ch, tmp_path, monkeypatch
):
    from neuroauth.models.checkpoint import load_checkpoint
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
    from neuroauth.training.report import checkpoint_table, format_selection
    from neuroauth.training.study.contrastive import ContrastiveTraining
    from neuroauth.training.study.learned_embedders import LearnedTraining
    from neuroauth.training.train import TrainOptions, train

    options = TrainOptions(
        stage1=DenoiserTraining(steps=4, batch=4, val_every=2, val_examples=8),
        search=SpectralSearch(pca_dims=(8,), shrinkages=(0.5,), splits=1),
        val_subjects=1,
        embedder=embedder,
        learned=LearnedTraining(
            resnet=MetricTraining(steps=3, per_batch=4, per_subject=4),
            metric=MetricTraining(steps=3, per_batch=4, per_subject=4),
            contrastive=ContrastiveTraining(steps=2, batch=8),
            fusion_splits=1,
            fusion_noise=("gaussian",) if embedder.endswith("+spectral") else (),
        ),
    )
    if shipped == "fused":  # a weight strictly between the parts: fitted on three people, the
        # chosen weight could as well be 0 or 1, which ships one part alone
        monkeypatch.setattr("neuroauth.training.study.fusion.FUSE_WEIGHTS", (0.5,))
    out = tmp_path / "learned.pt"
    train(bundled_4ch, options, out, resume=False, progress=False)
    model = load_checkpoint(out)
    assert model.embedder_name == shipped
    assert model.meta["embedder_choice"] == embedder
    assert model.cohort.dim == model.embedder.dim
    learned = model.meta["embedder_selection"]["learned"]
    assert learned
    uses_spectral = shipped in ("spectral-metric", "fused")  # the others skip the spectral search
    assert ("chosen" in model.meta["embedder_selection"]) == uses_spectral
    assert (out.name in checkpoint_table([out])) == uses_spectral
    if embedder.endswith("+spectral"):  # its weight chosen on clean probes and under noise
        assert learned["noise"] == ["gaussian"] and set(learned["conditions"]) == {"clean", "gaussian"}
        assert "(mean window EER, clean and under gaussian " in "\n".join(format_selection(model.meta))
    if embedder.startswith("temporal-joint"):  # its denoiser is the fine-tuned one
        assert set(learned["si_snr_gain_db"]) == {"before", "after"}
    fusion = next((line for line in format_selection(model.meta) if "spectral weight" in line), None)
    if shipped in ("spectral-metric", "fused"):
        assert fusion.startswith(
            f"{embedder} by cross-validation: spectral weight {model.embedder.config.fuse}"
        )
    else:
        assert fusion is None


def test_train_saves_the_embedder_training_state_beside_its_output_until_the_checkpoint_is_written(
    bundled_4ch, tmp_path, monkeypatch
):
    import neuroauth.training.study.learned_embedders as le
    import neuroauth.training.train as tr
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.study.learned_embedders import LearnedTraining

    out = tmp_path / "learned.pt"
    state = out.with_name(out.name + ".embedder.partial")
    fit_embedder, states = le.fit_embedder, []

    def fit_and_look(*args):
        fitted = fit_embedder(*args)
        states.append((args[-1], args[-1].exists()))  # what train gave, and what the training left there
        return fitted

    monkeypatch.setattr(le, "fit_embedder", fit_and_look)
    options = tr.TrainOptions(
        stage1=DenoiserTraining(steps=2, batch=4, val_every=2, val_examples=8),
        val_subjects=1,
        embedder="temporal-multisimilarity",
        learned=LearnedTraining(metric=MetricTraining(steps=2, per_batch=4, per_subject=2)),
    )
    tr.train(bundled_4ch, options, out, progress=False)
    assert states == [(state, True)]  # a run stopped here would have continued from it
    assert out.exists() and not state.exists()  # once the checkpoint is written


def test_a_resnet_fit_repeats_exactly_with_its_seed():
    from neuroauth.training.study.learned_embedders import fit_resnet

    rng = np.random.default_rng(0)
    recordings = [[rng.standard_normal((2, 1200))] for _ in range(2)]
    training = MetricTraining(steps=2, per_batch=2, per_subject=2)
    torch.manual_seed(1)
    first, _ = fit_resnet(recordings, 2, 18, training, progress=False)
    torch.manual_seed(2)  # whatever ran before must not matter
    second, _ = fit_resnet(recordings, 2, 18, training, progress=False)
    x = torch.as_tensor(rng.standard_normal((3, 2, 800)), dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


class _InterruptedError(Exception):
    pass


def _stopping_after(sampler, calls):
    """``sampler``, until its ``calls``-th call, which raises as a killed run would stop."""
    count = 0

    def sample(subjects, rng):
        nonlocal count
        count += 1
        if count == calls:
            raise _InterruptedError
        return sampler(subjects, rng)

    return sample


def _dropout_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 8))


@pytest.mark.parametrize("loss", ["arcface", "multisimilarity"])
def test_an_interrupted_metric_training_continues_to_what_an_uninterrupted_one_gives(tmp_path, loss):
    sampler = FeatureSampler(_blobs(noise_seed=1), jitter=0.05)
    options = MetricTraining(loss=loss, steps=12, per_batch=3, per_subject=4)
    whole = _dropout_net()  # dropout draws from torch's generator: its state must be saved too
    expected = train_metric(whole, sampler, 6, 8, options, False)

    state = tmp_path / "metric.partial"
    net = _dropout_net()
    with pytest.raises(_InterruptedError):
        train_metric(net, _stopping_after(sampler, 8), 6, 8, options, False, state_path=state, save_seconds=0)
    assert state.exists()  # the 7 finished steps
    resumed = _dropout_net()  # a new process rebuilds the same starting point
    calls = []

    def counted(subjects, rng):
        calls.append(1)
        return sampler(subjects, rng)

    record = train_metric(resumed, counted, 6, 8, options, False, state_path=state, save_seconds=0)
    assert len(calls) == 5  # continued after the 7 saved steps, not started over
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert record["loss_curve"] == expected["loss_curve"]
    assert state.exists()  # removed by the caller once it has kept the result


def test_a_saved_metric_training_state_of_other_settings_is_refused(tmp_path):
    sampler = FeatureSampler(_blobs(noise_seed=1), jitter=0.05)
    state = tmp_path / "metric.partial"
    options = MetricTraining(steps=3, per_batch=3, per_subject=4)
    train_metric(_dropout_net(), sampler, 6, 8, options, False, state_path=state)
    saved = state.read_bytes()
    other = MetricTraining(steps=4, per_batch=3, per_subject=4)
    with pytest.raises(ValueError, match="other data, settings or starting weights; train with the same"):
        train_metric(_dropout_net(), sampler, 6, 8, other, False, state_path=state)
    with pytest.raises(ValueError, match="other data, settings or starting weights"):
        train_metric(nn.Linear(12, 8), sampler, 6, 8, options, False, state_path=state)
    with pytest.raises(ValueError, match="other data, settings or starting weights"):  # e.g. a joint weight
        train_metric(_dropout_net(), sampler, 6, 8, options, False, state_path=state, context={"weight": 2})
    assert state.read_bytes() == saved  # refused, not overwritten
    state.write_bytes(b"not a state")
    with pytest.raises(ValueError, match=f"the saved training state {state} cannot be read .*delete it"):
        train_metric(_dropout_net(), sampler, 6, 8, options, False, state_path=state)
