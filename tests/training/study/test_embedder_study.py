from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np
import torch
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.study.report import embedder_table


class _Subject:
    def __init__(self, name):
        self.subject = name


@dataclass
class _Model:
    montage: tuple = ("T7", "F8", "Cz", "P4")
    spec: SignalSpec = field(default_factory=SignalSpec)
    embedder: torch.nn.Module = field(default_factory=lambda: torch.nn.Linear(2, 2))
    meta: dict = field(
        default_factory=lambda: {
            "embedder_selection": {"chosen": {}},
            "seconds": {"total": 10.0, "denoiser": 8.0},
        }
    )
    cohort: object = None


def _metrics(eer):
    return {
        "window_eer": eer,
        "auroc": 0.9,
        "p_at_1": 0.8,
        "eer_at": {"5": eer, "10": eer, "30": eer},
        "seen_in_training": [],
        "baseline_psd": {"window_eer": 0.3, "auroc": 0.8, "p_at_1": 0.6, "eer_at": {"10": 0.3}},
    }


def test_every_candidate_is_fitted_without_the_subjects_it_is_evaluated_on(monkeypatch):
    import neuroauth.training.study.embedder_study as es

    log = []
    eers = {"spectral": 0.1, "spectral-metric": 0.2}
    clock = [0.0]  # seconds: the fold's shared preparation takes 1000, a fit 3

    def fake_fit(name, model, inputs, *args):  # the spectral one comes with the fold's checkpoint
        log.append(("fit", name, set(inputs.subjects if inputs else model.meta["training_subjects"])))
        clock[0] += 3.0
        return replace(model, embedder=torch.nn.Linear(2, 3)), {"name": name}

    def fake_inputs(model, fit, *args):  # what the real one denoises and featurises: the fit subjects'
        clock[0] += 1000.0
        return SimpleNamespace(subjects=[d.subject for d in fit])

    def fake_evaluate(model, data, progress, **kwargs):
        name = log[-1][1]
        log.append(("eval", name, {d.subject for d in data}))
        return _metrics(eers[name]), None

    def fake_train(fit, *args, **kwargs):
        model = _Model()
        model.meta["training_subjects"] = [d.subject for d in fit]
        return model

    monkeypatch.setattr(es, "train", fake_train)
    monkeypatch.setattr(es, "_fit", fake_fit)
    monkeypatch.setattr(es, "_fold_inputs", fake_inputs)
    monkeypatch.setattr(es, "evaluate", fake_evaluate)
    monkeypatch.setattr(es, "embed_cost_ms", lambda *a: {"single": 1.0, "batch_64": 0.1})
    monkeypatch.setattr(es, "time", SimpleNamespace(time=lambda: clock[0]))
    data = [_Subject(f"S{i}") for i in range(10)]
    result = es.study(
        data,
        es.TrainOptions(),
        2,
        ["spectral", "spectral-metric"],
        progress=False,
    )
    pairs = list(zip(log[::2], log[1::2], strict=True))
    assert len(pairs) == 4  # two candidates on each of two folds
    for (_, fitted_name, fitted), (_, evaluated_name, evaluated) in pairs:
        assert fitted_name == evaluated_name
        assert not fitted & evaluated and fitted | evaluated == {d.subject for d in data}
    assert result["candidates"]["spectral"]["folds"][0]["fit_seconds"] == 2.0  # checkpoint minus denoiser
    for report in result["candidates"]["spectral-metric"]["folds"]:
        assert report["fit_seconds"] == 3.0  # the fit alone, not the fold's shared preparation
    table = embedder_table([result])
    assert "| 4 ch | spectral | 0.100 ± 0.000 |" in table
    assert "| 4 ch | spectral-metric | 0.200 ± 0.000 |" in table
    assert "| 4 ch | PSD baseline | 0.300 ± 0.000 |" in table


