"""``neuroauth evaluate``: the verification protocol on people's recordings.

Every person is enrolled and probed by the protocol's cut
(:func:`~neuroauth.training.protocol.state_plans`): a template of one centroid per
state, from each state's enrollment part, scored by the cosine to the nearest state
(the enrollment ``neuroauth enroll`` makes); and, for comparison, a template from
the first 60 s of the first state only. Probes are every window of every state's
probe part; people with one recording are impostors only. Reported for our
pipeline, for the same embedder without the denoiser, and for the PSD baseline;
then, with noise types given, again with each noise type added to the probes,
with and without the denoiser. Noise is added to the raw signal, as a headset
adds it, and scaled so that its SNR is 0 dB at the denoiser's input (after the
band-pass and notch filter, which alone would remove most mains hum and drift).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import auroc, eer, moving_average, precision_at_k
from ..models.checkpoint import NeuroAuthModel
from ..models.denoiser import si_snr
from ..models.embedders.spectral import SpectralConfig, SpectralFeatures
from ..models.preprocess import filter_and_scale
from ..models.quality import QualityGate
from .baseline import BaselinePSD
from .data import Recording, SubjectData
from .noise import add_noise
from .protocol import ENROLL_SECONDS, HOP_SECONDS, denoise, embed, state_plans, windows_of

log = logging.getLogger(__name__)

NOISY_SNR_DB = 0.0
SI_SNR_SKIP_SECONDS = 2.0  # filter and denoiser warm-up at a recording's start
SMOOTHING = (5, 10, 30)
ENROLLMENTS = ("states", "first")  # every state's enrollment part; the first 60 s of the first state


@dataclass
class PersonWindows:
    """One person's windows under the protocol, embedded by one embedding path."""

    subject: str
    states: tuple[str, ...]  # the states of the recordings below
    enroll: dict[str, list[np.ndarray]]  # enrollment -> per state its enrollment embeddings (may be empty)
    probes: list[np.ndarray]  # per state: its probe embeddings, in time order
    probe_ok: list[np.ndarray]  # per state: whether each probe window passed the quality gate

    @property
    def enrolled(self) -> bool:
        return any(len(e) for e in self.enroll["states"])


def _noise_seed(subject: str, kind: str, seed: int, recording: int) -> int:
    return zlib.crc32(f"{subject}/{kind}/{seed}/{recording}".encode())


def with_noise(rec: Recording, kind: str, subject: str, seed: int, recording: int) -> np.ndarray:
    """``rec`` with ``kind`` noise added at the protocol's SNR, preprocessed. The same person, kind,
    seed and recording always give the same noise."""
    spec = rec.spec
    rng = np.random.default_rng(_noise_seed(subject, kind, seed, recording))
    volts, _ = add_noise(
        rec.volts, spec.sfreq, kind, NOISY_SNR_DB, rng, measure=lambda v: filter_and_scale(v, spec)
    )
    return rec.preprocessed(volts)


def noisy_probes(model: NeuroAuthModel, data: Sequence[SubjectData], kinds: Sequence[str]) -> list[dict]:
    """Per person of ``data``: noise type -> their second recording under that noise, denoised by ``model``
    (what the embedder study chooses fusion weights under)."""
    return [
        {kind: denoise(model, with_noise(d.probe, kind, d.subject, 0, 1)) for kind in kinds} for d in data
    ]


