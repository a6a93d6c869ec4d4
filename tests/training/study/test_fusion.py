from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from neuroauth.models.embedders.spectral import SpectralConfig, SpectralFeatures
from neuroauth.models.embedders.temporal import TemporalConfig, TemporalEmbedder
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.embedder_training import group_columns, window_features
from neuroauth.training.study.fusion import choose_weight, fit_fused, fit_spectral_part, half_splits

SPEC = SignalSpec()


class _DCReader(TemporalEmbedder):
    """Knows people by the offset of their first channel, which spectral features cannot see."""

    def forward(self, x):
        code = x[:, 0].mean(1).div(5.0).round().long().clamp(0, self.dim - 1)
        return F.one_hot(code, self.dim).float()


class _Guesser(TemporalEmbedder):
    """Knows nobody: a random direction for every window."""

    def forward(self, x):
        return F.normalize(torch.randn(len(x), self.dim), dim=1)


def _people(rhythmic: bool, n: int = 8):
    rng = np.random.default_rng(0)
    recordings = []
    for k in range(n):
        pair = []
        for seconds in (70, 30):
            x = rng.standard_normal((4, seconds * 200))
            t = np.arange(x.shape[1]) / 200.0
            if rhythmic:  # each person their own alpha peak
                x += 2.0 * np.sin(2 * np.pi * (7 + 1.5 * k) * t)
            else:  # the same noise for all, and an offset that only the DC reader sees
                x[0] += 5.0 * k
            pair.append(x)
        recordings.append(pair)
    config = SpectralConfig(n_channels=4, pca_dim=16, features=("psd", "bandpower"))
    extractor = SpectralFeatures(SpectralConfig(n_channels=4))
    windows = [window_features(f"S{k}", [e, p], extractor, SPEC) for k, (e, p) in enumerate(recordings)]
    spectral = fit_spectral_part(windows, group_columns(extractor, config.features), config)
    return windows, recordings, extractor, spectral


@pytest.mark.parametrize(("rhythmic", "learned_cls"), [(False, _DCReader), (True, _Guesser)])
def test_the_fusion_weight_follows_whichever_part_tells_people_apart(rhythmic, learned_cls):
    windows, recordings, extractor, spectral = _people(rhythmic)
    fitted = []

    def fit_learned(subset):
        fitted.append(len(subset))
        return learned_cls(TemporalConfig(n_channels=4, dim=16)).eval(), {"subjects": len(subset)}

    torch.manual_seed(0)
    fused, record = fit_fused(windows, recordings, extractor, spectral, fit_learned, SPEC, splits=2, seed=0)
    grid = {row["fuse"]: row["eer_mean"] for row in record["grid"]}
    chosen = record["chosen"]["fuse"]
    if learned_cls is _DCReader:
        assert grid[1.0] > 0.3 and grid[0.0] < 0.05  # spectral is blind here, the learned part is not
        assert chosen <= 0.5
    else:
        assert grid[1.0] < 0.05 and grid[0.0] > 0.3
        assert chosen >= 0.75
    if chosen == 1.0:  # the learned part would not count: not trained on everyone, not shipped
        assert fused is spectral and fitted == [4, 4] and record["learned"] is None
        return
    assert fitted == [4, 4, 8]  # once per split on its fitting half, then on everyone
    if chosen == 0.0:
        assert type(fused) is learned_cls
    else:
        assert fused.spectral is spectral and fused.config.learned_name == "temporal"


def test_noisy_probes_move_the_weight_to_the_part_that_survives_the_noise():
    """Clean probes carry each person's rhythm, which only spectral features see; under the
    "noise" the rhythm is gone and only an offset, which only the learned part sees, is left."""
    rng = np.random.default_rng(1)
    extractor = SpectralFeatures(SpectralConfig(n_channels=4))
    windows, recordings, noisy = [], [], []
    for k in range(8):
        t = np.arange(30 * 200) / 200.0
        rhythm = 2.0 * np.sin(2 * np.pi * (7 + 1.5 * k) * t)
        enroll = (
            rng.standard_normal((4, 70 * 200))
            + np.sin(2 * np.pi * (7 + 1.5 * k) * np.arange(70 * 200) / 200.0) * 2.0
        )
        enroll[0] += 5.0 * k
        probe = rng.standard_normal((4, len(t))) + rhythm
        offset_only = rng.standard_normal((4, len(t)))
        offset_only[0] += 5.0 * k
        windows.append(window_features(f"S{k}", [enroll, probe], extractor, SPEC))
        recordings.append([enroll, probe])
        noisy.append({"gaussian": offset_only})
    config = SpectralConfig(n_channels=4, pca_dim=16, features=("psd", "bandpower"))
    spectral = fit_spectral_part(windows, group_columns(extractor, config.features), config)

    def fit_learned(subset):
        return _DCReader(TemporalConfig(n_channels=4, dim=16)).eval(), {}

    args = (windows, recordings, extractor, spectral, fit_learned, SPEC)
    clean_only, record = fit_fused(*args, splits=2, seed=0)
    assert clean_only is spectral and record["noise"] == [] and "conditions" not in record
    fused, record = fit_fused(*args, splits=2, seed=0, noisy=noisy)
    best = {c: min(t, key=lambda r: r["eer_mean"])["fuse"] for c, t in record["conditions"].items()}
    assert best["clean"] >= 0.75 and best["gaussian"] <= 0.25, record["conditions"]
    assert record["noise"] == ["gaussian"] and 0.0 < record["chosen"]["fuse"] < 1.0
    assert fused.config.fuse == record["chosen"]["fuse"]
    clean = {r["fuse"]: r["eer_mean"] for r in record["conditions"]["clean"]}
    gaussian = {r["fuse"]: r["eer_mean"] for r in record["conditions"]["gaussian"]}
    for row in record["grid"]:  # every condition counts alike
        assert row["eer_mean"] == pytest.approx((clean[row["fuse"]] + gaussian[row["fuse"]]) / 2)
    with pytest.raises(
        ValueError, match=r"need one entry per training subject \(8\), each with the same noise"
    ):
        fit_fused(*args, splits=2, seed=0, noisy=[{"gaussian": n["gaussian"]} for n in noisy[:-1]] + [{}])