def test_each_fit_is_kept_and_a_rerun_reuses_it_or_continues_its_training(
    monkeypatch, tmp_path, tiny_checkpoint
):
    import neuroauth.training.study.embedder_study as es
    from neuroauth.models.checkpoint import load_checkpoint
    from neuroauth.models.embedders.temporal import TemporalConfig, TemporalEmbedder
    from neuroauth.training.study.learned_embedders import LearnedTraining
    from neuroauth.training.study.metric_learning import MetricTraining
    from neuroauth.training.training_state import save_state

    candidate = "temporal-multisimilarity"
    fits = []

    def fake_fit(name, model, inputs, training, progress, state_path=None):
        fits.append(state_path)
        assert state_path is not None and state_path.exists()  # the interrupted run's state, given on
        torch.manual_seed(len(fits))
        embedder = TemporalEmbedder(TemporalConfig(n_channels=4)).eval()
        return replace(model, embedder=embedder, cohort=None), {"fit_number": len(fits)}

    def fake_evaluate(model, data, progress, **kwargs):  # a figure that tells the fits apart
        return _metrics(float(sum(p.detach().sum() for p in model.embedder.parameters()))), None

    model = load_checkpoint(tiny_checkpoint)
    monkeypatch.setattr(es, "train", lambda *a, **k: model)
    monkeypatch.setattr(es, "_fit", fake_fit)
    monkeypatch.setattr(es, "_fold_inputs", lambda *a: None)
    monkeypatch.setattr(es, "evaluate", fake_evaluate)
    monkeypatch.setattr(es, "embed_cost_ms", lambda *a: {"single": 1.0, "batch_64": 0.1})
    data = [_Subject(f"S{i}") for i in range(4)]
    training = LearnedTraining(metric=MetricTraining(steps=5))
    options = es.TrainOptions(learned=training)
    states = [tmp_path / f"{candidate}-mamba-fold{k}.partial" for k in (1, 2)]
    for state in states:  # as a run stopped while fitting leaves them
        save_state(state, "fingerprint", {"seconds": 100.0})

    first = es.study(data, options, 2, [candidate], keep=tmp_path, progress=False)
    assert fits == states
    assert not any(state.exists() for state in states)  # kept as fits, their states removed
    reports = first["candidates"][candidate]["folds"]
    assert [r["fit"]["fit_number"] for r in reports] == [1, 2]
    assert reports[0]["window_eer"] != reports[1]["window_eer"]  # the evaluation tells the fits apart
    assert all(r["fit_seconds"] >= 100.0 for r in reports)  # the time spent before the interruption too
    for k in (1, 2):
        kept = load_checkpoint(tmp_path / f"{candidate}-mamba-fold{k}.pt")
        assert kept.meta["study_fit"]["fold_checkpoint"] == model.identity()

    def no_fit(*args, **kwargs):
        raise AssertionError("a kept fit was fitted again")

    monkeypatch.setattr(es, "_fit", no_fit)
    again = es.study(data, options, 2, [candidate], keep=tmp_path, progress=False)
    assert again["candidates"][candidate]["folds"] == reports

    monkeypatch.setattr(es, "_fit", fake_fit)
    for state in states:
        save_state(state, "fingerprint", {"seconds": 0.0})
    other = es.TrainOptions(learned=replace(training, metric=MetricTraining(steps=6)))
    es.study(data, other, 2, [candidate], keep=tmp_path, progress=False)
    assert len(fits) == 4  # other settings: fitted again


def test_an_int8_resnet_is_measured_on_the_held_out_subjects(tiny_checkpoint, bundled_4ch):
    from neuroauth.models.checkpoint import load_checkpoint
    from neuroauth.models.embedders.resnet import ResNetConfig, ResNetEmbedder
    from neuroauth.training.study.embedder_study import _fold_inputs, _int8_report
    from neuroauth.training.study.learned_embedders import LearnedTraining

    torch.manual_seed(0)
    embedder = ResNetEmbedder(ResNetConfig(n_channels=4, dim=16)).eval()
    model = load_checkpoint(tiny_checkpoint)
    inputs = _fold_inputs(model, bundled_4ch[:2], ["resnet18-arcface"], LearnedTraining())
    assert inputs.subjects == [d.subject for d in bundled_4ch[:2]]
    assert inputs.raw is None and inputs.noisy is None  # kept only for the candidates that need them
    report = _int8_report(replace(model, embedder=embedder), model, inputs, bundled_4ch[2:], 0.5)
    assert 0.0 <= report["window_eer"] <= 1.0
    assert report["eer_change"] == report["window_eer"] - 0.5
    assert report["stored_bytes"] < report["float_stored_bytes"] / 3


def test_a_joint_candidate_is_evaluated_with_its_own_denoiser(tiny_checkpoint, bundled_4ch):
    from neuroauth.models.checkpoint import load_checkpoint
    from neuroauth.training.evaluate import with_noise
    from neuroauth.training.protocol import denoise
    from neuroauth.training.study.embedder_study import _fit, _fold_inputs, _int8_report
    from neuroauth.training.study.learned_embedders import LearnedTraining
    from neuroauth.training.study.metric_learning import MetricTraining

    model = load_checkpoint(tiny_checkpoint)
    before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    metric = MetricTraining(steps=2, per_batch=2, per_subject=2)
    training = LearnedTraining(metric=metric, fusion_noise=("emg", "pop"))
    candidates = ["temporal-joint-multisimilarity", "temporal-arcface+spectral"]
    inputs = _fold_inputs(model, bundled_4ch[:2], candidates, training)
    assert len(inputs.raw) == 2 and [sorted(n) for n in inputs.noisy] == [["emg", "pop"]] * 2
    for d, noisy, (_, probe) in zip(bundled_4ch[:2], inputs.noisy, inputs.recordings, strict=True):
        assert noisy["emg"].shape == probe.shape and not np.allclose(noisy["emg"], probe)
        pop = denoise(model, with_noise(d.probe, "pop", d.subject, 0, 1))
        np.testing.assert_array_equal(noisy["pop"], pop)  # the fit subjects'
    variant, record = _fit("temporal-joint-multisimilarity", model, inputs, training, False)
    assert variant.embedder_name == "temporal" and variant.denoiser is not model.denoiser
    assert any(not torch.equal(v, before[k]) for k, v in variant.denoiser.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in model.denoiser.state_dict().items())
    assert record["joint"]["denoise_weight"] == training.joint.denoise_weight
    report = _int8_report(variant, model, inputs, bundled_4ch[2:], 0.5)
    assert 0.0 <= report["window_eer"] <= 1.0