def person_windows(
    d: SubjectData,
    signals: Sequence[np.ndarray],
    embedder: Callable[[torch.Tensor], torch.Tensor],
    spec,
    ok: Sequence[np.ndarray] | None = None,
) -> PersonWindows:
    """Embed every window of ``signals`` (``d``'s present recordings, model units, any processing) and cut
    them by the protocol."""
    present = [(s, r) for s, r in zip(d.corpus.states, d.recordings, strict=True) if r is not None]
    enroll_seconds = [s.enroll_seconds for s, _ in present]
    complete = d.complete
    plans = {
        "states": state_plans(enroll_seconds, spec.window_seconds, True),
        "first": state_plans(enroll_seconds, spec.window_seconds, False),
    }
    enroll = {k: [] for k in plans}
    probes, probe_ok = [], []
    for i, x in enumerate(signals):
        e = embed(embedder, windows_of(x, spec.sfreq, spec.window))
        flags = np.ones(len(e), dtype=bool) if ok is None else ok[i]
        for k, p in plans.items():
            enroll[k].append(e[p[i].enroll] if complete else e[:0])
        cut = plans["states"][i].probe if complete else slice(0, None)
        probes.append(e[cut])
        probe_ok.append(flags[cut])
    return PersonWindows(d.subject, tuple(s.name for s, _ in present), enroll, probes, probe_ok)


def quality_flags(d: SubjectData, spec, gate: QualityGate) -> list[np.ndarray]:
    """Per present recording: whether each window passes the quality gate the engine applies."""
    out = []
    for rec in d.present():
        raw = windows_of(rec.volts, spec.sfreq, spec.window)
        filtered = windows_of(rec.preprocessed() * spec.scale_uv, spec.sfreq, spec.window)
        out.append(np.array([not gate.check(r, f) for r, f in zip(raw, filtered, strict=True)], dtype=bool))
    return out


