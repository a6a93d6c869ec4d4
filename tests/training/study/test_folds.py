from __future__ import annotations

import pytest
from neuroauth.training.study.folds import aggregate, subject_folds


def test_folds_are_disjoint_and_cover_every_subject():
    subjects = [f"S{i:02d}" for i in range(22)]
    folds = subject_folds(subjects, 2, seed=0)
    assert sorted(folds[0] + folds[1]) == subjects
    assert not set(folds[0]) & set(folds[1])
    assert [len(f) for f in folds] == [11, 11]
    with pytest.raises(ValueError, match="folds"):
        subject_folds(subjects, 12, seed=0)


def test_aggregate_takes_mean_and_spread_of_numbers_only():
    reports = [
        {"window_eer": 0.1, "eer_at": {"5": 0.05}, "subjects": ["a"], "n_genuine": 3},
        {"window_eer": 0.3, "eer_at": {"5": None}, "subjects": ["b"], "n_genuine": 5},
    ]
    summary = aggregate(reports)
    assert summary["window_eer"] == pytest.approx({"mean": 0.2, "std": 0.1})
    assert summary["eer_at"]["5"] == pytest.approx({"mean": 0.05, "std": 0.0})
    assert "subjects" not in summary and "n_genuine" not in summary


def test_a_kept_fold_checkpoint_is_reused_only_when_trained_alike(tiny_checkpoint, bundled_4ch):
    import dataclasses

    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
    from neuroauth.training.study.folds import _kept
    from neuroauth.training.train import TrainOptions

    options = TrainOptions(  # as tests/conftest.py trains the tiny checkpoint
        stage1=DenoiserTraining(steps=6, batch=8, val_every=3, val_examples=16),
        search=SpectralSearch(pca_dims=(8, 16), shrinkages=(0.5,), splits=2),
        val_subjects=1,
    )
    assert _kept(tiny_checkpoint, bundled_4ch, options) is not None
    assert _kept(tiny_checkpoint, bundled_4ch[1:], options) is None  # other subjects
    assert _kept(tiny_checkpoint, bundled_4ch, dataclasses.replace(options, seed=1)) is None
    other_steps = dataclasses.replace(options, stage1=dataclasses.replace(options.stage1, steps=7))
    assert _kept(tiny_checkpoint, bundled_4ch, other_steps) is None
    assert _kept(tiny_checkpoint.with_name("absent.pt"), bundled_4ch, options) is None


def test_a_kept_learned_checkpoint_is_reused_only_when_its_embedder_was_trained_alike(
    tiny_checkpoint, bundled_4ch, tmp_path
):
    import dataclasses

    from neuroauth.models.checkpoint import load_checkpoint, save_checkpoint
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
    from neuroauth.training.study.folds import _kept
    from neuroauth.training.study.joint import JointTraining
    from neuroauth.training.study.learned_embedders import LearnedTraining
    from neuroauth.training.train import TrainOptions

    options = TrainOptions(
        stage1=DenoiserTraining(steps=6, batch=8, val_every=3, val_examples=16),
        search=SpectralSearch(pca_dims=(8, 16), shrinkages=(0.5,), splits=2),
        val_subjects=1,
        embedder="temporal-joint-arcface",
    )
    model = load_checkpoint(tiny_checkpoint)  # as if trained with these options
    model.meta["embedder_choice"] = options.embedder
    options = dataclasses.replace(options, learned=LearnedTraining())
    model.meta["learned_training"] = dataclasses.asdict(options.learned)
    model.meta["embedder_selection"] = {"learned": {}}  # no spectral search for this embedder
    path = tmp_path / "learned.pt"
    save_checkpoint(model, path)
    assert _kept(path, bundled_4ch, options) is not None
    del model.meta["learned_training"]["fusion_noise"]  # written before that setting existed
    save_checkpoint(model, path)
    assert _kept(path, bundled_4ch, options) is not None
    noisy = dataclasses.replace(options, learned=LearnedTraining(fusion_noise=("emg",)))
    assert _kept(path, bundled_4ch, noisy) is None
    other = dataclasses.replace(options, learned=LearnedTraining(joint=JointTraining(denoise_weight=0.0)))
    assert _kept(path, bundled_4ch, other) is None
