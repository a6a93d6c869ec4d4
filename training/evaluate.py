"""``neuroauth evaluate``: the fixed verification protocol on a data directory.

For every subject: enrol from the first 60 s of its enrolment recording, probe
with every window (1 s hop) of its probe recording. Reported for our pipeline
(denoiser + embedder) and beside it for the PSD baseline; then again with each
noise type added to the probes, with and without the denoiser. Noise is added
to the raw signal, as a headset adds it, and scaled so that its SNR is 0 dB at
the denoiser's input (after the band-pass and notch filter, which alone would
remove most mains hum and drift).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.checkpoint import NeuroAuthModel
from ..models.denoiser import si_snr
from ..models.embedders.spectral import SpectralConfig, SpectralFeatures
from ..models.preprocess import filter_and_scale
from .baseline import BaselinePSD
from .data import SubjectData
from .noise import NOISE_TYPES, add_noise
from .protocol import (
    ENROL_SECONDS,
    HOP_SECONDS,
    Scores,
    denoise,
    embed,
    score,
    verification_metrics,
    windows_of,
)

log = logging.getLogger(__name__)

NOISY_SNR_DB = 0.0
SI_SNR_SKIP_SECONDS = 2.0  # filter and denoiser warm-up at a recording's start


def _seed(subject: str, kind: str, seed: int) -> int:
    return zlib.crc32(f"{subject}/{kind}/{seed}".encode())


def noisy_probe(
    model: NeuroAuthModel, d: SubjectData, kind: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``d``'s probe recording with ``kind`` noise added at the protocol's SNR: preprocessed, and
    denoised by ``model``. The same subject, kind and seed always give the same noise."""
    spec = model.spec

    def at_input(volts):  # the SNR is set where the denoiser sees the signal: after the filter
        return filter_and_scale(volts, spec)

    rng = np.random.default_rng(_seed(d.subject, kind, seed))
    volts, _ = add_noise(d.probe.volts, spec.sfreq, kind, NOISY_SNR_DB, rng, measure=at_input)
    x = d.probe.preprocessed(volts)
    return x, denoise(model, x)


def noisy_probes(model: NeuroAuthModel, data: Sequence[SubjectData], kinds: Sequence[str]) -> list[dict]:
    """Per subject of ``data``: noise type -> its probe under that noise, denoised (:func:`noisy_probe`)."""
    return [{kind: noisy_probe(model, d, kind)[1] for kind in kinds} for d in data]


