from __future__ import annotations

import pytest
from neuroauth.training.crossval import aggregate, subject_folds
from neuroauth.training.report import clean_table


def test_folds_are_disjoint_and_cover_every_subject():
    subjects = [f"S{i:02d}" for i in range(22)]
    folds = subject_folds(subjects, 2, seed=0)
    assert sorted(folds[0] + folds[1]) == subjects
    assert not set(folds[0]) & set(folds[1])
    assert [len(f) for f in folds] == [11, 11]
    with pytest.raises(ValueError, match="folds"):
        subject_folds(subjects, 12, seed=0)


def test_crossval_never_trains_on_the_subjects_it_evaluates(monkeypatch):
    import neuroauth.training.crossval as cv

    class Subject:
        def __init__(self, name):
            self.subject = name

    seen = []

    class FakeModel:
        def __init__(self):
            self.meta = {"embedder_selection": {"chosen": {}}, "seconds": {"total": 1.0}}

    def fake_train(data, options, out, resume, progress):
        seen.append(("train", {d.subject for d in data}))
        return FakeModel()

    def fake_evaluate(model, data, progress):
        seen.append(("eval", {d.subject for d in data}))
        return {"window_eer": 0.1, "seen_in_training": []}, None

    monkeypatch.setattr(cv, "train", fake_train)
    monkeypatch.setattr(cv, "evaluate", fake_evaluate)
    data = [Subject(f"S{i}") for i in range(10)]
    cv.crossval(data, cv.TrainOptions(), folds=2, mamba=[True], progress=False)
    pairs = list(zip(seen[::2], seen[1::2], strict=True))
    assert len(pairs) == 2
    for (_, trained), (_, evaluated) in pairs:
        assert not trained & evaluated
        assert trained | evaluated == {d.subject for d in data}


def test_aggregate_takes_mean_and_spread_of_numbers_only():
    reports = [
        {"window_eer": 0.1, "eer_at": {"5": 0.05}, "subjects": ["a"], "n_genuine": 3},
        {"window_eer": 0.3, "eer_at": {"5": None}, "subjects": ["b"], "n_genuine": 5},
    ]
    summary = aggregate(reports)
    assert summary["window_eer"] == pytest.approx({"mean": 0.2, "std": 0.1})
    assert summary["eer_at"]["5"] == pytest.approx({"mean": 0.05, "std": 0.0})
    assert "subjects" not in summary and "n_genuine" not in summary


def test_report_table_lists_every_variant_and_the_baseline():
    stat = {"mean": 0.1, "std": 0.01}
    metrics = {k: stat for k in ("window_eer", "auroc", "p_at_1", "p_at_5")}
    metrics["eer_at"] = {"5": stat, "10": stat, "30": stat}
    summary = dict(metrics, baseline_psd=metrics)
    result = {
        "montage": ["T7", "F8", "Cz", "P4"],
        "variants": {"mamba": {"summary": summary}, "no_mamba": {"summary": summary}},
    }
    table = clean_table([result])
    assert "ours, with Mamba" in table and "ours, without Mamba" in table and "PSD baseline" in table
    assert "0.100 ± 0.010" in table


def test_a_kept_fold_checkpoint_is_reused_only_when_trained_alike(tiny_checkpoint, bundled_4ch):
    import dataclasses

    from neuroauth.training.crossval import _kept
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
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
    from neuroauth.training.crossval import _kept
    from neuroauth.training.denoiser_training import DenoiserTraining
    from neuroauth.training.embedder_training import SpectralSearch
    from neuroauth.training.joint import JointTraining
    from neuroauth.training.learned_embedders import LearnedTraining
    from neuroauth.training.train import TrainOptions

    options = TrainOptions(
        stage1=DenoiserTraining(steps=6, batch=8, val_every=3, val_examples=16),
        search=SpectralSearch(pca_dims=(8, 16), shrinkages=(0.5,), splits=2),
        val_subjects=1,
        embedder="temporal-joint-arcface",
    )
    model = load_checkpoint(tiny_checkpoint)  # as if trained with these options
    model.meta["embedder_choice"] = options.embedder
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


def test_the_selection_table_leaves_out_folds_without_a_spectral_search():
    from neuroauth.training.report import selection_table

    chosen = {"features": ["psd"], "pca_dim": None, "shrinkage": 0.5, "eer_mean": 0.1, "eer_std": 0.01}
    fold = {"window_eer": 0.2, "train_seconds": 10.0}
    folds = [fold | {"embedder_selection": chosen}, fold | {"embedder_selection": None}]
    result = {"montage": ["T7", "F8", "Cz", "P4"], "variants": {"no_mamba": {"folds": folds}}}
    assert selection_table([result]).splitlines()[2:] == [
        "| 4 ch | no mamba | 1 | psd | none | 0.5 | 0.100 ± 0.010 | 0.200 | 10 |"
    ]
    del folds[0]
    assert selection_table([result]) == ""  # no fold with a spectral search, no table