def test_the_fusion_table_shows_each_folds_choice_beside_the_spectral_part_alone():
    from neuroauth.training.study.report import fusion_condition_table, fusion_table

    grid = [
        {"fuse": 0.5, "eer_mean": 0.10, "eer_std": 0.01},
        {"fuse": 0.75, "eer_mean": 0.08, "eer_std": 0.02},
        {"fuse": 1.0, "eer_mean": 0.09, "eer_std": 0.01},
    ]
    fused = {"window_eer": 0.07, "fit": {"grid": grid, "chosen": grid[1]}}
    spectral = {"window_eer": 0.09, "fit": {"chosen": {"features": ["psd"]}}}
    study = {
        "montage": ["T7", "F8", "Cz", "P4"],
        "candidates": {"spectral": {"folds": [spectral]}, "temporal-ssl+spectral": {"folds": [fused]}},
    }
    rows = fusion_table([study]).splitlines()
    assert rows[2:] == [
        "| 4 ch | temporal-ssl+spectral | 1 | 0.75 | 0.080 ± 0.020 | 0.080 (0.75) | 0.090 | 0.070 |"
    ]
    assert fusion_condition_table([study]) == ""  # chosen on clean probes only
    noisy = [
        {"fuse": 0.75, "eer_mean": 0.30, "eer_std": 0.0},
        {"fuse": 1.0, "eer_mean": 0.35, "eer_std": 0.0},
    ]
    fused["fit"]["conditions"] = {"clean": grid, "emg": noisy}
    study["fusion_noise"] = ["emg"]
    label = "temporal-ssl+spectral (weight chosen clean and under emg)"
    assert fusion_condition_table([study]).splitlines()[2:] == [
        f"| 4 ch | {label} | 1 | clean | 0.080 (0.75) | 0.080 (0.75) | 0.090 |",
        f"| 4 ch | {label} | 1 | emg | 0.300 (0.75) | 0.300 (0.75) | 0.350 |",
    ]
    del study["candidates"]["temporal-ssl+spectral"]
    assert fusion_table([study]) == "" and fusion_condition_table([study]) == ""  # no fused candidate


def test_the_int8_and_joint_tables_show_only_the_candidates_measured_so():
    from neuroauth.training.study.report import int8_table, joint_table

    def fold(eer, int8_eer=None, gain=None):
        report = {"window_eer": eer, "embed_ms_per_window": {"single": 1.0, "batch_64": 0.5}, "fit": {}}
        if int8_eer is not None:
            report["int8"] = {
                "eer_change": int8_eer - eer,
                "stored_bytes": 25,
                "float_stored_bytes": 100,
                "embed_ms_per_window": {"single": 0.5, "batch_64": 0.25},
            }
        if gain is not None:
            report["fit"]["si_snr_gain_db"] = {"before": gain[0], "after": gain[1]}
        return report

    study = {
        "montage": ["T7", "F8", "Cz", "P4"],
        "candidates": {
            "spectral": {"folds": [fold(0.1), fold(0.2)]},
            "temporal-joint-arcface": {
                "folds": [fold(0.25, 0.25, (3.0, 2.5)), fold(0.3, 0.2975, (3.5, 1.0))]
            },
        },
    }
    assert int8_table([study]).splitlines()[2:] == [
        "| 4 ch | temporal-joint-arcface | +0.0000 / -0.0025 | 100 -> 25 | 1.00 -> 0.50 | 0.500 -> 0.250 |"
    ]
    assert joint_table([study]).splitlines()[2:] == [
        "| 4 ch | temporal-joint-arcface | 1 | 3.00 -> 2.50 | 0.250 |",
        "| 4 ch | temporal-joint-arcface | 2 | 3.50 -> 1.00 | 0.300 |",
    ]
    study["joint_training"] = {"denoiser_lr_scale": 0.0, "denoise_weight": 0.05}  # as the study records
    assert (
        joint_table([study])
        .splitlines()[2]
        .startswith("| 4 ch | temporal-joint-arcface (denoiser rate 0.0, weight 0.05) | 1 |")
    )
    del study["candidates"]["temporal-joint-arcface"]
    assert int8_table([study]) == "" and joint_table([study]) == ""