def evaluate(
    model: NeuroAuthModel,
    data: Sequence[SubjectData],
    noise_types: Sequence[str] = NOISE_TYPES,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict, dict[str, Scores]]:
    """Metrics (a JSON-ready dict) and the score sets behind them (for plots)."""
    if len(data) < 2:
        raise ValueError("evaluation needs at least two subjects: one genuine, the others impostors")
    spec = model.spec
    if not model.baseline_config:
        raise ValueError("the checkpoint holds no PSD baseline statistics; retrain it with `neuroauth train`")
    baseline = BaselinePSD(
        SpectralFeatures(SpectralConfig.from_dict(model.baseline_config)),
        model.baseline["mean"],
        model.baseline["scale"],
    )

    def windows(x, seconds=None):
        return windows_of(x, spec.sfreq, spec.window, seconds)

    ours_enrol, base_enrol, ours_probe, base_probe = [], [], [], []
    noisy = {
        kind: {"denoised": [], "raw": [], "baseline": [], "si_in": [], "si_out": []} for kind in noise_types
    }
    skip = int(SI_SNR_SKIP_SECONDS * spec.sfreq)

    for d in tqdm(data, desc="evaluate", unit="subject", disable=not progress):
        enrol = d.enrol.preprocessed()
        ours_enrol.append(embed(model.embedder, windows(denoise(model, enrol), ENROL_SECONDS)))
        base_enrol.append(embed(baseline, windows(enrol, ENROL_SECONDS)))
        clean = d.probe.preprocessed()
        ours_probe.append(embed(model.embedder, windows(denoise(model, clean))))
        base_probe.append(embed(baseline, windows(clean)))
        for kind in noise_types:
            x, y = noisy_probe(model, d, kind, seed)
            store = noisy[kind]
            store["denoised"].append(embed(model.embedder, windows(y)))
            store["raw"].append(embed(model.embedder, windows(x)))
            store["baseline"].append(embed(baseline, windows(x)))
            ref = torch.as_tensor(clean[:, skip:])
            store["si_in"].append(si_snr(torch.as_tensor(x[:, skip:]), ref).mean().item())
            store["si_out"].append(si_snr(torch.as_tensor(y[:, skip:]), ref).mean().item())

    subjects = [d.subject for d in data]
    ours = score(ours_enrol, ours_probe, subjects)
    base = score(base_enrol, base_probe, subjects)
    report = verification_metrics(ours)
    report["baseline_psd"] = verification_metrics(base)
    report["si_snr_db"] = {k: float(np.mean(v["si_out"])) for k, v in noisy.items()}
    report["si_snr_input_db"] = {k: float(np.mean(v["si_in"])) for k, v in noisy.items()}
    report["noisy_eer"] = {}
    report["baseline_psd"]["noisy_eer"] = {}
    for kind, v in noisy.items():
        report["noisy_eer"][kind] = {
            "denoised": verification_metrics(score(ours_enrol, v["denoised"], subjects), ())["window_eer"],
            "without_denoiser": verification_metrics(score(ours_enrol, v["raw"], subjects), ())["window_eer"],
        }
        report["baseline_psd"]["noisy_eer"][kind] = verification_metrics(
            score(base_enrol, v["baseline"], subjects), ()
        )["window_eer"]
    seen = sorted(set(subjects) & set(model.meta.get("training_subjects", [])))
    report["subjects"] = subjects
    report["seen_in_training"] = seen
    report["checkpoint"] = {
        "identity": model.identity(),
        "embedder": model.embedder_name,
        "montage": list(model.montage),
        "mamba": model.denoiser.config.use_mamba,
    }
    report["protocol"] = {
        "enrol_seconds": ENROL_SECONDS,
        "hop_seconds": HOP_SECONDS,
        "window_seconds": spec.window_seconds,
        "noisy_snr_db": NOISY_SNR_DB,
        "noise_seed": seed,
    }
    return report, {"ours": ours, "baseline_psd": base}


def write_plots(scores: dict[str, Scores], directory: Path) -> list[Path]:
    """ROC and DET curves and genuine/impostor histograms as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from .metrics import det_curve

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    fig, (roc_ax, det_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, s in scores.items():
        genuine, impostor = s.genuine_impostor()
        far, frr, _ = det_curve(genuine, impostor)
        roc_ax.plot(far, 1 - frr, label=name)
        det_ax.plot(
            norm.ppf(np.clip(far, 1e-4, 1 - 1e-4)), norm.ppf(np.clip(frr, 1e-4, 1 - 1e-4)), label=name
        )
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    roc_ax.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC (windows)")
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
    for set_ticks, set_lim in (
        (det_ax.set_xticks, det_ax.set_xlim),
        (det_ax.set_yticks, det_ax.set_ylim),
    ):
        set_ticks(norm.ppf(ticks), [str(t) for t in ticks])
        set_lim(norm.ppf(5e-4), norm.ppf(0.6))
    det_ax.set(xlabel="false accept rate", ylabel="false reject rate", title="DET (windows)")
    for ax in (roc_ax, det_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = directory / "roc_det.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    for name, s in scores.items():
        genuine, impostor = s.genuine_impostor()
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.linspace(min(genuine.min(), impostor.min()), max(genuine.max(), impostor.max()), 50)
        ax.hist(impostor, bins=bins, density=True, alpha=0.6, label=f"impostor ({len(impostor)})")
        ax.hist(genuine, bins=bins, density=True, alpha=0.6, label=f"genuine ({len(genuine)})")
        ax.set(xlabel="cosine score", ylabel="density", title=f"{name}: window scores")
        ax.legend()
        fig.tight_layout()
        path = directory / f"scores_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