@dataclass
class Scores:
    """Per probe person and state: their probe windows' cosine to every template ``(W, n_templates)``."""

    subjects: list[str]  # the people with a template, in column order
    owners: list[int | None]  # per probe person: their column, None for a person with no template
    per_probe: list[list[np.ndarray]]

    def genuine_impostor(self, k: int = 1, state: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores averaged over ``k`` consecutive windows (within a state), split by genuine/impostor."""
        genuine, impostor = [np.zeros(0)], [np.zeros(0)]
        for owner, states in zip(self.owners, self.per_probe, strict=True):
            for s, scores in enumerate(states):
                if state is not None and s != state:
                    continue
                smoothed = moving_average(scores, k)
                if owner is None:
                    impostor.append(smoothed.ravel())
                else:
                    genuine.append(smoothed[:, owner])
                    impostor.append(np.delete(smoothed, owner, axis=1).ravel())
        return np.concatenate(genuine), np.concatenate(impostor)


def templates_of(people: Sequence[PersonWindows], enrollment: str) -> tuple[list[str], list[np.ndarray]]:
    """The enrolled people and their centroids ``(K, D)``: one per state, or one of the first state."""
    names, centroids = [], []
    for p in people:
        parts = [e for e in p.enroll[enrollment] if len(e)]
        if not parts:
            continue
        rows = [e.mean(axis=0) for e in parts]
        rows = [r / max(float(np.linalg.norm(r)), 1e-12) for r in rows]
        names.append(p.subject)
        centroids.append(np.stack(rows))
    return names, centroids


def protocol_scores(people: Sequence[PersonWindows], enrollment: str = "states") -> Scores:
    names, centroids = templates_of(people, enrollment)
    column = {s: i for i, s in enumerate(names)}
    per_probe = []
    for p in people:
        states = []
        for x in p.probes:
            unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            states.append(
                np.stack([(unit @ c.T).max(axis=1) for c in centroids], axis=1)
                if len(x)
                else np.zeros((0, len(centroids)))
            )
        per_probe.append(states)
    return Scores(names, [column.get(p.subject) for p in people], per_probe)


def verification_metrics(
    scores: Scores, states: Sequence[str] = (), smoothing: Sequence[int] = SMOOTHING
) -> dict:
    """``window_eer`` (every probe window), ``auroc``, ``p_at_1``, ``p_at_5``, ``eer_at`` (k -> EER of
    means of k windows) and, per probe state position, ``window_eer_by_state``."""
    genuine, impostor = scores.genuine_impostor()
    rows = [
        (o, s) for o, per in zip(scores.owners, scores.per_probe, strict=True) for s in per if o is not None
    ]
    all_scores = np.concatenate([s for _, s in rows]) if rows else np.zeros((0, len(scores.subjects)))
    truth = np.concatenate([np.full(len(s), o) for o, s in rows]) if rows else np.zeros(0, dtype=int)
    eer_at = {}
    for k in smoothing:
        g, i = scores.genuine_impostor(k)
        eer_at[str(k)] = eer(g, i) if len(g) and len(i) else None
    by_state = {}
    for s, name in enumerate(states):
        g, i = scores.genuine_impostor(1, s)
        by_state[name] = eer(g, i) if len(g) and len(i) else None
    return {
        "window_eer": eer(genuine, impostor),
        "auroc": auroc(genuine, impostor),
        "p_at_1": precision_at_k(all_scores, truth, 1),
        "p_at_5": precision_at_k(all_scores, truth, 5),
        "eer_at": eer_at,
        "window_eer_by_state": by_state,
        "n_genuine": len(genuine),
        "n_impostor": len(impostor),
    }


def _state_names(data: Sequence[SubjectData]) -> tuple[str, ...]:
    """The state names by position, when every corpus evaluated agrees; positions otherwise."""
    names = {tuple(s.name for s in d.corpus.states) for d in data}
    if len(names) == 1:
        return next(iter(names))
    longest = max(len(n) for n in names)
    return tuple(f"state {i + 1}" for i in range(longest))


def embedded_people(
    model: NeuroAuthModel, data: Sequence[SubjectData], progress: bool = True, gate: bool = False
) -> dict[str, list[PersonWindows]]:
    """Every person's windows under the protocol: ``ours`` (denoised, the checkpoint's embedder),
    ``no_denoiser`` (the same embedder on the filtered signal) and ``baseline_psd``; with ``gate``,
    quality flags of every probe window."""
    spec = model.spec
    baseline = BaselinePSD(
        SpectralFeatures(SpectralConfig.from_dict(model.baseline_config)),
        model.baseline["mean"],
        model.baseline["scale"],
    )
    quality = QualityGate(channel_names=model.montage) if gate else None
    out = {"ours": [], "no_denoiser": [], "baseline_psd": []}
    for d in tqdm(data, desc="evaluate", unit="person", disable=not progress):
        xs = [r.preprocessed() for r in d.present()]
        ok = quality_flags(d, spec, quality) if quality is not None else None
        out["ours"].append(person_windows(d, [denoise(model, x) for x in xs], model.embedder, spec, ok))
        out["no_denoiser"].append(person_windows(d, xs, model.embedder, spec, ok))
        out["baseline_psd"].append(person_windows(d, xs, baseline, spec, ok))
    return out


def evaluate(
    model: NeuroAuthModel,
    data: Sequence[SubjectData],
    noise_types: Sequence[str] = (),
    seed: int = 0,
    progress: bool = True,
    embedded: dict[str, list[PersonWindows]] | None = None,
) -> tuple[dict, dict[str, Scores]]:
    """Metrics (a JSON-ready dict) and the score sets behind them (for plots)."""
    if sum(d.complete for d in data) < 2:
        raise ValueError(
            "evaluation needs at least two people with every recording: one genuine, the others impostors"
        )
    if not model.baseline_config:
        raise ValueError("the checkpoint holds no PSD baseline statistics; retrain it with `neuroauth train`")
    spec = model.spec
    states = _state_names(data)
    embedded = embedded or embedded_people(model, data, progress)
    scores = {name: protocol_scores(people) for name, people in embedded.items()}
    report = verification_metrics(scores["ours"], states)
    report["no_denoiser"] = verification_metrics(scores["no_denoiser"], states)
    report["baseline_psd"] = verification_metrics(scores["baseline_psd"], states)
    report["first_state_enrollment"] = {
        name: verification_metrics(protocol_scores(people, "first"), states)
        for name, people in embedded.items()
    }
    if noise_types:
        noisy = _noisy(model, data, embedded, noise_types, seed, progress)
        report["baseline_psd"]["noisy_eer"] = noisy.pop("baseline_psd_noisy_eer")
        report |= noisy
    subjects = [d.subject for d in data]
    report["subjects"] = subjects
    report["corpora"] = sorted({d.corpus.name for d in data})
    report["seen_in_training"] = sorted(set(subjects) & set(model.meta.get("training_subjects", [])))
    report["checkpoint"] = {
        "identity": model.identity(),
        "embedder": model.embedder_name,
        "montage": list(model.montage),
        "mamba": model.denoiser.config.use_mamba,
    }
    report["protocol"] = {
        "enrollment": "each state's first enroll_seconds (first state only: its first "
        f"{ENROLL_SECONDS:g} s); probes from one window after each state's enrollment part",
        "states": {d.corpus.name: [s.__dict__ for s in d.corpus.states] for d in data},
        "hop_seconds": HOP_SECONDS,
        "window_seconds": spec.window_seconds,
        "noisy_snr_db": NOISY_SNR_DB,
        "noise_seed": seed,
    }
    return report, scores


def _noisy(model, data, embedded, noise_types, seed, progress) -> dict:
    """Per noise type at 0 dB: EER with and without the denoiser, the baseline's, and SI-SNR in and out."""
    spec = model.spec
    baseline = BaselinePSD(
        SpectralFeatures(SpectralConfig.from_dict(model.baseline_config)),
        model.baseline["mean"],
        model.baseline["scale"],
    )
    skip = int(SI_SNR_SKIP_SECONDS * spec.sfreq)
    clean = {p.subject: p for p in embedded["ours"]}
    out = {"si_snr_db": {}, "si_snr_input_db": {}, "noisy_eer": {}}
    base_noisy = {}
    for kind in tqdm(noise_types, desc="noise", disable=not progress):
        ours, raw, base, si_in, si_out = [], [], [], [], []
        for d in data:
            noisy = [
                with_noise(r, kind, d.subject, seed, i) for i, r in enumerate(d.recordings) if r is not None
            ]
            denoised = [denoise(model, x) for x in noisy]
            for x, y, r in zip(noisy, denoised, d.present(), strict=True):
                ref = torch.as_tensor(r.preprocessed()[:, skip:])
                si_in.append(si_snr(torch.as_tensor(x[:, skip:]), ref).mean().item())
                si_out.append(si_snr(torch.as_tensor(y[:, skip:]), ref).mean().item())
            enrolled = clean[d.subject]  # the enrollment stays clean; only the probes are noisy
            for store, signals, embedder in (
                (ours, denoised, model.embedder),
                (raw, noisy, model.embedder),
                (base, noisy, baseline),
            ):
                p = person_windows(d, signals, embedder, spec)
                store.append(p)
            ours[-1].enroll, raw[-1].enroll = enrolled.enroll, enrolled.enroll
            base[-1].enroll = {p.subject: p for p in embedded["baseline_psd"]}[d.subject].enroll
        out["si_snr_db"][kind] = float(np.mean(si_out))
        out["si_snr_input_db"][kind] = float(np.mean(si_in))
        out["noisy_eer"][kind] = {
            "denoised": verification_metrics(protocol_scores(ours), (), ())["window_eer"],
            "without_denoiser": verification_metrics(protocol_scores(raw), (), ())["window_eer"],
        }
        base_noisy[kind] = verification_metrics(protocol_scores(base), (), ())["window_eer"]
    out["baseline_psd_noisy_eer"] = base_noisy
    return out


def write_plots(scores: dict[str, Scores], directory: Path) -> list[Path]:
    """ROC and DET curves and genuine/impostor histograms as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from ..metrics import det_curve

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
