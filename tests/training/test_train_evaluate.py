from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.denoiser import CausalDenoiser, DenoiserConfig
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.denoiser_training import CropSampler, DenoiserTraining, loss_fn, train_denoiser
from neuroauth.training.evaluate import evaluate

from neuroauth.cli import main


@pytest.mark.slow
def test_short_training_lowers_the_loss(bundled_4ch):
    recs = [d.enroll for d in bundled_4ch[:3]]
    settings = DenoiserTraining(steps=80, batch=16, val_every=40, val_examples=32, lr=3e-3)
    spec = SignalSpec()
    held = CropSampler(recs, spec, settings).sample(64, np.random.default_rng(123))
    noisy, clean = (torch.from_numpy(a) for a in held)
    with torch.no_grad():
        before = loss_fn(CausalDenoiser(DenoiserConfig()), noisy, clean, settings.warmup).item()
    net, record = train_denoiser(
        recs, [bundled_4ch[3].enroll], spec, DenoiserConfig(), settings, seed=0, progress=False
    )
    with torch.no_grad():
        after = loss_fn(net, noisy, clean, settings.warmup).item()
    # an untrained denoiser is the identity; training must beat it on held crops
    assert after < before - 0.1, (before, after)
    assert len(record["history"]) == 2


@pytest.mark.slow
def test_training_resumes_from_its_partial_state(bundled_4ch, tmp_path):
    recs = [d.enroll for d in bundled_4ch[:2]]
    spec, config = SignalSpec(), DenoiserConfig(use_mamba=False)
    full_settings = DenoiserTraining(steps=8, batch=4, val_every=4, val_examples=8)
    straight, straight_record = train_denoiser(
        recs, recs, spec, config, full_settings, seed=3, progress=False
    )
    partial = tmp_path / "run.partial"
    first = DenoiserTraining(steps=8, batch=4, val_every=4, val_examples=8)
    # run 4 steps, as if interrupted, by saving at step 4 and stopping the loop there
    import neuroauth.training.denoiser_training as dt

    class StopError(Exception):
        pass

    original = dt.save_state

    def save_then_stop(path, fingerprint, state):
        original(path, fingerprint, state)
        raise StopError

    dt.save_state = save_then_stop
    try:
        with pytest.raises(StopError):
            train_denoiser(recs, recs, spec, config, first, seed=3, resume_path=partial, progress=False)
    finally:
        dt.save_state = original
    resumed, resumed_record = train_denoiser(
        recs, recs, spec, config, first, seed=3, resume_path=partial, progress=False
    )
    # the validation after the resumed steps matches the uninterrupted run's
    assert len(resumed_record["history"]) == 2
    for a, b in zip(straight_record["history"], resumed_record["history"], strict=True):
        assert a["si_snr_out_db"] == pytest.approx(b["si_snr_out_db"], abs=1e-4)
        assert a["train_si_snr_db"] == pytest.approx(b["train_si_snr_db"], abs=1e-4)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_evaluation_on_bundled_recordings_gives_finite_metrics(tiny_checkpoint, bundled_4ch):
    model = load_checkpoint(tiny_checkpoint)
    report, scores = evaluate(model, bundled_4ch[:4], noise_types=("gaussian", "emg"), progress=False)
    for key in ("window_eer", "auroc", "p_at_1"):
        assert math.isfinite(report[key]) and 0 <= report[key] <= 1
        assert math.isfinite(report["baseline_psd"][key])
    assert report["p_at_5"] is None  # 4 subjects: the top 5 always holds the truth
    assert set(report["eer_at"]) == {"5", "10", "30"}
    assert all(math.isfinite(v) for v in report["eer_at"].values())
    assert set(report["noisy_eer"]) == {"gaussian", "emg"}
    assert math.isfinite(report["si_snr_db"]["gaussian"])
    # noise at 0 dB must hurt the input: SI-SNR of the noisy input is far below clean
    assert report["si_snr_input_db"]["gaussian"] < 10
    assert report["seen_in_training"] == report["subjects"]
    # 4 people x (115 rest windows from 64 s on + 35 arithmetic windows from 24 s on)
    assert [[len(x) for x in person] for person in scores["ours"].per_probe] == [[115, 35]] * 4
    assert set(report["window_eer_by_state"]) == {"rest", "arithmetic"}
    for other in (report["no_denoiser"], report["first_state_enrollment"]["ours"]):
        assert math.isfinite(other["window_eer"]) and set(other["window_eer_by_state"]) == {
            "rest",
            "arithmetic",
        }


@pytest.mark.slow
def test_cli_evaluate_writes_json_and_plots(tiny_checkpoint, bundled_dir, tmp_path, capsys):
    out = tmp_path / "m.json"
    code = main(
        [
            "evaluate",
            "--data",
            str(bundled_dir),
            "--checkpoint",
            str(tiny_checkpoint),
            "--subjects",
            "Subject00,Subject03,Subject06",
            "--noise",
            "pop",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["subjects"] == ["eegmat/Subject00", "eegmat/Subject03", "eegmat/Subject06"]
    assert (tmp_path / "plots" / "roc_det.png").stat().st_size > 1000
    assert "window_eer" in capsys.readouterr().out


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "x.pt does not exist" in capsys.readouterr().err