def test_a_weight_of_one_ships_the_spectral_embedder_alone(monkeypatch):
    import neuroauth.training.study.fusion as fusion

    windows, recordings, extractor, spectral = _people(rhythmic=True)
    fitted = []

    def fit_learned(subset):
        fitted.append(len(subset))
        return _Guesser(TemporalConfig(n_channels=4, dim=16)).eval(), {}

    def spectral_wins(grid):
        table, _ = choose_weight(grid)
        return table, next(row for row in table if row["fuse"] == 1.0)

    monkeypatch.setattr(fusion, "choose_weight", spectral_wins)
    chosen, record = fit_fused(windows, recordings, extractor, spectral, fit_learned, SPEC, splits=2, seed=0)
    assert chosen is spectral and record["learned"] is None
    assert fitted == [4, 4]  # on the splits only, never on everyone


def test_ties_go_to_the_higher_spectral_weight():
    _, best = choose_weight({0.5: [0.25, 0.5], 0.9: [0.5, 0.25], 1.0: [0.25, 0.5], 0.0: [0.75, 0.0]})
    assert best["fuse"] == 1.0
    _, best = choose_weight({0.5: [0.25, 0.25], 1.0: [0.0, 0.5]})
    assert best["fuse"] == 0.5  # a lower spread first


def test_half_splits_are_disjoint_and_need_four_subjects():
    for fit, held in half_splits(9, 3, seed=1):
        assert len(fit) == 4 and len(held) == 5 and not set(fit) & set(held)
    with pytest.raises(ValueError, match="at least 4 training subjects"):
        half_splits(3, 2, seed=0)


def test_the_command_line_and_the_training_check_the_fusion_noise():
    from neuroauth.training.noise import NOISE_TYPES
    from neuroauth.training.study.commands import learned_settings
    from neuroauth.training.study.learned_embedders import LearnedTraining, fit_embedder

    from neuroauth.cli import build_parser
    from neuroauth.errors import NeuroAuthError

    def learned(*argv):
        return learned_settings(
            build_parser().parse_args(["embedders", "--data", "d", "--json", "o.json", *argv])
        )

    assert learned().fusion_noise == ()
    assert learned("--fusion-noise", "emg,blink, emg").fusion_noise == ("emg", "blink")
    assert learned("--fusion-noise", "all").fusion_noise == NOISE_TYPES
    with pytest.raises(NeuroAuthError, match=r"--fusion-noise names unknown type\(s\) \['hum'\]"):
        learned("--fusion-noise", "hum")
    with pytest.raises(ValueError, match=r"unknown fusion noise types \['hum'\]"):
        LearnedTraining(fusion_noise=("hum",))
    windows, recordings, extractor, spectral = _people(rhythmic=True)
    training = LearnedTraining(fusion_noise=("emg",))
    for noisy in (None, [{"blink": r[1]} for r in recordings]):
        with pytest.raises(ValueError, match="under emg noise needs the training subjects' probes"):
            fit_embedder(
                "temporal-ssl+spectral",
                spectral,
                windows,
                recordings,
                extractor,
                SPEC,
                training,
                False,
                noisy,
            )


def test_spectral_metric_is_built_on_the_spectral_embedder_it_is_given():
    from neuroauth.training.study.learned_embedders import LearnedTraining, fit_embedder
    from neuroauth.training.study.metric_learning import MetricTraining

    windows, _, extractor, spectral = _people(rhythmic=True)
    training = LearnedTraining(metric=MetricTraining(steps=2, per_batch=4, per_subject=4))
    embedder, record = fit_embedder(
        "spectral-metric", spectral, windows, None, extractor, SPEC, training, False
    )
    assert embedder.spectral is spectral  # not a refit of it
    assert embedder.config.fuse == record["chosen"]["fuse"]
